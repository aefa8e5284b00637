package spec

import (
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	pod       = runtimeapi.NamespaceMode_POD
	container = runtimeapi.NamespaceMode_CONTAINER
	node      = runtimeapi.NamespaceMode_NODE
	target    = runtimeapi.NamespaceMode_TARGET
)

func TestSandboxNamespaces(t *testing.T) {
	for _, tc := range []struct {
		name          string
		net, ipc, pid runtimeapi.NamespaceMode
		netns         string
		want          string
		wantHostname  string
	}{
		{name: "all pod", net: pod, ipc: pod, pid: pod, netns: "/run/netns/p", want: "mount network=/run/netns/p uts ipc pid", wantHostname: "web-0"},
		{name: "per-container pid still isolates pause", net: pod, ipc: pod, pid: container, netns: "/run/netns/p", want: "mount network=/run/netns/p uts ipc pid", wantHostname: "web-0"},
		{name: "runtime-made netns", net: pod, ipc: pod, pid: pod, want: "mount network uts ipc pid", wantHostname: "web-0"},
		{name: "host network shares the node's UTS and has no hostname", net: node, ipc: pod, pid: pod, want: "mount ipc pid"},
		{name: "all node", net: node, ipc: node, pid: node, want: "mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := podConfig()
			cfg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Network: tc.net, Ipc: tc.ipc, Pid: tc.pid}
			opts := sandboxOpts(newFakeHost())
			opts.NetNSPath = tc.netns
			s, err := Sandbox(cfg, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := nsString(s.Linux.Namespaces); got != tc.want {
				t.Errorf("namespaces = %q, want %q", got, tc.want)
			}
			if s.Hostname != tc.wantHostname {
				t.Errorf("hostname = %q, want %q", s.Hostname, tc.wantHostname)
			}
		})
	}
}

func TestContainerNamespaces(t *testing.T) {
	for _, tc := range []struct {
		name     string
		net, ipc runtimeapi.NamespaceMode // the pod's
		pid      runtimeapi.NamespaceMode // the container's
		targetID string
		netns    string
		unified  bool
		want     string
	}{
		{name: "pod pid", net: pod, ipc: pod, pid: pod, netns: "/run/netns/p",
			want: "mount network=/run/netns/p uts=/proc/42/ns/uts ipc=/proc/42/ns/ipc pid=/proc/42/ns/pid"},
		{name: "container pid", net: pod, ipc: pod, pid: container, netns: "/run/netns/p",
			want: "mount network=/run/netns/p uts=/proc/42/ns/uts ipc=/proc/42/ns/ipc pid"},
		{name: "node pid", net: pod, ipc: pod, pid: node, netns: "/run/netns/p",
			want: "mount network=/run/netns/p uts=/proc/42/ns/uts ipc=/proc/42/ns/ipc"},
		{name: "no pinned netns joins the sandbox's", net: pod, ipc: pod, pid: container,
			want: "mount network=/proc/42/ns/net uts=/proc/42/ns/uts ipc=/proc/42/ns/ipc pid"},
		{name: "host network and ipc", net: node, ipc: node, pid: container, netns: "/ignored",
			want: "mount pid"},
		{name: "target pid", net: pod, ipc: pod, pid: target, targetID: "other", netns: "/run/netns/p",
			want: "mount network=/run/netns/p uts=/proc/42/ns/uts ipc=/proc/42/ns/ipc pid=/proc/77/ns/pid"},
		{name: "cgroup v2 adds a cgroup namespace", net: node, ipc: node, pid: node, unified: true,
			want: "mount cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := podConfig()
			p.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Network: tc.net, Ipc: tc.ipc, Pid: container}
			c := ctrConfig()
			c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: tc.pid, TargetId: tc.targetID}
			h := newFakeHost()
			h.cgroups.Unified = tc.unified
			opts := ctrOpts(h)
			opts.NetNSPath = tc.netns
			opts.TargetPID = 77
			s, err := Container(c, p, nil, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := nsString(s.Linux.Namespaces); got != tc.want {
				t.Errorf("namespaces = %q\nwant          %q", got, tc.want)
			}
			if s.Hostname != "" {
				t.Errorf("hostname = %q: a container must not rename the pod's UTS namespace", s.Hostname)
			}
		})
	}
}

func TestNamespaceErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		podNS   *runtimeapi.NamespaceOption
		ctrNS   *runtimeapi.NamespaceOption
		noPID   bool
		is      func(error) bool
		wantErr string
	}{
		{name: "container network mode for a pod", podNS: &runtimeapi.NamespaceOption{Network: container}, is: errdefs.IsInvalidArgument, wantErr: "namespace_options.network"},
		{name: "target ipc", podNS: &runtimeapi.NamespaceOption{Ipc: target}, is: errdefs.IsInvalidArgument, wantErr: "namespace_options.ipc"},
		{name: "unknown pid mode", podNS: &runtimeapi.NamespaceOption{Pid: 9}, is: errdefs.IsInvalidArgument, wantErr: "namespace_options.pid"},
		{name: "target pid for the pod", podNS: &runtimeapi.NamespaceOption{Pid: target}, is: errdefs.IsInvalidArgument, wantErr: "namespace_options.pid"},
		{name: "userns without mappings", podNS: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: pod}}, is: errdefs.IsInvalidArgument, wantErr: "uids: 0 mappings"},
		{name: "userns with two mappings", podNS: usernsNS(pod, idm(0, 1000, 1000), idm(0, 2000, 1000)), is: errdefs.IsInvalidArgument, wantErr: "uids: 2 mappings"},
		{name: "userns without root", podNS: usernsNS(pod, idm(1, 1000, 100000)), is: errdefs.IsInvalidArgument, wantErr: "ID 0"},
		{name: "userns root as the node's", podNS: usernsNS(pod, idm(0, 0, 65536)), is: errdefs.IsInvalidArgument, wantErr: "node's root"},
		{name: "userns of length 0", podNS: usernsNS(pod, idm(0, 1000, 0)), is: errdefs.IsInvalidArgument, wantErr: "length 0"},
		{name: "userns past the last ID", podNS: usernsNS(pod, idm(0, 4294967000, 65536)), is: errdefs.IsInvalidArgument, wantErr: "go past"},
		{name: "userns mode CONTAINER", podNS: usernsNS(container), is: errdefs.IsInvalidArgument, wantErr: "userns_options.mode"},
		{name: "userns mode TARGET", podNS: usernsNS(target), is: errdefs.IsInvalidArgument, wantErr: "userns_options.mode"},
		{name: "userns with host network", podNS: &runtimeapi.NamespaceOption{Network: node, UsernsOptions: usernsNS(pod, idm(0, 1000, 65536)).UsernsOptions}, is: errdefs.IsInvalidArgument, wantErr: "node's network"},
		{name: "userns mappings with mode NODE", podNS: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: node, Uids: []*runtimeapi.IDMapping{{Length: 1}}}}, is: errdefs.IsInvalidArgument, wantErr: "userns_options"},
		{name: "container userns unlike the pod's", ctrNS: usernsNS(pod, idm(0, 1000, 65536)), is: errdefs.IsInvalidArgument, wantErr: "differ from the pod's"},
		{name: "container network mode for a container", ctrNS: &runtimeapi.NamespaceOption{Network: container}, is: errdefs.IsInvalidArgument, wantErr: "namespace_options.network"},
		{name: "target without id", ctrNS: &runtimeapi.NamespaceOption{Pid: target}, is: errdefs.IsInvalidArgument, wantErr: "target_id"},
		{name: "target id without target mode", ctrNS: &runtimeapi.NamespaceOption{Pid: container, TargetId: "x"}, is: errdefs.IsInvalidArgument, wantErr: "target_id"},
		{name: "unknown container pid mode", ctrNS: &runtimeapi.NamespaceOption{Pid: 5}, is: errdefs.IsInvalidArgument, wantErr: "namespace_options.pid"},
		{name: "sandbox not running", ctrNS: &runtimeapi.NamespaceOption{Pid: pod}, noPID: true, is: errdefs.IsFailedPrecondition, wantErr: "sandbox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c := podConfig(), ctrConfig()
			if tc.podNS != nil {
				p.Linux.SecurityContext.NamespaceOptions = tc.podNS
				_, err := Sandbox(p, sandboxOpts(newFakeHost()))
				wantErr(t, err, tc.is, tc.wantErr)
			}
			if tc.ctrNS != nil {
				c.Linux.SecurityContext.NamespaceOptions = tc.ctrNS
			}
			opts := ctrOpts(newFakeHost())
			if tc.noPID {
				opts.SandboxPID = 0
			}
			_, err := Container(c, p, nil, opts)
			wantErr(t, err, tc.is, tc.wantErr)
		})
	}

	// A target that is not running is the node's state, not a bad request.
	c := ctrConfig()
	c.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: target, TargetId: "gone"}
	_, err := Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
	wantErr(t, err, errdefs.IsFailedPrecondition, `"gone"`)
}

