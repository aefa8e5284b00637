package shim

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"
)

// statsToAny converts the runtime's statistics into the metrics types
// containerd's runc shim reports (io.containerd.cgroups.v1.Metrics or
// io.containerd.cgroups.v2.Metrics, by the host's cgroup mode), so clients
// written for containerd decode them unchanged.
//
// memcg is the container's memory cgroup directory ("" if unknown): the OOM
// kill count, which runc does not report, is read from it.
func statsToAny(s *runc.Stats, memcg string) (*anypb.Any, error) {
	if unifiedCgroups() {
		m := statsV2(s)
		if ev := readKV(filepath.Join(memcg, "memory.events"), memcg); ev != nil {
			m.MemoryEvents = &v2.MemoryEvents{Low: ev["low"], High: ev["high"], Max: ev["max"], Oom: ev["oom"], OomKill: ev["oom_kill"], OomGroupKill: ev["oom_group_kill"]}
		}
		return marshalAny(m)
	}
	m := statsV1(s)
	if oc := readKV(filepath.Join(memcg, "memory.oom_control"), memcg); oc != nil {
		m.MemoryOomControl = &v1.MemoryOomControl{OomKillDisable: oc["oom_kill_disable"], UnderOom: oc["under_oom"], OomKill: oc["oom_kill"]}
	}
	return marshalAny(m)
}

// readKV reads a cgroup file of "key value" lines; nil when dir is empty or
// the file cannot be read.
func readKV(path, dir string) map[string]uint64 {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	out := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

func unifiedCgroups() bool {
	var st unix.Statfs_t
	return unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

func statsV1(s *runc.Stats) *v1.Metrics {
	raw := s.Memory.Raw
	m := &v1.Metrics{
		Pids: &v1.PidsStat{Current: s.Pids.Current, Limit: s.Pids.Limit},
		CPU: &v1.CPUStat{
			Usage: &v1.CPUUsage{
				Total:  s.Cpu.Usage.Total,
				Kernel: s.Cpu.Usage.Kernel,
				User:   s.Cpu.Usage.User,
				PerCPU: s.Cpu.Usage.Percpu,
			},
			Throttling: &v1.Throttle{
				Periods:          s.Cpu.Throttling.Periods,
				ThrottledPeriods: s.Cpu.Throttling.ThrottledPeriods,
				ThrottledTime:    s.Cpu.Throttling.ThrottledTime,
			},
		},
		Memory: &v1.MemoryStat{
			Cache:                   s.Memory.Cache,
			RSS:                     raw["rss"],
			RSSHuge:                 raw["rss_huge"],
			MappedFile:              raw["mapped_file"],
			Dirty:                   raw["dirty"],
			Writeback:               raw["writeback"],
			PgPgIn:                  raw["pgpgin"],
			PgPgOut:                 raw["pgpgout"],
			PgFault:                 raw["pgfault"],
			PgMajFault:              raw["pgmajfault"],
			InactiveAnon:            raw["inactive_anon"],
			ActiveAnon:              raw["active_anon"],
			InactiveFile:            raw["inactive_file"],
			ActiveFile:              raw["active_file"],
			Unevictable:             raw["unevictable"],
			HierarchicalMemoryLimit: raw["hierarchical_memory_limit"],
			HierarchicalSwapLimit:   raw["hierarchical_memsw_limit"],
			TotalCache:              raw["total_cache"],
			TotalRSS:                raw["total_rss"],
			TotalRSSHuge:            raw["total_rss_huge"],
			TotalMappedFile:         raw["total_mapped_file"],
			TotalDirty:              raw["total_dirty"],
			TotalWriteback:          raw["total_writeback"],
			TotalPgPgIn:             raw["total_pgpgin"],
			TotalPgPgOut:            raw["total_pgpgout"],
			TotalPgFault:            raw["total_pgfault"],
			TotalPgMajFault:         raw["total_pgmajfault"],
			TotalInactiveAnon:       raw["total_inactive_anon"],
			TotalActiveAnon:         raw["total_active_anon"],
			TotalInactiveFile:       raw["total_inactive_file"],
			TotalActiveFile:         raw["total_active_file"],
			TotalUnevictable:        raw["total_unevictable"],
			Usage:                   memEntryV1(s.Memory.Usage),
			Swap:                    memEntryV1(s.Memory.Swap),
			Kernel:                  memEntryV1(s.Memory.Kernel),
			KernelTCP:               memEntryV1(s.Memory.KernelTCP),
		},
	}
	for size, h := range s.Hugetlb {
		m.Hugetlb = append(m.Hugetlb, &v1.HugetlbStat{Usage: h.Usage, Max: h.Max, Failcnt: h.Failcnt, Pagesize: size})
	}
	if b := s.Blkio; len(b.IoServiceBytesRecursive)+len(b.IoServicedRecursive) > 0 {
		m.Blkio = &v1.BlkIOStat{
			IoServiceBytesRecursive: blkioV1(b.IoServiceBytesRecursive),
			IoServicedRecursive:     blkioV1(b.IoServicedRecursive),
		}
	}
	return m
}

func blkioV1(in []runc.BlkioEntry) []*v1.BlkIOEntry {
	out := make([]*v1.BlkIOEntry, 0, len(in))
	for _, e := range in {
		out = append(out, &v1.BlkIOEntry{Op: e.Op, Major: e.Major, Minor: e.Minor, Value: e.Value})
	}
	return out
}

// ioV2 regroups runc's block I/O entries (one per device and operation,
// as on v1) into v2's one entry per device.
func ioV2(b runc.Blkio) *v2.IOStat {
	type dev struct{ major, minor uint64 }
	var order []dev
	byDev := map[dev]*v2.IOEntry{}
	entry := func(e runc.BlkioEntry) *v2.IOEntry {
		d := dev{e.Major, e.Minor}
		if byDev[d] == nil {
			byDev[d] = &v2.IOEntry{Major: e.Major, Minor: e.Minor}
			order = append(order, d)
		}
		return byDev[d]
	}
	for _, e := range b.IoServiceBytesRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			entry(e).Rbytes += e.Value
		case "write":
			entry(e).Wbytes += e.Value
		}
	}
	for _, e := range b.IoServicedRecursive {
		switch strings.ToLower(e.Op) {
		case "read":
			entry(e).Rios += e.Value
		case "write":
			entry(e).Wios += e.Value
		}
	}
	if len(order) == 0 {
		return nil
	}
	io := &v2.IOStat{}
	for _, d := range order {
		io.Usage = append(io.Usage, byDev[d])
	}
	return io
}

