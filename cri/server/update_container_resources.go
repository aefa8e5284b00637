package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/spec"
	"github.com/corral-runtime/corral/metadata"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// resourcesType is the type URL containerd's shims expect for resources.
const resourcesType = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"

// UpdateContainerResources changes a running container's cgroup limits (the
// kubelet's in-place pod resize).
func (s *Server) UpdateContainerResources(ctx context.Context, r *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if r.GetLinux() == nil {
		return nil, fmt.Errorf("linux resources are missing: %w", errdefs.ErrInvalidArgument)
	}
	c, unlock, err := s.lockContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	if c.State != metadata.ContainerRunning && c.State != metadata.ContainerCreated {
		return nil, fmt.Errorf("container %s is %s: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	res, err := spec.Resources(r.GetLinux(), s.host)
	if err != nil {
		return nil, err
	}
	if res, err = s.nriUpdateContainer(ctx, c, res); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		return nil, err
	}
	if _, err := sh.Task.Update(context.WithoutCancel(ctx), &taskapi.UpdateTaskRequest{
		ID: c.ID, Resources: &anypb.Any{TypeUrl: resourcesType, Value: raw},
	}); err != nil {
		return nil, fmt.Errorf("update resources of %s: %w", c.ID, taskErr(err))
	}
	// The spec keeps what the container now has: ContainerStatus reports
	// it, and a later update starts from it.
	if err := recordResources(c.Bundle, res); err != nil {
		return nil, fmt.Errorf("container %s: its limits changed, but recording them failed: %w", c.ID, err)
	}
	s.log.Info("container resources updated", "pod", c.SandboxID, "container", c.ID)
	s.nriPostUpdateContainer(ctx, c)
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// recordResources merges an update into the bundle's spec the way the
// runtime applies it: what the update sets replaces, what it leaves unset
// stays.
func recordResources(bundle string, upd *specs.LinuxResources) error {
	sp, err := readSpec(bundle)
	if err != nil {
		return err
	}
	if sp.Linux == nil {
		sp.Linux = &specs.Linux{}
	}
	if sp.Linux.Resources == nil {
		sp.Linux.Resources = &specs.LinuxResources{}
	}
	mergeResources(sp.Linux.Resources, upd)
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	tmp := filepath.Join(bundle, ".config.json.new")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(bundle, "config.json"))
}

func mergeResources(r, upd *specs.LinuxResources) {
	if c := upd.CPU; c != nil {
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		if c.Period != nil {
			r.CPU.Period = c.Period
		}
		if c.Quota != nil {
			r.CPU.Quota = c.Quota
		}
		if c.Shares != nil {
			r.CPU.Shares = c.Shares
		}
		if c.Cpus != "" {
			r.CPU.Cpus = c.Cpus
		}
		if c.Mems != "" {
			r.CPU.Mems = c.Mems
		}
	}
	if m := upd.Memory; m != nil {
		if r.Memory == nil {
			r.Memory = &specs.LinuxMemory{}
		}
		if m.Limit != nil {
			r.Memory.Limit = m.Limit
		}
		if m.Swap != nil {
			r.Memory.Swap = m.Swap
		}
	}
	if len(upd.HugepageLimits) > 0 {
		r.HugepageLimits = upd.HugepageLimits
	}
	if len(upd.Unified) > 0 {
		if r.Unified == nil {
			r.Unified = map[string]string{}
		}
		maps.Copy(r.Unified, upd.Unified)
	}
}
