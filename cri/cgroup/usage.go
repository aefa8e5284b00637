package cgroup

// Usage is a cgroup's usage in the terms the CRI and cAdvisor report, the
// same for both cgroup versions. A part is nil where the statistics have
// no numbers for it (its controller is not mounted).
type Usage struct {
	CPU    *CPU
	Memory *Memory
	Pids   *Pids
	// BlkIO is the bytes and operations by device; empty without the
	// blkio (v1) or io (v2) controller.
	BlkIO []BlkIO
}

// CPU is the CPU time a cgroup used. Times are in nanoseconds.
type CPU struct {
	UsageNanos, UserNanos, SystemNanos uint64
	// Periods and ThrottledPeriods count CFS enforcement intervals, and
	// ThrottledNanos the time throttled: zero without a quota.
	Periods, ThrottledPeriods, ThrottledNanos uint64
}

// Memory is a cgroup's memory, in bytes unless named otherwise.
type Memory struct {
	// Usage is all the memory charged to the cgroup, page cache included;
	// WorkingSet is Usage less the inactive file pages, which the kernel
	// reclaims first: what the kubelet evicts on (cAdvisor's definition).
	Usage, WorkingSet uint64
	// MaxUsage is the highest Usage seen (v1 max_usage_in_bytes, v2
	// memory.peak); zero where the kernel does not keep it.
	MaxUsage uint64
	// Limit is the memory limit, zero when unlimited. SwapLimit is the
	// limit of memory and swap together on v1 (memsw), of swap on v2,
	// zero when unlimited or not accounted.
	Limit, SwapLimit uint64
	// RSS is anonymous memory (v1 total_rss, v2 anon); Cache is the page
	// cache; MappedFile the mapped files; Kernel kernel memory; Swap swap.
	RSS, Cache, MappedFile, Kernel, Swap uint64
	// ActiveFile and InactiveFile split the file pages.
	ActiveFile, InactiveFile uint64
	// PageFaults and MajorPageFaults count faults.
	PageFaults, MajorPageFaults uint64
	// Failcnt counts the times the usage hit the limit (v1 failcnt, v2
	// the "max" memory event).
	Failcnt uint64
	// OOMKills counts the processes the OOM killer ended in the cgroup.
	OOMKills uint64
}

// Pids is a cgroup's task count and limit (zero: no limit).
type Pids struct {
	Current, Limit uint64
}

// BlkIO is the I/O of a cgroup on one block device.
type BlkIO struct {
	Major, Minor                         uint64
	ReadBytes, WriteBytes, Reads, Writes uint64
}

// unlimited: cgroup v1 reports "no limit" as the largest page-aligned
// int64, v2 as "max", which the library reads as the largest uint64. Both
// are far above any real memory size.
const unlimited = 1 << 62

func limit(v uint64) uint64 {
	if v >= unlimited {
		return 0
	}
	return v
}

func sub(a, b uint64) uint64 {
	return a - min(a, b)
}

// Usage converts the statistics.
func (m Metrics) Usage() Usage {
	switch {
	case m.V1 != nil:
		return usageV1(m)
	case m.V2 != nil:
		return usageV2(m)
	}
	return Usage{}
}

