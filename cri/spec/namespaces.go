package spec

import (
	"fmt"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podNamespaces is the pod-level namespace choice, which the sandbox config
// makes for every container of the pod.
type podNamespaces struct {
	hostNetwork, hostIPC, hostPID bool
	// userns is the pod's user namespace mapping; nil for the node's.
	userns *Userns
}

// Userns is the ID mapping of a pod's user namespace: container IDs
// 0..Length-1 are host IDs HostUID.. (and HostGID..).
type Userns struct {
	UID, GID specs.LinuxIDMapping
}

// RootUID and RootGID are the host IDs of the container's root, which
// owns what corrald makes for the pod's containers to write.
func (u *Userns) RootUID() uint32 { return u.UID.HostID }

// RootGID: see RootUID.
func (u *Userns) RootGID() uint32 { return u.GID.HostID }

// PodUserns returns the pod's user namespace mapping, nil when it uses the
// node's; the config must have passed Sandbox.
func PodUserns(cfg *runtimeapi.PodSandboxConfig) *Userns {
	p, err := checkPodNamespaces(cfg.GetLinux().GetSecurityContext().GetNamespaceOptions())
	if err != nil {
		return nil
	}
	return p.userns
}

// checkPodNamespaces validates a sandbox's namespace options: the kubelet
// sets network and IPC to POD or NODE, and PID to POD, CONTAINER or NODE.
func checkPodNamespaces(ns *runtimeapi.NamespaceOption) (podNamespaces, error) {
	const prefix = "linux.security_context.namespace_options."
	var p podNamespaces
	switch m := ns.GetNetwork(); m {
	case runtimeapi.NamespaceMode_POD:
	case runtimeapi.NamespaceMode_NODE:
		p.hostNetwork = true
	default:
		return p, invalidf(prefix+"network", "mode %s is not POD or NODE", m)
	}
	switch m := ns.GetIpc(); m {
	case runtimeapi.NamespaceMode_POD:
	case runtimeapi.NamespaceMode_NODE:
		p.hostIPC = true
	default:
		return p, invalidf(prefix+"ipc", "mode %s is not POD or NODE", m)
	}
	switch m := ns.GetPid(); m {
	case runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_CONTAINER:
	case runtimeapi.NamespaceMode_NODE:
		p.hostPID = true
	default:
		return p, invalidf(prefix+"pid", "mode %s is not POD, CONTAINER or NODE for a pod sandbox", m)
	}
	if ns.GetTargetId() != "" {
		return p, invalidf(prefix+"target_id", "set for a pod sandbox; only a container's pid namespace can target another container")
	}
	u, err := checkUserns(ns.GetUsernsOptions())
	if err != nil {
		return p, err
	}
	if u != nil && (p.hostNetwork || p.hostIPC || p.hostPID) {
		// Kubernetes forbids it too: the node's namespaces belong to the
		// node's user namespace, where the pod's root would be nobody.
		return p, invalidf(prefix+"userns_options", "a user namespace of the pod's own cannot go with the node's network, IPC or PID namespace")
	}
	p.userns = u
	return p, nil
}

// checkUserns validates the user namespace options: the node's (mode NODE,
// no mappings), or one of the pod's own (mode POD) with one mapping for
// uids and one for gids that maps container ID 0, as the kubelet sends.
// Containers of the pod all share the pod's; a mode of their own
// (CONTAINER, TARGET) is refused.
func checkUserns(u *runtimeapi.UserNamespace) (*Userns, error) {
	const field = "linux.security_context.namespace_options.userns_options"
	if u == nil {
		return nil, nil
	}
	switch m := u.GetMode(); m {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) > 0 || len(u.GetGids()) > 0 {
			return nil, invalidf(field, "uid/gid mappings given with mode NODE, which uses the node's user namespace")
		}
		return nil, nil
	case runtimeapi.NamespaceMode_POD:
		uid, err := idMapping(field+".uids", u.GetUids())
		if err != nil {
			return nil, err
		}
		gid, err := idMapping(field+".gids", u.GetGids())
		if err != nil {
			return nil, err
		}
		return &Userns{UID: uid, GID: gid}, nil
	default:
		return nil, invalidf(field+".mode", "mode %s is not POD or NODE: a pod's containers share the pod's user namespace", m)
	}
}

// idMapping checks the one ID mapping of a pod's user namespace.
func idMapping(field string, ms []*runtimeapi.IDMapping) (specs.LinuxIDMapping, error) {
	if len(ms) != 1 || ms[0] == nil {
		return specs.LinuxIDMapping{}, invalidf(field, "%d mappings given; corral takes exactly one, as the kubelet sends", len(ms))
	}
	m := ms[0]
	switch {
	case m.GetContainerId() != 0:
		return specs.LinuxIDMapping{}, invalidf(field, "maps container IDs from %d; ID 0, the container's root, must be mapped", m.GetContainerId())
	case m.GetLength() == 0:
		return specs.LinuxIDMapping{}, invalidf(field, "maps no IDs (length 0)")
	case m.GetHostId() == 0:
		// The container's root would be the node's.
		return specs.LinuxIDMapping{}, invalidf(field, "maps container root to host ID 0, the node's root")
	case uint64(m.GetHostId())+uint64(m.GetLength()) > maxID+1:
		return specs.LinuxIDMapping{}, invalidf(field, "host IDs %d..%d go past %d", m.GetHostId(), uint64(m.GetHostId())+uint64(m.GetLength())-1, maxID)
	}
	return specs.LinuxIDMapping{ContainerID: 0, HostID: m.GetHostId(), Size: m.GetLength()}, nil
}

