// Package network attaches pods to the node's pod network through CNI
// (libcni), the way the kubelet's runtimes (containerd, CRI-O) do: the
// first network configuration in the CNI config dir, in lexical order of
// file names (*.conflist, or a single-plugin *.conf / *.json wrapped into a
// list). The pod's loopback is up already (cri/netns brings it up), so the
// loopback plugin, which would only do that, is not run.
//
// # Configuration
//
// The config dir is read lazily and again whenever the names, sizes or
// modification times of its config files change, so a config written after
// corrald started (by a network add-on's DaemonSet, typically) is picked up
// without a restart, and Ready reports what is missing meanwhile. A broken
// first file is an error, not skipped: the kubelet would otherwise run pods
// on a network nobody chose.
//
// # Teardown
//
// libcni caches, under the cache dir, the configuration and result of every
// ADD. Teardown runs DEL from that cache, so a pod is torn down with the
// network it was set up on even after the config dir changed, and the
// plugins get the result they returned (host-local releases that IP,
// portmap removes those rules). Without a cache entry (a pod never set up,
// or an ADD cut short by a crash before libcni wrote it) Teardown runs DEL
// with the current config, which plugins must accept for containers they
// do not know. Once DEL succeeds the cache entry is gone, so Teardown is
// idempotent; a namespace that is already gone is passed as none, as the
// CNI spec allows for DEL.
//
// The package records nothing of its own: which pods are set up is the
// caller's, and libcni's cache is the only state.
package network
