package server

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/corral-runtime/corral/cri/netns"
	"github.com/corral-runtime/corral/metadata"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListPodSandboxMetrics reports the cAdvisor metrics of every ready pod:
// the network of its namespace at pod level, and for each running
// container its CPU, memory, block I/O, writable layer, processes and
// limits. A pod or container that ends meanwhile is left out.
func (s *Server) ListPodSandboxMetrics(ctx context.Context, r *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	sbs, err := s.store.ListSandboxes(func(sb metadata.Sandbox) bool { return sb.State == metadata.SandboxReady })
	if err != nil {
		return nil, err
	}
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return c.State == metadata.ContainerRunning })
	if err != nil {
		return nil, err
	}
	byPod := map[string][]metadata.Container{}
	for _, c := range cs {
		byPod[c.SandboxID] = append(byPod[c.SandboxID], c)
	}
	resp := &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: make([]*runtimeapi.PodSandboxMetrics, 0, len(sbs))}
	for _, sb := range sbs {
		md := sandboxConfig(sb).GetMetadata()
		pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: sb.ID}
		if sb.NetNSPath != "" && sb.PID != 0 {
			m := metricSet{now: time.Now(), labels: []string{md.GetName(), md.GetNamespace(), "", sb.ID, ""}}
			if err := m.network(int(sb.PID)); err != nil {
				s.log.Debug("pod network metrics", "pod", sb.ID, "error", err)
			}
			pm.Metrics = m.out
		}
		for _, c := range byPod[sb.ID] {
			cm, err := s.containerMetrics(ctx, md, c)
			if err != nil {
				s.log.Debug("container metrics", "pod", sb.ID, "container", c.ID, "error", err)
				continue
			}
			pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
		}
		resp.PodMetrics = append(resp.PodMetrics, pm)
	}
	return resp, nil
}

// metricSet collects the metrics of one pod or container, all with its
// labels and the time of the reading.
type metricSet struct {
	now    time.Time
	labels []string
	out    []*runtimeapi.Metric
}

// add appends a metric; extra are the values of d's extra labels.
func (m *metricSet) add(d metricDesc, v uint64, extra ...string) {
	if len(extra) != len(d.extra) {
		// A programming error; refuse the metric rather than send one whose
		// labels do not match its descriptor.
		return
	}
	m.out = append(m.out, &runtimeapi.Metric{
		Name:        d.name,
		Timestamp:   m.now.UnixNano(),
		MetricType:  d.typ,
		LabelValues: append(append(make([]string, 0, len(m.labels)+len(extra)), m.labels...), extra...),
		Value:       &runtimeapi.UInt64Value{Value: v},
	})
}

// network adds the counters of the interfaces of pid's network namespace,
// loopback left out as cAdvisor does.
func (m *metricSet) network(pid int) error {
	ifs, err := netns.Interfaces(pid)
	if err != nil {
		return err
	}
	for _, i := range ifs {
		if i.Name == "lo" {
			continue
		}
		m.add(mNetRxBytes, i.RxBytes, i.Name)
		m.add(mNetRxPackets, i.RxPackets, i.Name)
		m.add(mNetRxDropped, i.RxDropped, i.Name)
		m.add(mNetRxErrors, i.RxErrors, i.Name)
		m.add(mNetTxBytes, i.TxBytes, i.Name)
		m.add(mNetTxPackets, i.TxPackets, i.Name)
		m.add(mNetTxDropped, i.TxDropped, i.Name)
		m.add(mNetTxErrors, i.TxErrors, i.Name)
	}
	return nil
}

// seconds turns nanoseconds into whole seconds, the unit of the metrics.
func seconds(ns uint64) uint64 { return ns / uint64(time.Second) }