// sandboxNamespaces lists the pause container's namespaces: each pod-level
// namespace is created here (or is the node's), for the containers to join.
func sandboxNamespaces(p podNamespaces, netnsPath, usernsPath string) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if !p.hostNetwork {
		// A pinned netns from corrald's network setup, or a new one.
		ns = append(ns,
			specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netnsPath},
			// The pod's hostname lives in its UTS namespace; a
			// host-network pod shares the node's, as the kubelet expects.
			specs.LinuxNamespace{Type: specs.UTSNamespace})
	}
	if !p.hostIPC {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace})
	}
	if !p.hostPID {
		// Even with per-container PID namespaces the pause process gets
		// its own: it must never be able to see the node's processes.
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if p.userns != nil {
		// Pinned by corrald with the network namespace it owns, or new.
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace, Path: usernsPath})
	}
	return ns
}

// containerNamespaces lists an app container's namespaces: it joins the
// sandbox's network, UTS and IPC namespaces, and picks its PID namespace.
func containerNamespaces(p podNamespaces, ctr *runtimeapi.NamespaceOption, opts *ContainerOptions, unified, privileged bool) ([]specs.LinuxNamespace, error) {
	const prefix = "linux.security_context.namespace_options."
	// The container's own network and IPC modes are checked but not used:
	// they are pod-level, and crictl users often leave them unset in a
	// container config while the pod config says NODE.
	switch m := ctr.GetNetwork(); m {
	case runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_NODE:
	default:
		return nil, invalidf(prefix+"network", "mode %s is not POD or NODE", m)
	}
	switch m := ctr.GetIpc(); m {
	case runtimeapi.NamespaceMode_POD, runtimeapi.NamespaceMode_NODE:
	default:
		return nil, invalidf(prefix+"ipc", "mode %s is not POD or NODE", m)
	}
	cu, err := checkUserns(ctr.GetUsernsOptions())
	if err != nil {
		return nil, err
	}
	if ctr.GetUsernsOptions() != nil && !sameUserns(cu, p.userns) {
		return nil, invalidf(prefix+"userns_options", "differ from the pod's: a pod's containers share its user namespace")
	}

	sandboxNS := func(kind string) (string, error) {
		if opts.SandboxPID == 0 {
			return "", fmt.Errorf("joining the pod's %s namespace: the sandbox has no running process: %w", kind, errdefs.ErrFailedPrecondition)
		}
		return fmt.Sprintf("/proc/%d/ns/%s", opts.SandboxPID, kind), nil
	}

	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	if !p.hostNetwork {
		netns := opts.NetNSPath
		if netns == "" {
			var err error
			if netns, err = sandboxNS("net"); err != nil {
				return nil, err
			}
		}
		uts, err := sandboxNS("uts")
		if err != nil {
			return nil, err
		}
		ns = append(ns,
			specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: netns},
			specs.LinuxNamespace{Type: specs.UTSNamespace, Path: uts})
	}
	if !p.hostIPC {
		ipc, err := sandboxNS("ipc")
		if err != nil {
			return nil, err
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace, Path: ipc})
	}

	target := ctr.GetTargetId()
	switch m := ctr.GetPid(); m {
	case runtimeapi.NamespaceMode_POD:
		pid, err := sandboxNS("pid")
		if err != nil {
			return nil, err
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: pid})
	case runtimeapi.NamespaceMode_CONTAINER:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	case runtimeapi.NamespaceMode_NODE:
	case runtimeapi.NamespaceMode_TARGET:
		// Ephemeral (debug) containers share a running container's view.
		if target == "" {
			return nil, invalidf(prefix+"target_id", "empty, but pid mode is TARGET")
		}
		if opts.TargetPID == 0 {
			return nil, preconditionf(prefix+"target_id", "target container %q is not running", target)
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", opts.TargetPID)})
		target = ""
	default:
		return nil, invalidf(prefix+"pid", "unknown mode %s", m)
	}
	if target != "" {
		return nil, invalidf(prefix+"target_id", "set, but pid mode is not TARGET")
	}

	if p.userns != nil {
		userns, err := sandboxNS("user")
		if err != nil {
			return nil, err
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace, Path: userns})
	}

	// On cgroup v2 a cgroup namespace hides the node's hierarchy, as
	// containerd does; privileged containers keep the node's for
	// compatibility (kubernetes/enhancements, cgroups v2 KEP).
	if unified && !privileged {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return ns, nil
}

func sameUserns(a, b *Userns) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
