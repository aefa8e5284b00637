package server

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/corral-runtime/corral/cri/idmap"
	"github.com/corral-runtime/corral/cri/spec"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod with a user namespace of its own runs its containers' root as an
// unprivileged host ID. Its files must still appear owned by that root:
// corrald ID-maps the image layers under each container's overlay and the
// container's volumes through the pod's user namespace (held by the pause
// process), and gives the empty writable layer to the container's root,
// so that what the container writes is owned on disk by the IDs it runs
// as on the host.

// usernsOf opens the user namespace of the pod's pause process.
func usernsOf(pausePID uint32) (*os.File, error) {
	if pausePID == 0 {
		return nil, fmt.Errorf("the pod's pause process is not running")
	}
	return os.Open(fmt.Sprintf("/proc/%d/ns/user", pausePID))
}

// mapLayers ID-maps each lower layer at bundle/l/N and returns those paths,
// in order; it gives upper and work (empty, just made) to the container's
// root.
func mapLayers(bundle string, lower []string, upper, work string, u *spec.Userns, ns *os.File) ([]string, error) {
	for _, d := range []string{upper, work} {
		if err := os.Chown(d, int(u.RootUID()), int(u.RootGID())); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(lower))
	for i, l := range lower {
		dst := filepath.Join(bundle, "l", strconv.Itoa(i))
		if err := idmap.Mount(l, dst, ns); err != nil {
			return nil, fmt.Errorf("image layer %d: %w", i, err)
		}
		out = append(out, dst)
	}
	return out, nil
}

// mapVolumes replaces the source of each of the container's CRI mounts in
// its spec with an ID-mapped clone under bundle/v/N.
func mapVolumes(bundle string, sp *specs.Spec, mounts []*runtimeapi.Mount, ns *os.File) error {
	dests := map[string]bool{}
	for _, m := range mounts {
		dests[path.Clean(m.GetContainerPath())] = true
	}
	for i := range sp.Mounts {
		m := &sp.Mounts[i]
		if !dests[m.Destination] || m.Type != "bind" {
			continue
		}
		dst := filepath.Join(bundle, "v", strconv.Itoa(i))
		if err := idmap.Mount(m.Source, dst, ns); err != nil {
			return fmt.Errorf("volume %s: %w", m.Destination, err)
		}
		m.Source = dst
	}
	return nil
}

// unmountUnder unmounts every mount at or below dir, deepest first: a
// container's rootfs and its ID-mapped layers and volumes.
func unmountUnder(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	points := make([]string, 0, len(mounts))
	for _, m := range mounts {
		points = append(points, m.Mountpoint)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	return nil
}

// removeBundle unmounts what is mounted under a container's bundle and
// then removes it. It never removes through a mount: an ID-mapped image
// layer still mounted there would otherwise lose its files.
func removeBundle(dir string) error {
	if err := unmountUnder(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// searchable checks that every directory from / down to dir lets others
// search it: a pod with a user namespace runs as an unprivileged host ID,
// and the runtime reaches the pod's rootfs as that ID. A private parent
// (mktemp -d makes 0700) would fail the pod deep in the runtime with a
// bare "permission denied".
func searchable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is mode %o, and pods with a user namespace of their own need every parent of corrald's root and state searchable by others (chmod o+x %s)", d, fi.Mode().Perm(), d)
		}
		if d == "/" {
			return nil
		}
	}
}

// chownTree gives everything under dir, dir included, to uid:gid, without
// following symbolic links.
func chownTree(dir string, uid, gid uint32) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(uid), int(gid))
	})
}
