package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Paths inside the container that corral fills from the pod's files.
const (
	etcHostname   = "/etc/hostname"
	etcHosts      = "/etc/hosts"
	etcResolvConf = "/etc/resolv.conf"
	devShm        = "/dev/shm"
)

// defaultMounts returns the file systems every Linux container expects,
// containerd's list without the /run tmpfs (which containerd's CRI plugin
// removes too: images own their /run). A new slice each call, so callers
// may change it.
func defaultMounts(writableSys bool) []specs.Mount {
	sys := "ro"
	if writableSys {
		sys = "rw"
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: devShm, Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", sys}},
	}
}

// cgroupMount is /sys/fs/cgroup: read-only unless the container is
// privileged, so that a container cannot change its own limits.
func cgroupMount(writable bool) specs.Mount {
	mode := "ro"
	if writable {
		mode = "rw"
	}
	return specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", mode}}
}

// bind is a bind mount of a file or directory the caller prepared.
func bind(src, dst string, readonly bool) specs.Mount {
	mode := "rw"
	if readonly {
		mode = "ro"
	}
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", mode}}
}

// userMount is a mount corral adds on top of the default ones: a CRI mount
// or one of the pod's files.
type userMount struct {
	m specs.Mount
	// fromCRI marks the client's mounts, which win over the pod's files.
	fromCRI bool
}

// criMounts validates and converts the CRI mounts of a container. It also
// returns the root's propagation the mounts need: a mount only propagates
// through a root that does too.
func criMounts(cfg *runtimeapi.ContainerConfig, host Host, imageVolumes map[int]string, userns *Userns) ([]userMount, string, error) {
	var (
		out         []userMount
		seen        = map[string]int{}
		propagation string
	)
	for i, m := range cfg.GetMounts() {
		field := fmt.Sprintf("mounts[%d]", i)
		if m == nil {
			return nil, "", invalidf(field, "empty mount")
		}
		dst, err := containerPath(field+".container_path", m.GetContainerPath())
		if err != nil {
			return nil, "", err
		}
		if j, dup := seen[dst]; dup {
			return nil, "", invalidf(field+".container_path", "%q is also the path of mounts[%d]", dst, j)
		}
		seen[dst] = i
		if m.GetImage() != nil {
			src, ok := imageVolumes[i]
			if !ok {
				return nil, "", unimplementedf(field+".image", "the image is not mounted")
			}
			if !m.GetReadonly() {
				return nil, "", invalidf(field+".readonly", "image volumes are read-only: set readonly")
			}
			// Private: nothing the container mounts below it may reach the
			// node, and the image never changes to propagate anything.
			out = append(out, userMount{m: bind(src, dst, true), fromCRI: true})
			continue
		}
		if m.GetImageSubPath() != "" {
			return nil, "", invalidf(field+".image_sub_path", "set without image")
		}
		if len(m.GetUidMappings()) > 0 || len(m.GetGidMappings()) > 0 {
			// corral ID-maps every mount of a pod with a user namespace
			// by the pod's mapping, the one the kubelet sends here.
			if userns == nil {
				return nil, "", invalidf(field+".uidMappings", "ID mappings given, but the pod has no user namespace of its own")
			}
			u, err1 := idMapping(field+".uidMappings", m.GetUidMappings())
			g, err2 := idMapping(field+".gidMappings", m.GetGidMappings())
			if err := errors.Join(err1, err2); err != nil {
				return nil, "", err
			}
			if (Userns{UID: u, GID: g}) != *userns {
				return nil, "", unimplementedf(field+".uidMappings", "an ID mapping other than the pod's; corral maps a mount as the pod's user namespace does")
			}
		}
		if userns != nil && m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			// The ID-mapped copy of a mount is a mount of its own, through
			// which nothing propagates.
			return nil, "", invalidf(field+".propagation", "%s with a user namespace of the pod's own; only PROPAGATION_PRIVATE", m.GetPropagation())
		}
		src, err := hostPath(field+".host_path", m.GetHostPath())
		if err != nil {
			return nil, "", err
		}
		info, err := host.MountSource(src)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, "", invalidf(field+".host_path", "%q does not exist on the node", src)
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s.host_path %q: %w", field, src, err)
		}
		if info.Path != "" {
			src = info.Path
		}

		opts := []string{"rbind"}
		switch p := m.GetPropagation(); p {
		case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			opts = append(opts, "rprivate")
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			if !info.Shared && !info.Slave {
				return nil, "", preconditionf(field+".propagation", "HOST_TO_CONTAINER needs %q to be on a shared or slave mount of the node, and it is on a private one", src)
			}
			opts = append(opts, "rslave")
			if propagation != "rshared" {
				propagation = "rslave"
			}
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			if !info.Shared {
				return nil, "", preconditionf(field+".propagation", "BIDIRECTIONAL needs %q to be on a shared mount of the node (mount --make-rshared)", src)
			}
			opts = append(opts, "rshared")
			propagation = "rshared"
		default:
			return nil, "", invalidf(field+".propagation", "unknown propagation %s", p)
		}

		switch {
		case m.GetRecursiveReadOnly() && !m.GetReadonly():
			return nil, "", invalidf(field+".recursive_read_only", "set on a mount that is not readonly")
		case m.GetRecursiveReadOnly() && m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			return nil, "", invalidf(field+".recursive_read_only", "needs PROPAGATION_PRIVATE, got %s", m.GetPropagation())
		case m.GetRecursiveReadOnly():
			opts = append(opts, "rro")
		case m.GetReadonly():
			opts = append(opts, "ro")
		default:
			opts = append(opts, "rw")
		}

		for j, o := range m.GetMountOptions() {
			// The CRI allows these three; anything else could undo what
			// the fields above decided.
			switch o {
			case "noexec", "nodev", "nosuid":
				if !slices.Contains(opts, o) {
					opts = append(opts, o)
				}
			default:
				return nil, "", invalidf(fmt.Sprintf("%s.mount_options[%d]", field, j), "%q is not one of noexec, nodev, nosuid", o)
			}
		}
		// selinux_relabel is ignored: corral's nodes run without SELinux.
		out = append(out, userMount{
			m:       specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts},
			fromCRI: true,
		})
	}
	return out, propagation, nil
}

