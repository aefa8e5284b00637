package server

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/cgroup"
	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStats reports one container's CPU, memory and writable layer.
func (s *Server) ContainerStats(ctx context.Context, r *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	if r.GetContainerId() == "" {
		return nil, fmt.Errorf("container_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.store.GetContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := s.containerStats(ctx, c)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: st}, nil
}

// ListContainerStats reports every container the filter selects; one that
// does not run has its attributes and writable layer, no CPU or memory.
func (s *Server) ListContainerStats(ctx context.Context, r *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := r.GetFilter()
	cs, err := s.store.ListContainers(func(c metadata.Container) bool {
		return matchContainer(c, f.GetId(), f.GetPodSandboxId(), f.GetLabelSelector())
	})
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ListContainerStatsResponse{Stats: make([]*runtimeapi.ContainerStats, 0, len(cs))}
	for _, c := range cs {
		resp.Stats = append(resp.Stats, s.containerStatsOrBase(ctx, c))
	}
	s.cpu.prune()
	return resp, nil
}

// containerStatsOrBase is containerStats for listings: a container that
// ends meanwhile still gets listed, with what is known without its shim.
func (s *Server) containerStatsOrBase(ctx context.Context, c metadata.Container) *runtimeapi.ContainerStats {
	st, err := s.containerStats(ctx, c)
	if err != nil {
		s.log.Debug("container stats", "container", c.ID, "error", err)
		return s.baseStats(c)
	}
	return st
}

func (s *Server) baseStats(c metadata.Container) *runtimeapi.ContainerStats {
	now := time.Now().UnixNano()
	upper := filepath.Join(s.paths.containerRoot(c.ID), "upper")
	bytes, inodes := diskUsage(upper)
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id: c.ID, Metadata: &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
			Labels: c.Labels, Annotations: c.Annotations,
		},
		WritableLayer: &runtimeapi.FilesystemUsage{
			Timestamp:  now,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: upper},
			UsedBytes:  &runtimeapi.UInt64Value{Value: bytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: inodes},
		},
	}
}

func (s *Server) containerStats(ctx context.Context, c metadata.Container) (*runtimeapi.ContainerStats, error) {
	st := s.baseStats(c)
	if c.State != metadata.ContainerRunning {
		return st, nil
	}
	u, now, err := s.taskUsage(ctx, c)
	if err != nil {
		return nil, err
	}
	st.Cpu = s.cpuUsage(c.ID, now, u.CPU)
	st.Memory = memoryUsage(now, u.Memory)
	return st, nil
}

// taskUsage asks a running container's shim for its cgroup statistics.
func (s *Server) taskUsage(ctx context.Context, c metadata.Container) (cgroup.Usage, time.Time, error) {
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return cgroup.Usage{}, time.Time{}, err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		return cgroup.Usage{}, time.Time{}, err
	}
	resp, err := sh.Task.Stats(ctx, &taskapi.StatsRequest{ID: c.ID})
	if err != nil {
		return cgroup.Usage{}, time.Time{}, taskErr(err)
	}
	now := time.Now()
	m, err := cgroup.Decode(resp.GetStats().GetTypeUrl(), resp.GetStats().GetValue())
	if err != nil {
		return cgroup.Usage{}, time.Time{}, err
	}
	return m.Usage(), now, nil
}

// cpuUsage is the CRI's CPU usage; usage_nano_cores is the rate since the
// previous sample of the same cgroup, and left out on the first.
func (s *Server) cpuUsage(id string, now time.Time, c *cgroup.CPU) *runtimeapi.CpuUsage {
	if c == nil {
		return nil
	}
	out := &runtimeapi.CpuUsage{
		Timestamp:            now.UnixNano(),
		UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: c.UsageNanos},
	}
	if rate, ok := s.cpu.rate(id, now, c.UsageNanos); ok {
		out.UsageNanoCores = &runtimeapi.UInt64Value{Value: rate}
	}
	return out
}

// memoryUsage is the CRI's memory usage; available_bytes only under a
// limit.
func memoryUsage(now time.Time, m *cgroup.Memory) *runtimeapi.MemoryUsage {
	if m == nil {
		return nil
	}
	out := &runtimeapi.MemoryUsage{
		Timestamp:       now.UnixNano(),
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: m.WorkingSet},
		UsageBytes:      &runtimeapi.UInt64Value{Value: m.Usage},
		RssBytes:        &runtimeapi.UInt64Value{Value: m.RSS},
		PageFaults:      &runtimeapi.UInt64Value{Value: m.PageFaults},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: m.MajorPageFaults},
	}
	if m.Limit > 0 {
		out.AvailableBytes = &runtimeapi.UInt64Value{Value: m.Limit - min(m.Limit, m.WorkingSet)}
	}
	return out
}

// cpuSamples remembers the last CPU reading of each cgroup (a pod's or a
// container's, by ID), to report a rate as the kubelet wants it.
type cpuSamples struct {
	mu   sync.Mutex
	last map[string]cpuSample
}

type cpuSample struct {
	at    time.Time
	usage uint64
}

// sampleTTL is how long a reading is kept without a newer one: the kubelet
// asks every few seconds, and the ID of a removed container is never asked
// for again.
const sampleTTL = 10 * time.Minute

// rate records usage at now and returns the nanocores used since the
// previous reading, if there is one to compare with.
func (c *cpuSamples) rate(id string, now time.Time, usage uint64) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[string]cpuSample{}
	}
	prev, ok := c.last[id]
	if ok && !now.After(prev.at) {
		// Two readings at once (a list right after a single call): keep
		// the older one to measure from.
		return 0, false
	}
	c.last[id] = cpuSample{at: now, usage: usage}
	if !ok || usage < prev.usage {
		return 0, false
	}
	elapsed := now.Sub(prev.at)
	return uint64(float64(usage-prev.usage) / elapsed.Seconds()), true
}

// prune forgets readings older than sampleTTL.
func (c *cpuSamples) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, smp := range c.last {
		if time.Since(smp.at) > sampleTTL {
			delete(c.last, id)
		}
	}
}

// diskUsage adds up the blocks and inodes under dir (hard links once).
func diskUsage(dir string) (bytes, inodes uint64) {
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
			bytes += uint64(st.Blocks) * 512
		}
		inodes++
		return nil
	})
	return bytes, inodes
}