func memEntryV1(e runc.MemoryEntry) *v1.MemoryEntry {
	return &v1.MemoryEntry{Limit: e.Limit, Usage: e.Usage, Max: e.Max, Failcnt: e.Failcnt}
}

func statsV2(s *runc.Stats) *v2.Metrics {
	raw := s.Memory.Raw
	return &v2.Metrics{
		Pids: &v2.PidsStat{Current: s.Pids.Current, Limit: s.Pids.Limit},
		CPU: &v2.CPUStat{
			// runc reports nanoseconds; cgroup v2 metrics are microseconds.
			UsageUsec:     s.Cpu.Usage.Total / 1000,
			UserUsec:      s.Cpu.Usage.User / 1000,
			SystemUsec:    s.Cpu.Usage.Kernel / 1000,
			NrPeriods:     s.Cpu.Throttling.Periods,
			NrThrottled:   s.Cpu.Throttling.ThrottledPeriods,
			ThrottledUsec: s.Cpu.Throttling.ThrottledTime / 1000,
		},
		Memory: &v2.MemoryStat{
			Anon:         raw["anon"],
			File:         raw["file"],
			KernelStack:  raw["kernel_stack"],
			Slab:         raw["slab"],
			Sock:         raw["sock"],
			Shmem:        raw["shmem"],
			FileMapped:   raw["file_mapped"],
			FileDirty:    raw["file_dirty"],
			InactiveAnon: raw["inactive_anon"],
			ActiveAnon:   raw["active_anon"],
			InactiveFile: raw["inactive_file"],
			ActiveFile:   raw["active_file"],
			Unevictable:  raw["unevictable"],
			Pgfault:      raw["pgfault"],
			Pgmajfault:   raw["pgmajfault"],
			Usage:        s.Memory.Usage.Usage,
			UsageLimit:   s.Memory.Usage.Limit,
			SwapUsage:    s.Memory.Swap.Usage,
			SwapLimit:    s.Memory.Swap.Limit,
		},
		Io: ioV2(s.Blkio),
	}
}