// assembleMounts merges the default mounts with the user mounts, as
// containerd does: a user mount replaces a default one at the same path,
// a user /dev replaces every default mount below /dev, and the user mounts
// are ordered by depth so that a parent is always mounted before (and so
// never over) its children. A pod file is skipped where the client mounts
// its own.
func assembleMounts(defaults []specs.Mount, user []userMount) []specs.Mount {
	cri := map[string]bool{}
	for _, u := range user {
		if u.fromCRI {
			cri[u.m.Destination] = true
		}
	}
	var ordered []specs.Mount
	taken := map[string]bool{}
	for _, u := range user {
		if !u.fromCRI && cri[u.m.Destination] {
			continue
		}
		ordered = append(ordered, u.m)
		taken[u.m.Destination] = true
	}
	sort.SliceStable(ordered, func(i, j int) bool {
		return depth(ordered[i].Destination) < depth(ordered[j].Destination)
	})

	out := make([]specs.Mount, 0, len(defaults)+len(ordered))
	for _, d := range defaults {
		if taken[d.Destination] || (taken["/dev"] && strings.HasPrefix(d.Destination, "/dev/")) {
			continue
		}
		out = append(out, d)
	}
	return append(out, ordered...)
}

func depth(p string) int {
	return strings.Count(p, "/")
}

// podFiles returns the bind mounts of the pod's shared files that exist
// (a path of "" is skipped).
func podFiles(hostname, hosts, resolvConf string, readonly bool) []userMount {
	var out []userMount
	for _, f := range []struct{ src, dst string }{
		{hostname, etcHostname},
		{hosts, etcHosts},
		{resolvConf, etcResolvConf},
	} {
		if f.src != "" {
			out = append(out, userMount{m: bind(f.src, f.dst, readonly)})
		}
	}
	return out
}
