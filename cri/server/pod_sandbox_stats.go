package server

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/netns"
	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// defaultInterface is the interface CNI plugins create in a pod: the
// kubelet reports its counters as the pod's network usage.
const defaultInterface = "eth0"

// PodSandboxStats reports a ready pod's usage: CPU, memory and processes
// from its cgroup (its containers' included), network from its namespace,
// and each of its containers' stats.
func (s *Server) PodSandboxStats(ctx context.Context, r *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	if r.GetPodSandboxId() == "" {
		return nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := s.store.GetSandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if sb.State != metadata.SandboxReady {
		return nil, fmt.Errorf("pod %s is not ready, so it uses nothing: %w", sb.ID, errdefs.ErrFailedPrecondition)
	}
	st, err := s.podStats(ctx, sb)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: st}, nil
}

// ListPodSandboxStats reports every ready pod the filter selects, as the
// kubelet's stats provider expects: stopped pods use nothing.
func (s *Server) ListPodSandboxStats(ctx context.Context, r *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := r.GetFilter()
	sbs, err := s.store.ListSandboxes(func(sb metadata.Sandbox) bool {
		return sb.State == metadata.SandboxReady && hasPrefix(sb.ID, f.GetId()) && matchLabels(f.GetLabelSelector(), sb.Labels)
	})
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListPodSandboxStatsResponse{Stats: make([]*runtimeapi.PodSandboxStats, 0, len(sbs))}
	for _, sb := range sbs {
		st, err := s.podStats(ctx, sb)
		if err != nil {
			// A pod stopped or removed meanwhile is left out.
			s.log.Debug("pod stats", "pod", sb.ID, "error", err)
			continue
		}
		resp.Stats = append(resp.Stats, st)
	}
	s.cpu.prune()
	return resp, nil
}

func hasPrefix(s, prefix string) bool {
	return len(s) >= len(prefix) && s[:len(prefix)] == prefix
}

func (s *Server) podStats(ctx context.Context, sb metadata.Sandbox) (*runtimeapi.PodSandboxStats, error) {
	md := sandboxConfig(sb).GetMetadata()
	st := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{
			Id: sb.ID, Metadata: md, Labels: sb.Labels, Annotations: sb.Annotations,
		},
		Linux: &runtimeapi.LinuxPodSandboxStats{},
	}
	lin := st.Linux
	if cg := sandboxCgroup(sb); cg.path != "" {
		m, err := s.cgroups.Stat(cg.path)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", sb.ID, err)
		}
		now := time.Now()
		u := m.Usage()
		lin.Cpu = s.cpuUsage(sb.ID, now, u.CPU)
		lin.Memory = memoryUsage(now, u.Memory)
		if pids, err := s.cgroups.Procs(cg.path); err == nil {
			lin.Process = &runtimeapi.ProcessUsage{Timestamp: now.UnixNano(), ProcessCount: &runtimeapi.UInt64Value{Value: uint64(len(pids))}}
		}
	}
	if sb.NetNSPath != "" && sb.PID != 0 {
		if n, err := podNetwork(int(sb.PID)); err == nil {
			lin.Network = n
		} else {
			s.log.Debug("pod network stats", "pod", sb.ID, "error", err)
		}
	}
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return c.SandboxID == sb.ID })
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		lin.Containers = append(lin.Containers, s.containerStatsOrBase(ctx, c))
	}
	return st, nil
}

// podNetwork reads the counters of the pod's interfaces, loopback left
// out, from the namespace the pause process (pid) holds.
func podNetwork(pid int) (*runtimeapi.NetworkUsage, error) {
	ifs, err := netns.Interfaces(pid)
	if err != nil {
		return nil, err
	}
	out := &runtimeapi.NetworkUsage{Timestamp: time.Now().UnixNano()}
	for _, i := range ifs {
		if i.Name == "lo" {
			continue
		}
		u := &runtimeapi.NetworkInterfaceUsage{
			Name:     i.Name,
			RxBytes:  &runtimeapi.UInt64Value{Value: i.RxBytes},
			RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
			TxBytes:  &runtimeapi.UInt64Value{Value: i.TxBytes},
			TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors},
		}
		if i.Name == defaultInterface {
			out.DefaultInterface = u
		} else {
			out.Interfaces = append(out.Interfaces, u)
		}
	}
	return out, nil
}