func (s *Server) containerMetrics(ctx context.Context, pod *runtimeapi.PodSandboxMetadata, c metadata.Container) (*runtimeapi.ContainerMetrics, error) {
	u, at, err := s.taskUsage(ctx, c)
	if err != nil {
		return nil, err
	}
	image := containerConfig(c).GetImage().GetUserSpecifiedImage()
	if image == "" {
		image = c.ImageRef
	}
	m := metricSet{now: at, labels: []string{pod.GetName(), pod.GetNamespace(), c.Name, c.ID, image}}
	m.add(mLastSeen, uint64(at.Unix()))
	if !c.StartedAt.IsZero() {
		m.add(mStartTime, uint64(c.StartedAt.Unix()))
	}
	if cpu := u.CPU; cpu != nil {
		m.add(mCPUUsage, seconds(cpu.UsageNanos))
		m.add(mCPUUser, seconds(cpu.UserNanos))
		m.add(mCPUSystem, seconds(cpu.SystemNanos))
		m.add(mCPUPeriods, cpu.Periods)
		m.add(mCPUThrottled, cpu.ThrottledPeriods)
		m.add(mCPUThrottledSecs, seconds(cpu.ThrottledNanos))
	}
	if mem := u.Memory; mem != nil {
		m.add(mMemUsage, mem.Usage)
		m.add(mMemWorkingSet, mem.WorkingSet)
		m.add(mMemMaxUsage, mem.MaxUsage)
		m.add(mMemCache, mem.Cache)
		m.add(mMemRSS, mem.RSS)
		m.add(mMemKernel, mem.Kernel)
		m.add(mMemMapped, mem.MappedFile)
		m.add(mMemSwap, mem.Swap)
		m.add(mMemFailcnt, mem.Failcnt)
		m.add(mMemActiveFile, mem.ActiveFile)
		m.add(mMemInactiveFile, mem.InactiveFile)
		// A container's cgroup has no children: its own faults and those
		// of its hierarchy are the same.
		for _, scope := range []string{"container", "hierarchy"} {
			m.add(mMemFailures, mem.PageFaults, "pgfault", scope)
			m.add(mMemFailures, mem.MajorPageFaults, "pgmajfault", scope)
		}
		m.add(mOOMEvents, mem.OOMKills)
		m.add(mSpecMemLimit, mem.Limit)
		m.add(mSpecMemSwapLimit, mem.SwapLimit)
	}
	for _, b := range u.BlkIO {
		dev := blockDevice(b.Major, b.Minor)
		major, minor := strconv.FormatUint(b.Major, 10), strconv.FormatUint(b.Minor, 10)
		m.add(mFsReadBytes, b.ReadBytes, dev)
		m.add(mFsReads, b.Reads, dev)
		m.add(mFsWriteBytes, b.WriteBytes, dev)
		m.add(mFsWrites, b.Writes, dev)
		m.add(mBlkioUsage, b.ReadBytes, dev, major, minor, "Read")
		m.add(mBlkioUsage, b.WriteBytes, dev, major, minor, "Write")
	}
	s.fsMetrics(&m, c)
	if p := u.Pids; p != nil {
		m.add(mThreadsMax, p.Limit)
	}
	s.processMetrics(ctx, &m, c)
	if sp, err := readSpec(c.Bundle); err == nil && sp.Linux != nil && sp.Linux.Resources != nil && sp.Linux.Resources.CPU != nil {
		cpu := sp.Linux.Resources.CPU
		if cpu.Period != nil {
			m.add(mSpecCPUPeriod, *cpu.Period)
		}
		if cpu.Quota != nil && *cpu.Quota > 0 {
			m.add(mSpecCPUQuota, uint64(*cpu.Quota))
		}
		if cpu.Shares != nil {
			m.add(mSpecCPUShares, *cpu.Shares)
		}
	}
	return &runtimeapi.ContainerMetrics{ContainerId: c.ID, Metrics: m.out}, nil
}

// fsMetrics adds the writable layer's usage and the size of the file
// system holding it.
func (s *Server) fsMetrics(m *metricSet, c metadata.Container) {
	upper := filepath.Join(s.paths.containerRoot(c.ID), "upper")
	var st unix.Statfs_t
	if err := unix.Statfs(upper, &st); err != nil {
		return
	}
	dev := fsDevice(upper)
	used, _ := diskUsage(upper)
	m.add(mFsUsage, used, dev)
	m.add(mFsLimit, st.Blocks*uint64(st.Bsize), dev)
	m.add(mFsInodesTotal, st.Files, dev)
	m.add(mFsInodesFree, st.Ffree, dev)
}

// processMetrics adds the container's processes, threads, open files and
// sockets, counted in /proc for the pids its shim reports.
func (s *Server) processMetrics(ctx context.Context, m *metricSet, c metadata.Container) {
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		return
	}
	resp, err := sh.Task.Pids(ctx, &taskapi.PidsRequest{ID: c.ID})
	if err != nil {
		return
	}
	var threads, fds, sockets uint64
	for _, p := range resp.GetProcesses() {
		dir := fmt.Sprintf("/proc/%d", p.GetPid())
		if b, err := os.ReadFile(dir + "/status"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "Threads:"); ok {
					n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
					threads += n
				}
			}
		}
		entries, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue // gone meanwhile
		}
		fds += uint64(len(entries))
		for _, e := range entries {
			if target, err := os.Readlink(dir + "/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
				sockets++
			}
		}
	}
	m.add(mProcesses, uint64(len(resp.GetProcesses())))
	m.add(mThreads, threads)
	m.add(mFileDescriptors, fds)
	m.add(mSockets, sockets)
}

// readSpec reads the OCI spec corrald wrote into a container's bundle.
func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var sp specs.Spec
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, fmt.Errorf("%s/config.json: %w", bundle, err)
	}
	return &sp, nil
}

// blockDevice names a block device by its numbers, as cAdvisor does
// (/dev/vda); "MAJOR:MINOR" when the node does not know it.
func blockDevice(major, minor uint64) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "DEVNAME="); ok && name != "" && !strings.Contains(name, "/..") {
				return "/dev/" + name
			}
		}
	}
	return fmt.Sprintf("%d:%d", major, minor)
}

// fsDevice names the device of the file system holding path: the source
// of its mount in /proc/self/mountinfo (/dev/vda), else its numbers.
func fsDevice(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ""
	}
	want := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			// id parent major:minor root mountpoint opts... - type source super
			f := strings.Fields(line)
			if len(f) < 10 || f[2] != want {
				continue
			}
			for i, x := range f {
				if x == "-" && i+2 < len(f) {
					return f[i+2]
				}
			}
		}
	}
	return want
}
