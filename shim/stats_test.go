package shim

import (
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	runc "github.com/containerd/go-runc"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// testStats gives every field its own value, so a field mapped from the
// wrong source shows.
func testStats() *runc.Stats {
	raw := map[string]uint64{}
	for i, k := range []string{
		// v1 memory.stat
		"rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout",
		"pgfault", "pgmajfault", "inactive_anon", "active_anon", "inactive_file",
		"active_file", "unevictable", "hierarchical_memory_limit", "hierarchical_memsw_limit",
		"total_cache", "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty",
		"total_writeback", "total_pgpgin", "total_pgpgout", "total_pgfault", "total_pgmajfault",
		"total_inactive_anon", "total_active_anon", "total_inactive_file", "total_active_file",
		"total_unevictable",
		// v2 memory.stat, beyond the shared names
		"anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
	} {
		raw[k] = uint64(1000 + i)
	}
	return &runc.Stats{
		Pids: runc.Pids{Current: 11, Limit: 12},
		Cpu: runc.Cpu{
			Usage:      runc.CpuUsage{Total: 21_000_000, Kernel: 22_000, User: 23_000_000, Percpu: []uint64{24, 25}},
			Throttling: runc.Throttling{Periods: 31, ThrottledPeriods: 32, ThrottledTime: 33_000},
		},
		Memory: runc.Memory{
			Cache:     41,
			Usage:     runc.MemoryEntry{Limit: 51, Usage: 52, Max: 53, Failcnt: 54},
			Swap:      runc.MemoryEntry{Limit: 61, Usage: 62, Max: 63, Failcnt: 64},
			Kernel:    runc.MemoryEntry{Limit: 71, Usage: 72, Max: 73, Failcnt: 74},
			KernelTCP: runc.MemoryEntry{Limit: 81, Usage: 82, Max: 83, Failcnt: 84},
			Raw:       raw,
		},
		Hugetlb: map[string]runc.Hugetlb{"2MB": {Usage: 91, Max: 92, Failcnt: 93}},
		Blkio: runc.Blkio{
			IoServiceBytesRecursive: []runc.BlkioEntry{{Major: 8, Minor: 0, Op: "Read", Value: 101}, {Major: 8, Minor: 0, Op: "Write", Value: 102}, {Major: 8, Minor: 0, Op: "Total", Value: 203}},
			IoServicedRecursive:     []runc.BlkioEntry{{Major: 8, Minor: 0, Op: "Read", Value: 103}, {Major: 8, Minor: 0, Op: "Write", Value: 104}},
		},
	}
}

func TestStatsV1(t *testing.T) {
	want := &v1.Metrics{
		Pids: &v1.PidsStat{Current: 11, Limit: 12},
		CPU: &v1.CPUStat{
			Usage:      &v1.CPUUsage{Total: 21_000_000, Kernel: 22_000, User: 23_000_000, PerCPU: []uint64{24, 25}},
			Throttling: &v1.Throttle{Periods: 31, ThrottledPeriods: 32, ThrottledTime: 33_000},
		},
		Memory: &v1.MemoryStat{
			Cache: 41,
			RSS:   1000, RSSHuge: 1001, MappedFile: 1002, Dirty: 1003, Writeback: 1004,
			PgPgIn: 1005, PgPgOut: 1006, PgFault: 1007, PgMajFault: 1008,
			InactiveAnon: 1009, ActiveAnon: 1010, InactiveFile: 1011, ActiveFile: 1012,
			Unevictable: 1013, HierarchicalMemoryLimit: 1014, HierarchicalSwapLimit: 1015,
			TotalCache: 1016, TotalRSS: 1017, TotalRSSHuge: 1018, TotalMappedFile: 1019,
			TotalDirty: 1020, TotalWriteback: 1021, TotalPgPgIn: 1022, TotalPgPgOut: 1023,
			TotalPgFault: 1024, TotalPgMajFault: 1025, TotalInactiveAnon: 1026,
			TotalActiveAnon: 1027, TotalInactiveFile: 1028, TotalActiveFile: 1029,
			TotalUnevictable: 1030,
			Usage:            &v1.MemoryEntry{Limit: 51, Usage: 52, Max: 53, Failcnt: 54},
			Swap:             &v1.MemoryEntry{Limit: 61, Usage: 62, Max: 63, Failcnt: 64},
			Kernel:           &v1.MemoryEntry{Limit: 71, Usage: 72, Max: 73, Failcnt: 74},
			KernelTCP:        &v1.MemoryEntry{Limit: 81, Usage: 82, Max: 83, Failcnt: 84},
		},
		Hugetlb: []*v1.HugetlbStat{{Usage: 91, Max: 92, Failcnt: 93, Pagesize: "2MB"}},
		Blkio: &v1.BlkIOStat{
			IoServiceBytesRecursive: []*v1.BlkIOEntry{{Major: 8, Minor: 0, Op: "Read", Value: 101}, {Major: 8, Minor: 0, Op: "Write", Value: 102}, {Major: 8, Minor: 0, Op: "Total", Value: 203}},
			IoServicedRecursive:     []*v1.BlkIOEntry{{Major: 8, Minor: 0, Op: "Read", Value: 103}, {Major: 8, Minor: 0, Op: "Write", Value: 104}},
		},
	}
	if got := statsV1(testStats()); !proto.Equal(got, want) {
		t.Errorf("statsV1 =\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
	}
}

func TestStatsV2(t *testing.T) {
	want := &v2.Metrics{
		Pids: &v2.PidsStat{Current: 11, Limit: 12},
		CPU: &v2.CPUStat{
			// nanoseconds in, microseconds out
			UsageUsec: 21_000, UserUsec: 23_000, SystemUsec: 22,
			NrPeriods: 31, NrThrottled: 32, ThrottledUsec: 33,
		},
		Memory: &v2.MemoryStat{
			Anon: 1031, File: 1032, KernelStack: 1033, Slab: 1034, Sock: 1035, Shmem: 1036,
			FileMapped: 1037, FileDirty: 1038,
			InactiveAnon: 1009, ActiveAnon: 1010, InactiveFile: 1011, ActiveFile: 1012,
			Unevictable: 1013, Pgfault: 1007, Pgmajfault: 1008,
			Usage: 52, UsageLimit: 51, SwapUsage: 62, SwapLimit: 61,
		},
		Io: &v2.IOStat{Usage: []*v2.IOEntry{{Major: 8, Minor: 0, Rbytes: 101, Wbytes: 102, Rios: 103, Wios: 104}}},
	}
	if got := statsV2(testStats()); !proto.Equal(got, want) {
		t.Errorf("statsV2 =\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
	}
}

func TestStatsEmpty(t *testing.T) {
	// A runtime that reports nothing (no memory.stat, no hugetlb) must
	// not crash the conversion.
	s := &runc.Stats{}
	if m := statsV1(s); m.Memory.RSS != 0 || len(m.Hugetlb) != 0 {
		t.Errorf("statsV1 of nothing = %v", m)
	}
	if m := statsV2(s); m.Memory.Anon != 0 {
		t.Errorf("statsV2 of nothing = %v", m)
	}
}

func TestStatsToAny(t *testing.T) {
	// A fake memory cgroup: the OOM kill count comes from its files.
	memcg := t.TempDir()
	os.WriteFile(filepath.Join(memcg, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 0o644)
	os.WriteFile(filepath.Join(memcg, "memory.events"), []byte("low 0\nhigh 0\nmax 4\noom 3\noom_kill 3\n"), 0o644)
	a, err := statsToAny(testStats(), memcg)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wantURL string
		msg     proto.Message
		pids    func() uint64
		kills   func() uint64
	)
	if unifiedCgroups() {
		m := &v2.Metrics{}
		wantURL, msg, pids = "io.containerd.cgroups.v2.Metrics", m, func() uint64 { return m.Pids.GetCurrent() }
		kills = func() uint64 { return m.GetMemoryEvents().GetOomKill() }
	} else {
		m := &v1.Metrics{}
		wantURL, msg, pids = "io.containerd.cgroups.v1.Metrics", m, func() uint64 { return m.Pids.GetCurrent() }
		kills = func() uint64 { return m.GetMemoryOomControl().GetOomKill() }
	}
	if a.TypeUrl != wantURL {
		t.Fatalf("TypeUrl = %q, want %q (unified cgroups: %v)", a.TypeUrl, wantURL, unifiedCgroups())
	}
	if err := proto.Unmarshal(a.Value, msg); err != nil {
		t.Fatal(err)
	}
	if pids() != 11 {
		t.Errorf("decoded pids.current = %d, want 11", pids())
	}
	if kills() != 3 {
		t.Errorf("decoded OOM kills = %d, want 3", kills())
	}
	if _, err := statsToAny(testStats(), ""); err != nil {
		t.Errorf("without a memory cgroup: %v", err)
	}
}
