package spec

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestMountsDefaultsAndPodFiles(t *testing.T) {
	s, err := Container(ctrConfig(), podConfig(), nil, ctrOpts(newFakeHost()))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm"}
	if got := destinations(s); !slices.Equal(got, want) {
		t.Errorf("mounts = %q\nwant     %q", got, want)
	}
	if m, _ := mountAt(t, s, "/sys"); !slices.Contains(m.Options, "ro") {
		t.Errorf("/sys options %q, want ro", m.Options)
	}
	if m, _ := mountAt(t, s, "/sys/fs/cgroup"); m.Type != "cgroup" || !slices.Contains(m.Options, "ro") {
		t.Errorf("/sys/fs/cgroup = %+v, want a read-only cgroup mount", m)
	}
	if m, _ := mountAt(t, s, "/dev/shm"); m.Source != "/run/corral/s1/shm" || m.Type != "bind" || !slices.Contains(m.Options, "rw") {
		t.Errorf("/dev/shm = %+v, want the pod's shm, writable", m)
	}
	if m, _ := mountAt(t, s, "/etc/hosts"); m.Source != "/var/lib/corral/s1/hosts" || !slices.Equal(m.Options, []string{"rbind", "rprivate", "rw"}) {
		t.Errorf("/etc/hosts = %+v", m)
	}

	// A read-only root makes the pod's files read-only too, as containerd does.
	c := ctrConfig()
	c.Linux.SecurityContext.ReadonlyRootfs = true
	s, err = Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := mountAt(t, s, "/etc/resolv.conf"); !slices.Contains(m.Options, "ro") {
		t.Errorf("/etc/resolv.conf options %q with a read-only root", m.Options)
	}
	if !s.Root.Readonly {
		t.Error("root is writable")
	}
}

func TestMountsShm(t *testing.T) {
	for _, tc := range []struct {
		name              string
		hostIPC           bool
		shmPath           string
		wantType, wantSrc string
	}{
		{name: "pod shm", shmPath: "/run/shm/p", wantType: "bind", wantSrc: "/run/shm/p"},
		{name: "host ipc gets the node's /dev/shm", hostIPC: true, shmPath: "/run/shm/p", wantType: "bind", wantSrc: "/dev/shm"},
		{name: "no pod shm: a private tmpfs", wantType: "tmpfs", wantSrc: "shm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := podConfig()
			if tc.hostIPC {
				p.Linux.SecurityContext.NamespaceOptions.Ipc = node
			}
			opts := ctrOpts(newFakeHost())
			opts.ShmPath = tc.shmPath
			s, err := Container(ctrConfig(), p, nil, opts)
			if err != nil {
				t.Fatal(err)
			}
			m, _ := mountAt(t, s, "/dev/shm")
			if m.Type != tc.wantType || m.Source != tc.wantSrc {
				t.Errorf("/dev/shm = %+v, want %s from %s", m, tc.wantType, tc.wantSrc)
			}
		})
	}
}

