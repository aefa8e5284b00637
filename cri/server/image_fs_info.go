package server

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageFsInfo reports what the kubelet's image garbage collection and
// disk-pressure eviction work from: the space and inodes images take (blobs
// and unpacked layers) and the space and inodes the containers' writable
// layers take, each with the directory whose filesystem holds them. The
// kubelet reads that filesystem's capacity and free space itself (through
// cadvisor) from the mountpoint, and treats image and container
// filesystems as separate ("split") only when the mountpoints differ; so
// both name ROOT while they are on one filesystem, as CRI-O does.
func (s *Server) ImageFsInfo(ctx context.Context, r *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	if s.images == nil {
		return nil, errNoImages
	}
	now := time.Now().UnixNano()
	bytes, inodes, err := s.images.Usage()
	if err != nil {
		return nil, err
	}
	imageDir := s.images.Root()
	resp := &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{{
		Timestamp:  now,
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: imageDir},
		UsedBytes:  &runtimeapi.UInt64Value{Value: uint64(bytes)},
		InodesUsed: &runtimeapi.UInt64Value{Value: uint64(inodes)},
	}}}
	if s.paths.root == "" {
		return resp, nil
	}
	// Writable layers: ROOT/containers/ID/{upper,work}, read now, as they
	// change while containers run.
	dir := filepath.Join(s.paths.root, "containers")
	cbytes, cinodes := diskUsage(dir)
	mount := dir
	if sameFilesystem(dir, imageDir) {
		mount = imageDir
	}
	resp.ContainerFilesystems = []*runtimeapi.FilesystemUsage{{
		Timestamp:  now,
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: mount},
		UsedBytes:  &runtimeapi.UInt64Value{Value: cbytes},
		InodesUsed: &runtimeapi.UInt64Value{Value: cinodes},
	}}
	return resp, nil
}

// sameFilesystem tells whether a and b are on one filesystem; a path that
// does not exist yet will be made on its parent's.
func sameFilesystem(a, b string) bool {
	dev := func(p string) (uint64, bool) {
		for {
			var st unix.Stat_t
			err := unix.Stat(p, &st)
			if err == nil {
				return st.Dev, true
			}
			if !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
				return 0, false
			}
			p = filepath.Dir(p)
		}
	}
	da, ok1 := dev(a)
	db, ok2 := dev(b)
	return ok1 && ok2 && da == db
}
