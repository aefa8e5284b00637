package nri

import (
	"github.com/containerd/nri/pkg/api"
	"github.com/corral-runtime/corral/metadata"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pod describes a pod to plugins from its record, its CRI config and its
// cgroup parent.
func Pod(sb metadata.Sandbox, cfg *runtimeapi.PodSandboxConfig, cgroupParent string) *api.PodSandbox {
	lnx := cfg.GetLinux()
	return &api.PodSandbox{
		Id:             sb.ID,
		Name:           sb.Name,
		Uid:            sb.UID,
		Namespace:      sb.Namespace,
		Labels:         sb.Labels,
		Annotations:    sb.Annotations,
		RuntimeHandler: sb.RuntimeHandler,
		Pid:            sb.PID,
		Ips:            sb.IPs,
		Linux: &api.LinuxPodSandbox{
			CgroupParent: cgroupParent,
			PodOverhead:  criResources(lnx.GetOverhead()),
			PodResources: criResources(lnx.GetResources()),
		},
	}
}

// Container describes a container to plugins from its record and its OCI
// spec (nil when it has none yet or it cannot be read).
func Container(c metadata.Container, sp *specs.Spec) *api.Container {
	ctr := &api.Container{
		Id:            c.ID,
		PodSandboxId:  c.SandboxID,
		Name:          c.Name,
		State:         containerState(c.State),
		Labels:        c.Labels,
		Annotations:   c.Annotations,
		Pid:           c.PID,
		CreatedAt:     unixNano(c.CreatedAt.UnixNano(), c.CreatedAt.IsZero()),
		StartedAt:     unixNano(c.StartedAt.UnixNano(), c.StartedAt.IsZero()),
		FinishedAt:    unixNano(c.FinishedAt.UnixNano(), c.FinishedAt.IsZero()),
		ExitCode:      c.ExitCode,
		StatusReason:  c.Reason,
		StatusMessage: c.Message,
	}
	if sp == nil {
		return ctr
	}
	ctr.Mounts = api.FromOCIMounts(sp.Mounts)
	ctr.Hooks = api.FromOCIHooks(sp.Hooks)
	if p := sp.Process; p != nil {
		ctr.Args = p.Args
		ctr.Env = p.Env
		ctr.Rlimits = rlimits(p.Rlimits)
		ctr.User = &api.User{Uid: p.User.UID, Gid: p.User.GID, AdditionalGids: p.User.AdditionalGids}
	}
	if l := sp.Linux; l != nil {
		ctr.Linux = &api.LinuxContainer{
			Namespaces:  api.FromOCILinuxNamespaces(l.Namespaces),
			Devices:     api.FromOCILinuxDevices(l.Devices),
			Resources:   api.FromOCILinuxResources(l.Resources, sp.Annotations),
			CgroupsPath: l.CgroupsPath,
			Sysctl:      l.Sysctl,
		}
		if l.Seccomp != nil { // NRI's conversion does not take nil
			ctr.Linux.SeccompPolicy = api.FromOCILinuxSeccomp(l.Seccomp)
		}
		if p := sp.Process; p != nil {
			if p.OOMScoreAdj != nil {
				ctr.Linux.OomScoreAdj = api.Int(p.OOMScoreAdj)
			}
			ctr.Linux.IoPriority = api.FromOCILinuxIOPriority(p.IOPriority)
		}
	}
	return ctr
}

func unixNano(ns int64, zero bool) int64 {
	if zero {
		return 0
	}
	return ns
}

func containerState(s metadata.ContainerState) api.ContainerState {
	switch s {
	case metadata.ContainerCreated:
		return api.ContainerState_CONTAINER_CREATED
	case metadata.ContainerRunning:
		return api.ContainerState_CONTAINER_RUNNING
	case metadata.ContainerExited:
		return api.ContainerState_CONTAINER_STOPPED
	}
	return api.ContainerState_CONTAINER_UNKNOWN
}

func rlimits(in []specs.POSIXRlimit) []*api.POSIXRlimit {
	var out []*api.POSIXRlimit
	for _, r := range in {
		out = append(out, &api.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return out
}

// criResources converts the CRI's resources of a pod, as the kubelet sends
// them.
func criResources(r *runtimeapi.LinuxContainerResources) *api.LinuxResources {
	if r == nil {
		return nil
	}
	out := &api.LinuxResources{
		Cpu: &api.LinuxCPU{
			Shares: api.UInt64(uint64(r.GetCpuShares())),
			Quota:  api.Int64(r.GetCpuQuota()),
			Period: api.UInt64(uint64(r.GetCpuPeriod())),
			Cpus:   r.GetCpusetCpus(),
			Mems:   r.GetCpusetMems(),
		},
		Memory: &api.LinuxMemory{
			Limit: api.Int64(r.GetMemoryLimitInBytes()),
		},
		Unified: r.GetUnified(),
	}
	if s := r.GetMemorySwapLimitInBytes(); s != 0 {
		out.Memory.Swap = api.Int64(s)
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, &api.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}