func TestCRIMounts(t *testing.T) {
	mnt := func(dst, src string, prop runtimeapi.MountPropagation, ro bool) *runtimeapi.Mount {
		return &runtimeapi.Mount{ContainerPath: dst, HostPath: src, Propagation: prop, Readonly: ro}
	}
	const (
		private = runtimeapi.MountPropagation_PROPAGATION_PRIVATE
		h2c     = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
		bidi    = runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL
	)

	t.Run("ordering, options and propagation", func(t *testing.T) {
		c := ctrConfig()
		c.Mounts = []*runtimeapi.Mount{
			mnt("/a/b/c", "/private", private, true),
			mnt("/etc/hosts", "/etc/config", private, false), // replaces the pod's file
			mnt("/a", "/slave", h2c, false),
			mnt("/a/b", "/data", bidi, false),
			mnt("/z/", "/link", private, false), // cleaned; the symlink is resolved
		}
		s, err := Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
		if err != nil {
			t.Fatal(err)
		}
		// Parents before children; same depth keeps the CRI order, then
		// the pod's files.
		want := []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/a", "/z", "/etc/hosts", "/a/b", "/etc/hostname", "/etc/resolv.conf", "/dev/shm", "/a/b/c"}
		if got := destinations(s); !slices.Equal(got, want) {
			t.Errorf("mounts = %q\nwant     %q", got, want)
		}
		for dst, opts := range map[string][]string{
			"/a/b/c":     {"rbind", "rprivate", "ro"},
			"/a":         {"rbind", "rslave", "rw"},
			"/a/b":       {"rbind", "rshared", "rw"},
			"/etc/hosts": {"rbind", "rprivate", "rw"},
		} {
			if m, _ := mountAt(t, s, dst); !slices.Equal(m.Options, opts) || m.Type != "bind" {
				t.Errorf("%s: %s %q, want bind %q", dst, m.Type, m.Options, opts)
			}
		}
		if m, _ := mountAt(t, s, "/etc/hosts"); m.Source != "/etc/config" {
			t.Errorf("/etc/hosts source %q: the CRI mount must win over the pod's file", m.Source)
		}
		if m, _ := mountAt(t, s, "/z"); m.Source != "/data/target" {
			t.Errorf("/z source %q, want the resolved path", m.Source)
		}
		if s.Linux.RootfsPropagation != "rshared" {
			t.Errorf("rootfs propagation %q, want rshared", s.Linux.RootfsPropagation)
		}
	})

	t.Run("host-to-container alone makes the root rslave", func(t *testing.T) {
		c := ctrConfig()
		c.Mounts = []*runtimeapi.Mount{mnt("/a", "/data", h2c, false)}
		s, err := Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
		if err != nil {
			t.Fatal(err)
		}
		if s.Linux.RootfsPropagation != "rslave" {
			t.Errorf("rootfs propagation %q, want rslave", s.Linux.RootfsPropagation)
		}
	})

	t.Run("a /dev mount replaces every default below /dev", func(t *testing.T) {
		c := ctrConfig()
		c.Mounts = []*runtimeapi.Mount{mnt("/dev", "/data", private, false)}
		opts := ctrOpts(newFakeHost())
		opts.ShmPath = ""
		s, err := Container(c, podConfig(), nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range destinations(s) {
			if strings.HasPrefix(d, "/dev/") {
				t.Errorf("default mount %s kept under a CRI /dev", d)
			}
		}
	})

	t.Run("recursive read-only and mount options", func(t *testing.T) {
		c := ctrConfig()
		c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/r", HostPath: "/data", Readonly: true, RecursiveReadOnly: true, MountOptions: []string{"noexec", "nosuid", "noexec"}}}
		s, err := Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
		if err != nil {
			t.Fatal(err)
		}
		if m, _ := mountAt(t, s, "/r"); !slices.Equal(m.Options, []string{"rbind", "rprivate", "rro", "noexec", "nosuid"}) {
			t.Errorf("options %q", m.Options)
		}
	})

	for _, tc := range []struct {
		name    string
		m       *runtimeapi.Mount
		m2      *runtimeapi.Mount
		is      func(error) bool
		wantErr string
	}{
		{name: "missing host path", m: mnt("/x", "/nonexistent", private, false), is: errdefs.IsInvalidArgument, wantErr: `mounts[0].host_path: "/nonexistent" does not exist`},
		{name: "relative container path", m: mnt("x", "/data", private, false), is: errdefs.IsInvalidArgument, wantErr: "mounts[0].container_path"},
		{name: "container path with ..", m: mnt("/x/../../etc", "/data", private, false), is: errdefs.IsInvalidArgument, wantErr: `".."`},
		{name: "container root", m: mnt("//", "/data", private, false), is: errdefs.IsInvalidArgument, wantErr: "root"},
		{name: "empty container path", m: mnt("", "/data", private, false), is: errdefs.IsInvalidArgument, wantErr: "container_path"},
		{name: "relative host path", m: mnt("/x", "data", private, false), is: errdefs.IsInvalidArgument, wantErr: "host_path"},
		{name: "host path with ..", m: mnt("/x", "/data/../etc", private, false), is: errdefs.IsInvalidArgument, wantErr: "host_path"},
		{name: "duplicate", m: mnt("/x", "/data", private, false), m2: mnt("/x/", "/private", private, false), is: errdefs.IsInvalidArgument, wantErr: "mounts[0]"},
		{name: "unknown propagation", m: mnt("/x", "/data", 7, false), is: errdefs.IsInvalidArgument, wantErr: "propagation"},
		{name: "bidirectional from a private mount", m: mnt("/x", "/private", bidi, false), is: errdefs.IsFailedPrecondition, wantErr: "shared"},
		{name: "bidirectional from a slave mount", m: mnt("/x", "/slave", bidi, false), is: errdefs.IsFailedPrecondition, wantErr: "shared"},
		{name: "host-to-container from a private mount", m: mnt("/x", "/private", h2c, false), is: errdefs.IsFailedPrecondition, wantErr: "slave"},
		{name: "rro without ro", m: &runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", RecursiveReadOnly: true}, is: errdefs.IsInvalidArgument, wantErr: "recursive_read_only"},
		{name: "rro with propagation", m: &runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", Readonly: true, RecursiveReadOnly: true, Propagation: h2c}, is: errdefs.IsInvalidArgument, wantErr: "PRIVATE"},
		{name: "bad mount option", m: &runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", MountOptions: []string{"suid"}}, is: errdefs.IsInvalidArgument, wantErr: "mount_options[0]"},
		{name: "image volume not mounted", m: &runtimeapi.Mount{ContainerPath: "/x", Image: &runtimeapi.ImageSpec{Image: "busybox"}, Readonly: true}, is: errdefs.IsNotImplemented, wantErr: "mounts[0].image"},
		{name: "image sub path alone", m: &runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", ImageSubPath: "a"}, is: errdefs.IsInvalidArgument, wantErr: "image_sub_path"},
		{name: "ID-mapped without a pod user namespace", m: &runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", UidMappings: []*runtimeapi.IDMapping{{Length: 1}}}, is: errdefs.IsInvalidArgument, wantErr: "no user namespace"},
		{name: "nil mount", m: nil, is: errdefs.IsInvalidArgument, wantErr: "mounts[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ctrConfig()
			c.Mounts = []*runtimeapi.Mount{tc.m}
			if tc.m2 != nil {
				c.Mounts = append(c.Mounts, tc.m2)
			}
			_, err := Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
			wantErr(t, err, tc.is, tc.wantErr)
		})
	}
}

func TestImageVolumeMounts(t *testing.T) {
	img := &runtimeapi.ImageSpec{Image: "sha256:1"}
	c := ctrConfig()
	c.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/data", HostPath: "/data"},
		{ContainerPath: "/img", Image: img, Readonly: true},
	}
	opts := ctrOpts(newFakeHost())
	opts.ImageVolumes = map[int]string{1: "/run/corral/containers/c1/volumes/1/image/etc"}
	s, err := Container(c, podConfig(), nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := mountAt(t, s, "/img")
	if m.Source != opts.ImageVolumes[1] || m.Type != "bind" || !slices.Equal(m.Options, []string{"rbind", "rprivate", "ro"}) {
		t.Errorf("image volume = %+v, want a private read-only bind of %s", m, opts.ImageVolumes[1])
	}

	c.Mounts[1].Readonly = false
	_, err = Container(c, podConfig(), nil, opts)
	wantErr(t, err, errdefs.IsInvalidArgument, "mounts[1].readonly")
}

func TestSandboxMounts(t *testing.T) {
	opts := sandboxOpts(newFakeHost())
	opts.HostsPath = "/var/lib/corral/s1/hosts"
	s, err := Sandbox(podConfig(), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/dev/shm", "/etc/hosts", "/etc/resolv.conf"}
	if got := destinations(s); !slices.Equal(got, want) {
		t.Errorf("mounts = %q\nwant     %q", got, want)
	}
	for _, m := range s.Mounts[5:] {
		if m.Type != "bind" || !slices.Contains(m.Options, "ro") {
			t.Errorf("%s = %+v, want a read-only bind", m.Destination, m)
		}
	}

	// Host IPC: the node's /dev/shm, whatever ShmPath says.
	p := podConfig()
	p.Linux.SecurityContext.NamespaceOptions.Ipc = node
	s, err = Sandbox(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := mountAt(t, s, "/dev/shm"); m.Source != "/dev/shm" {
		t.Errorf("/dev/shm from %q with host IPC", m.Source)
	}
}
