// Package cgroup is corrald's side of the pods' cgroups: where a pod's
// cgroup is under each cgroup driver, whether the node can use a driver,
// the usage of a pod's cgroup (read through github.com/containerd/cgroups/v3
// from the v1 hierarchies or the v2 tree), one conversion of that usage and
// of the shims' statistics into the numbers the CRI reports, and removing
// the pod cgroups corrald chose itself.
//
// # Who makes what
//
// The OCI runtime creates every container's cgroup, and with it the missing
// parents (runc's cgroupfs driver creates PARENT/ID with its parents; its
// systemd driver asks systemd for a scope in a slice, which systemd creates
// on demand). corrald never writes a limit into a cgroup itself: it reads
// them, and removes the pod cgroup it chose when the kubelet named none,
// since nobody else would. A pod cgroup the kubelet named (linux.cgroup_parent)
// belongs to the kubelet and is never removed here.
//
// # Drivers
//
//   - cgroupfs: a pod's cgroup is linux.cgroup_parent, an absolute path such
//     as /kubepods/burstable/pod<uid>, or /corral/<pod id> when it names
//     none; a container's is POD/<container id>.
//   - systemd: a pod's cgroup is the slice linux.cgroup_parent ends in, such
//     as kubepods-burstable-pod<uid>.slice, or corral-<pod id>.slice; a
//     container's is the scope corral-<container id>.scope in it, which the
//     runtime's systemd driver creates ("SLICE:corral:ID"). It needs systemd
//     as the node's init: CheckDriver says so when it is not.
package cgroup
