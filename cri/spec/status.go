package spec

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StatusUser is the identity a container's process runs with, as
// ContainerStatus reports it: the uid, the primary gid and every
// supplementary group, the primary one included. nil for a spec without a
// process.
func StatusUser(s *specs.Spec) *runtimeapi.ContainerUser {
	if s == nil || s.Process == nil {
		return nil
	}
	u := s.Process.User
	groups := make([]int64, 0, len(u.AdditionalGids))
	for _, g := range u.AdditionalGids {
		groups = append(groups, int64(g))
	}
	return &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{
		Uid: int64(u.UID), Gid: int64(u.GID), SupplementalGroups: groups,
	}}
}

// StatusResources turns the resources of a container's spec back into the
// CRI's, as ContainerStatus reports them (the kubelet's in-place resize
// compares them with what it asked for). nil for a spec without any.
func StatusResources(s *specs.Spec) *runtimeapi.ContainerResources {
	if s == nil || s.Linux == nil || s.Linux.Resources == nil {
		return nil
	}
	r := s.Linux.Resources
	out := &runtimeapi.LinuxContainerResources{}
	if c := r.CPU; c != nil {
		if c.Period != nil {
			out.CpuPeriod = int64(*c.Period)
		}
		if c.Quota != nil {
			out.CpuQuota = *c.Quota
		}
		if c.Shares != nil {
			out.CpuShares = int64(*c.Shares)
		}
		out.CpusetCpus, out.CpusetMems = c.Cpus, c.Mems
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			out.MemoryLimitInBytes = *m.Limit
		}
		if m.Swap != nil {
			out.MemorySwapLimitInBytes = *m.Swap
		}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.Pagesize, Limit: h.Limit})
	}
	if len(r.Unified) > 0 {
		out.Unified = r.Unified
	}
	if s.Process != nil && s.Process.OOMScoreAdj != nil {
		out.OomScoreAdj = int64(*s.Process.OOMScoreAdj)
	}
	return &runtimeapi.ContainerResources{Linux: out}
}