func usageV1(m Metrics) Usage {
	var u Usage
	s := m.V1
	if c := s.GetCPU(); c != nil && c.GetUsage() != nil {
		u.CPU = &CPU{
			UsageNanos:       c.GetUsage().GetTotal(),
			UserNanos:        c.GetUsage().GetUser(),
			SystemNanos:      c.GetUsage().GetKernel(),
			Periods:          c.GetThrottling().GetPeriods(),
			ThrottledPeriods: c.GetThrottling().GetThrottledPeriods(),
			ThrottledNanos:   c.GetThrottling().GetThrottledTime(),
		}
	}
	if mem := s.GetMemory(); mem != nil && mem.GetUsage() != nil {
		usage := mem.GetUsage().GetUsage()
		// The total_ counters include the children: a pod's containers.
		u.Memory = &Memory{
			Usage:           usage,
			WorkingSet:      sub(usage, mem.GetTotalInactiveFile()),
			MaxUsage:        mem.GetUsage().GetMax(),
			Limit:           limit(mem.GetUsage().GetLimit()),
			SwapLimit:       limit(mem.GetSwap().GetLimit()),
			RSS:             mem.GetTotalRSS(),
			Cache:           mem.GetTotalCache(),
			MappedFile:      mem.GetTotalMappedFile(),
			Kernel:          mem.GetKernel().GetUsage(),
			ActiveFile:      mem.GetTotalActiveFile(),
			InactiveFile:    mem.GetTotalInactiveFile(),
			PageFaults:      mem.GetTotalPgFault(),
			MajorPageFaults: mem.GetTotalPgMajFault(),
			Failcnt:         mem.GetUsage().GetFailcnt(),
			OOMKills:        s.GetMemoryOomControl().GetOomKill(),
		}
		// memsw is memory and swap together.
		if sw := mem.GetSwap().GetUsage(); sw > 0 {
			u.Memory.Swap = sub(sw, usage)
		}
	}
	if p := s.GetPids(); p != nil {
		u.Pids = &Pids{Current: p.GetCurrent(), Limit: limit(p.GetLimit())}
	}
	type key struct{ major, minor uint64 }
	byDev := map[key]*BlkIO{}
	var order []key
	dev := func(major, minor uint64) *BlkIO {
		k := key{major, minor}
		if b := byDev[k]; b != nil {
			return b
		}
		byDev[k] = &BlkIO{Major: major, Minor: minor}
		order = append(order, k)
		return byDev[k]
	}
	for _, e := range s.GetBlkio().GetIoServiceBytesRecursive() {
		switch e.GetOp() {
		case "Read":
			dev(e.GetMajor(), e.GetMinor()).ReadBytes += e.GetValue()
		case "Write":
			dev(e.GetMajor(), e.GetMinor()).WriteBytes += e.GetValue()
		}
	}
	for _, e := range s.GetBlkio().GetIoServicedRecursive() {
		switch e.GetOp() {
		case "Read":
			dev(e.GetMajor(), e.GetMinor()).Reads += e.GetValue()
		case "Write":
			dev(e.GetMajor(), e.GetMinor()).Writes += e.GetValue()
		}
	}
	for _, k := range order {
		u.BlkIO = append(u.BlkIO, *byDev[k])
	}
	return u
}

func usageV2(m Metrics) Usage {
	var u Usage
	s := m.V2
	if c := s.GetCPU(); c != nil {
		u.CPU = &CPU{
			UsageNanos:       c.GetUsageUsec() * 1000,
			UserNanos:        c.GetUserUsec() * 1000,
			SystemNanos:      c.GetSystemUsec() * 1000,
			Periods:          c.GetNrPeriods(),
			ThrottledPeriods: c.GetNrThrottled(),
			ThrottledNanos:   c.GetThrottledUsec() * 1000,
		}
	}
	if mem := s.GetMemory(); mem != nil {
		usage := mem.GetUsage()
		u.Memory = &Memory{
			Usage:           usage,
			WorkingSet:      sub(usage, mem.GetInactiveFile()),
			MaxUsage:        mem.GetMaxUsage(),
			Limit:           limit(mem.GetUsageLimit()),
			SwapLimit:       limit(mem.GetSwapLimit()),
			RSS:             mem.GetAnon(),
			Cache:           mem.GetFile(),
			MappedFile:      mem.GetFileMapped(),
			Kernel:          mem.GetKernelStack() + mem.GetSlab() + mem.GetSock(),
			Swap:            mem.GetSwapUsage(),
			ActiveFile:      mem.GetActiveFile(),
			InactiveFile:    mem.GetInactiveFile(),
			PageFaults:      mem.GetPgfault(),
			MajorPageFaults: mem.GetPgmajfault(),
			Failcnt:         s.GetMemoryEvents().GetMax(),
			OOMKills:        s.GetMemoryEvents().GetOomKill(),
		}
	}
	if p := s.GetPids(); p != nil {
		u.Pids = &Pids{Current: p.GetCurrent(), Limit: limit(p.GetLimit())}
	}
	for _, e := range s.GetIo().GetUsage() {
		u.BlkIO = append(u.BlkIO, BlkIO{
			Major: e.GetMajor(), Minor: e.GetMinor(),
			ReadBytes: e.GetRbytes(), WriteBytes: e.GetWbytes(), Reads: e.GetRios(), Writes: e.GetWios(),
		})
	}
	return u
}