func idm(ctr, host, length uint32) *runtimeapi.IDMapping {
	return &runtimeapi.IDMapping{ContainerId: ctr, HostId: host, Length: length}
}

// usernsNS is namespace options with a user namespace of mode and the same
// mappings for uids and gids.
func usernsNS(mode runtimeapi.NamespaceMode, ms ...*runtimeapi.IDMapping) *runtimeapi.NamespaceOption {
	return &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: mode, Uids: ms, Gids: ms}}
}

// TestUserns: a pod with a user namespace of its own gets it with the
// mapping in the pause container's spec; its containers join it.
func TestUserns(t *testing.T) {
	p := podConfig()
	p.Linux.SecurityContext.NamespaceOptions = usernsNS(pod, idm(0, 100000, 65536))
	opts := sandboxOpts(newFakeHost())
	opts.NetNSPath = "/run/netns/x"
	if _, err := Sandbox(p, opts); err == nil || !strings.Contains(err.Error(), "UsernsPath") {
		t.Errorf("a pinned network namespace without its user namespace: %v", err)
	}
	opts.UsernsPath = "/run/userns/x"
	s, err := Sandbox(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
	if !slices.Contains(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/run/userns/x"}) ||
		!slices.Equal(s.Linux.UIDMappings, want) || !slices.Equal(s.Linux.GIDMappings, want) {
		t.Errorf("sandbox namespaces %v, mappings %v %v", s.Linux.Namespaces, s.Linux.UIDMappings, s.Linux.GIDMappings)
	}
	if u := PodUserns(p); u == nil || u.RootUID() != 100000 || u.RootGID() != 100000 {
		t.Errorf("PodUserns = %+v", u)
	}
	if PodUserns(podConfig()) != nil {
		t.Error("a pod without a user namespace has one")
	}

	for _, ctrNS := range []*runtimeapi.NamespaceOption{nil, {Pid: container, UsernsOptions: p.Linux.SecurityContext.NamespaceOptions.UsernsOptions}} {
		c := ctrConfig()
		c.Linux.SecurityContext.NamespaceOptions = ctrNS
		cs, err := Container(c, p, nil, ctrOpts(newFakeHost()))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(cs.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/42/ns/user"}) || !slices.Equal(cs.Linux.UIDMappings, want) {
			t.Errorf("container namespaces %v, mappings %v", cs.Linux.Namespaces, cs.Linux.UIDMappings)
		}
	}

	c := ctrConfig()
	c.Linux.SecurityContext.Privileged = true
	p.Linux.SecurityContext.Privileged = true
	_, err = Container(c, p, nil, ctrOpts(newFakeHost()))
	wantErr(t, err, errdefs.IsInvalidArgument, "user namespace")
}

// TestUsernsMounts: a pod with a user namespace takes the kubelet's
// per-mount mappings when they are the pod's, and only private mounts.
func TestUsernsMounts(t *testing.T) {
	p := podConfig()
	p.Linux.SecurityContext.NamespaceOptions = usernsNS(pod, idm(0, 100000, 65536))
	mount := func(m *runtimeapi.Mount) error {
		c := ctrConfig()
		c.Mounts = []*runtimeapi.Mount{m}
		_, err := Container(c, p, nil, ctrOpts(newFakeHost()))
		return err
	}
	ms := []*runtimeapi.IDMapping{idm(0, 100000, 65536)}
	if err := mount(&runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", UidMappings: ms, GidMappings: ms}); err != nil {
		t.Errorf("the pod's mapping: %v", err)
	}
	if err := mount(&runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data"}); err != nil {
		t.Errorf("no mapping: %v", err)
	}
	other := []*runtimeapi.IDMapping{idm(0, 200000, 65536)}
	wantErr(t, mount(&runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", UidMappings: other, GidMappings: other}), errdefs.IsNotImplemented, "other than the pod's")
	wantErr(t, mount(&runtimeapi.Mount{ContainerPath: "/x", HostPath: "/data", UidMappings: ms}), errdefs.IsInvalidArgument, "gidMappings")
	wantErr(t, mount(&runtimeapi.Mount{ContainerPath: "/x", HostPath: "/shared", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}), errdefs.IsInvalidArgument, "PROPAGATION_PRIVATE")
}
