// Package imagevolume mounts OCI images as read-only volumes: the CRI mounts
// that name an image instead of a host path (Kubernetes' image volumes,
// KEP-4639).
//
// The image's unpacked snapshots (cri/snapshot) are stacked as the lowerdirs
// of an overlay with no upperdir, which the kernel makes read-only by
// construction; a one-layer image is bind mounted and remounted read-only
// instead, since overlayfs wants two lowerdirs without an upperdir. The
// mount is made by corrald in the host's mount namespace under the
// container's bundle (BUNDLE/volumes/N/image), and the container gets a
// read-only bind of it, or of the sub path the CRI mount names:
//
//	BUNDLE/volumes/<index of the CRI mount>/image   the image, read-only
//
// A sub path is resolved inside the mounted image as if the image were "/"
// (openat2 with RESOLVE_IN_ROOT), so a symlink in the image cannot point the
// bind at the node's files; the image cannot change under it, so the
// resolved path stays valid for the container's life.
//
// The container's record names each volume's image and top snapshot (see
// Record), which keeps the snapshots from garbage collection while the
// container exists, and lets ContainerStatus report the image.
package imagevolume

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/snapshot"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Volume is one image mount of a container.
type Volume struct {
	// Index is the mount's index in the CRI ContainerConfig's mounts.
	Index int `json:"index"`
	// ImageID is the image's ID (what PullImage answered), reported as the
	// mount's image_ref.
	ImageID string `json:"image_id"`
	// Snapshot is the chain ID of the image's top layer.
	Snapshot string `json:"snapshot"`
	// SubPath is the CRI mount's image_sub_path, "" for the whole image.
	SubPath string `json:"sub_path,omitempty"`
}

// Requests returns the image mounts of cfg with their index, after checking
// what can be checked without the image: a read-only mount, and a sub path
// that is relative, clean and stays inside the image.
func Requests(cfg *runtimeapi.ContainerConfig) (map[int]*runtimeapi.Mount, error) {
	var out map[int]*runtimeapi.Mount
	for i, m := range cfg.GetMounts() {
		if m.GetImage() == nil {
			continue
		}
		field := fmt.Sprintf("mounts[%d]", i)
		if m.GetImage().GetImage() == "" {
			return nil, fmt.Errorf("%s.image.image is empty: name the image to mount: %w", field, errdefs.ErrInvalidArgument)
		}
		if m.GetHostPath() != "" {
			return nil, fmt.Errorf("%s: host_path %q and image %q are both set; a mount is one or the other: %w",
				field, m.GetHostPath(), m.GetImage().GetImage(), errdefs.ErrInvalidArgument)
		}
		if !m.GetReadonly() {
			return nil, fmt.Errorf("%s: image volumes are read-only: set readonly: %w", field, errdefs.ErrInvalidArgument)
		}
		if err := checkSubPath(m.GetImageSubPath()); err != nil {
			return nil, fmt.Errorf("%s.image_sub_path: %w", field, err)
		}
		if out == nil {
			out = map[int]*runtimeapi.Mount{}
		}
		out[i] = m
	}
	return out, nil
}

func checkSubPath(p string) error {
	if p == "" {
		return nil
	}
	if filepath.IsAbs(p) || filepath.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("%q must be a clean relative path inside the image: %w", p, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Dir is where a container's image volumes are mounted: BUNDLE/volumes.
func Dir(bundle string) string { return filepath.Join(bundle, "volumes") }

// Mount mounts the image whose layers are lower (top first, as
// snapshot.Store.LowerDirs gives them) read-only at dir/INDEX/image and
// returns the host path the container's bind mount takes: that directory,
// or the sub path resolved inside it. On error nothing stays mounted.
func Mount(dir string, v Volume, lower []string) (string, error) {
	if len(lower) == 0 {
		return "", fmt.Errorf("image %s has no layers: %w", v.ImageID, errdefs.ErrFailedPrecondition)
	}
	target := filepath.Join(dir, strconv.Itoa(v.Index), "image")
	if err := os.MkdirAll(target, 0o700); err != nil {
		return "", err
	}
	if err := mountLayers(target, lower); err != nil {
		return "", fmt.Errorf("mount image %s: %w", v.ImageID, err)
	}
	if v.SubPath == "" {
		return target, nil
	}
	src, err := resolve(target, v.SubPath)
	if err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		return "", fmt.Errorf("image_sub_path %q of image %s: %w", v.SubPath, v.ImageID, err)
	}
	return src, nil
}

func mountLayers(target string, lower []string) error {
	if len(lower) == 1 {
		if err := unix.Mount(lower[0], target, "", unix.MS_BIND, ""); err != nil {
			return err
		}
		// MS_RDONLY is ignored on the first bind; only a remount sets it.
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return err
		}
		return nil
	}
	opts, err := snapshot.OverlayOptions(lower, "", "")
	if err != nil {
		return err
	}
	return unix.Mount("overlay", target, "overlay", unix.MS_RDONLY, opts)
}

// resolve opens sub inside root as if root were "/" and returns the real
// path it names, which is inside root.
func resolve(root, sub string) (string, error) {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(rootFD)
	fd, err := unix.Openat2(rootFD, sub, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return "", fmt.Errorf("not in the image: %w", errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	if real != root && !strings.HasPrefix(real, root+"/") {
		// RESOLVE_IN_ROOT makes this impossible; refuse rather than trust.
		return "", fmt.Errorf("resolves to %q, outside the image: %w", real, errdefs.ErrInvalidArgument)
	}
	return real, nil
}

// Unmount unmounts every image volume under dir and removes dir. It is
// idempotent, and it removes nothing while a volume stays mounted, so a
// failure never deletes inside an image.
func Unmount(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		target := filepath.Join(dir, e.Name(), "image")
		err := unix.Unmount(target, unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount image volume %s: %w", target, err)
		}
	}
	return os.RemoveAll(dir)
}

// extraKey is the container record's Extra key holding its volumes (JSON).
const extraKey = "image_volumes"

// Record stores vols in a container record's Extra map.
func Record(extra map[string]string, vols []Volume) error {
	if len(vols) == 0 {
		return nil
	}
	b, err := json.Marshal(vols)
	if err != nil {
		return err
	}
	extra[extraKey] = string(b)
	return nil
}

// FromRecord reads the volumes Record stored; a record without any (or
// with a value it cannot read) has none.
func FromRecord(extra map[string]string) []Volume {
	s := extra[extraKey]
	if s == "" {
		return nil
	}
	var vols []Volume
	if json.Unmarshal([]byte(s), &vols) != nil {
		return nil
	}
	return vols
}

// Snapshots lists the snapshots a container record's volumes stand on,
// which image garbage collection must keep.
func Snapshots(extra map[string]string) []string {
	var out []string
	for _, v := range FromRecord(extra) {
		if v.Snapshot != "" {
			out = append(out, v.Snapshot)
		}
	}
	return out
}

// Status returns the CRI mounts of a container as ContainerStatus reports
// them: image mounts carry the image's ID as image_ref.
func Status(mounts []*runtimeapi.Mount, extra map[string]string) []*runtimeapi.Mount {
	vols := FromRecord(extra)
	if len(vols) == 0 {
		return mounts
	}
	out := make([]*runtimeapi.Mount, len(mounts))
	copy(out, mounts)
	for _, v := range vols {
		if v.Index < 0 || v.Index >= len(out) || out[v.Index].GetImage() == nil {
			continue
		}
		m := proto.Clone(out[v.Index]).(*runtimeapi.Mount)
		m.Image.ImageRef = v.ImageID
		out[v.Index] = m
	}
	return out
}
