// Package image is corrald's image store: it pulls images from registries
// (through go-containerregistry, with hosts from package registry), keeps
// their blobs content-addressed under ROOT/content, unpacks their layers once
// into snapshots (package snapshot) and keeps one record per image in the
// metadata store. It answers what the CRI ImageService asks: pull, status,
// list, remove, filesystem usage. It also imports images from archives and
// exports them to archives (docker-archive, as `docker save` writes, and
// OCI layouts in a tar, as skopeo's oci-archive), for nodes no registry
// reaches: an archive is read in one pass into spool files, every blob's
// digest and size checked, then stored and unpacked as a pulled image is.
//
// Concurrent pulls of one reference share one pull, and pulls of images that
// share layers download each layer once; a pull ends when its last waiter
// gives up. Garbage collection removes the blobs and snapshots that no image
// record, no container and no pull in progress refers to.
package image
