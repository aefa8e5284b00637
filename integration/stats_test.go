package integration

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerStats reads a running container's CPU, memory and writable
// layer, lists stats by pod and label (a created container is listed too),
// and runs crictl stats.
func TestContainerStats(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("stats")
	podID := e.runPod(t, pod)
	cid, _ := e.runContainer(t, podID, pod, e.containerConfig("busy", "sh", "-c", "dd if=/dev/zero of=/blob bs=1M count=4; sleep 1000"))
	created := e.createContainer(t, podID, pod, e.containerConfig("idle", "sleep", "1000"))

	waitUntil(t, 10*time.Second, "the container wrote its 4 MiB", func() (bool, string) {
		resp, err := e.rt.ContainerStats(e.ctx(), &runtimeapi.ContainerStatsRequest{ContainerId: cid})
		if err != nil {
			return false, err.Error()
		}
		st := resp.Stats
		if st.Cpu.GetUsageCoreNanoSeconds().GetValue() == 0 || st.Memory.GetWorkingSetBytes() == nil || st.Memory.GetUsageBytes().GetValue() == 0 {
			return false, "no cpu or memory figures: " + st.String()
		}
		if st.WritableLayer.GetUsedBytes().GetValue() < 4<<20 {
			return false, "writable layer: " + st.WritableLayer.String()
		}
		return st.Attributes.GetId() == cid, ""
	})

	list, err := e.rt.ListContainerStats(e.ctx(), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: podID}})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]*runtimeapi.ContainerStats{}
	for _, s := range list.Stats {
		ids[s.Attributes.Id] = s
	}
	if len(ids) != 2 || ids[cid] == nil || ids[created] == nil {
		t.Errorf("stats of the pod list %d containers, want the running and the created one", len(ids))
	}
	if s := ids[created]; s != nil && s.Cpu != nil {
		t.Errorf("a created container has CPU figures: %v", s.Cpu)
	}
	byLabel, err := e.rt.ListContainerStats(e.ctx(), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{
		LabelSelector: map[string]string{"container-name": "busy"}}})
	if err != nil || len(byLabel.Stats) != 1 || byLabel.Stats[0].Attributes.Id != cid {
		t.Errorf("stats filtered by label: %v %v", byLabel, err)
	}
	e.mustCrictl(t, "stats", "--id", cid)
	e.removePod(t, podID)
}

// TestPodStatsCrictl is issue 8's acceptance 3: `crictl stats` and `crictl
// statsp` show CPU and memory for a busy container that both grow over
// time and agree, within 10%, with the cgroup files read on the host around
// each call (RSS and page faults too); the pod's figures cover its
// containers, its processes and its network.
func TestPodStatsCrictl(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("statsp")
	podID := e.runPod(t, pod)
	// A shell spinning on one core while another holds a 16 MB string
	// (RSS large enough that short-lived helpers do not move it by 10%)
	// and takes 2 MB more memory every half second, up to 48 MB: files in
	// the pod's /dev/shm, whose tmpfs pages are charged to the container
	// that writes them. Unlike a shell variable's copies, they never come
	// and go, so the container's memory only grows and every figure lies
	// between the readings around it.
	const step = 2000000
	cid, pid := e.runContainer(t, podID, pod, e.containerConfig("spin", "sh", "-c",
		fmt.Sprintf(`while :; do :; done & x=$(head -c 16000000 /dev/zero | tr '\0' a); i=0; while [ $i -lt 24 ]; do head -c %d /dev/zero > /dev/shm/m$i; i=$((i+1)); sleep 0.5; done; wait`, step)))
	ctrCg := cgroupDir(t, pid)
	podCg := filepath.Dir(ctrCg)
	if filepath.Base(ctrCg) != cid || filepath.Base(podCg) != podID {
		t.Errorf("container cgroup %s: want POD/CONTAINER, the pod's cgroup named after the pod", ctrCg)
	}
	// The first file comes after the string is made: the copies the shell
	// makes on the way, 16 MB more, are gone by then.
	waitUntil(t, 20*time.Second, "the container holds its 16 MB and wrote its first file", func() (bool, string) {
		_, code := e.execIn(t, cid, "test", "-e", "/dev/shm/m0")
		ws := workingSet(t, "memory", ctrCg)
		return code == 0 && ws >= 16e6, fmt.Sprintf("working set %d, first file there: %t", ws, code == 0)
	})

	// within checks that a value the runtime reported lies between the
	// cgroup's readings just before and just after the call, give or take
	// 10%.
	within := func(what string, got, before, after uint64) {
		t.Helper()
		lo, hi := min(before, after), max(before, after)
		if float64(got) < 0.9*float64(lo) || float64(got) > 1.1*float64(hi) {
			t.Errorf("%s: crictl says %d, the cgroup %d before and %d after", what, got, before, after)
		}
	}
	var lastCtrCPU, lastPodCPU, lastCtrMem, lastPodMem uint64
	for round := range 3 {
		// Wait for a step more than crictl last saw.
		waitUntil(t, 30*time.Second, "the container takes more memory", func() (bool, string) {
			ctr, pod := workingSet(t, "memory", ctrCg), workingSet(t, "memory", podCg)
			return ctr > lastCtrMem+step && pod > lastPodMem+step,
				fmt.Sprintf("working sets: container %d, crictl saw %d; pod %d, crictl saw %d", ctr, lastCtrMem, pod, lastPodMem)
		})

		cpuBefore, memBefore := cgroupUint(t, "cpuacct", ctrCg, "cpuacct.usage"), workingSet(t, "memory", ctrCg)
		rssBefore, faultsBefore := memoryStat(t, ctrCg, "total_rss", "anon"), memoryStat(t, ctrCg, "total_pgfault", "pgfault")
		var cs runtimeapi.ListContainerStatsResponse
		e.crictlJSON(t, &cs, "stats", "-o", "json", "--id", cid)
		cpuAfter, memAfter := cgroupUint(t, "cpuacct", ctrCg, "cpuacct.usage"), workingSet(t, "memory", ctrCg)
		rssAfter, faultsAfter := memoryStat(t, ctrCg, "total_rss", "anon"), memoryStat(t, ctrCg, "total_pgfault", "pgfault")
		if len(cs.Stats) != 1 {
			t.Fatalf("crictl stats --id %s listed %d containers", cid, len(cs.Stats))
		}
		c := cs.Stats[0]
		within("container CPU", c.GetCpu().GetUsageCoreNanoSeconds().GetValue(), cpuBefore, cpuAfter)
		within("container working set", c.GetMemory().GetWorkingSetBytes().GetValue(), memBefore, memAfter)
		within("container RSS", c.GetMemory().GetRssBytes().GetValue(), rssBefore, rssAfter)
		within("container page faults", c.GetMemory().GetPageFaults().GetValue(), faultsBefore, faultsAfter)
		if v := c.GetCpu().GetUsageCoreNanoSeconds().GetValue(); v <= lastCtrCPU {
			t.Errorf("round %d: container CPU %d, not more than the %d before", round, v, lastCtrCPU)
		} else {
			lastCtrCPU = v
		}
		t.Logf("round %d: container CPU %d ns, working set %d", round, c.GetCpu().GetUsageCoreNanoSeconds().GetValue(), c.GetMemory().GetWorkingSetBytes().GetValue())
		if v := c.GetMemory().GetWorkingSetBytes().GetValue(); v <= lastCtrMem {
			t.Errorf("round %d: container working set %d, not more than the %d before", round, v, lastCtrMem)
		} else {
			lastCtrMem = v
		}

		cpuBefore, memBefore = cgroupUint(t, "cpuacct", podCg, "cpuacct.usage"), workingSet(t, "memory", podCg)
		var ps runtimeapi.ListPodSandboxStatsResponse
		e.crictlJSON(t, &ps, "statsp", "-o", "json", "--id", podID)
		cpuAfter, memAfter = cgroupUint(t, "cpuacct", podCg, "cpuacct.usage"), workingSet(t, "memory", podCg)
		if len(ps.Stats) != 1 || ps.Stats[0].GetLinux() == nil {
			t.Fatalf("crictl statsp --id %s: %v", podID, &ps)
		}
		p := ps.Stats[0].GetLinux()
		within("pod CPU", p.GetCpu().GetUsageCoreNanoSeconds().GetValue(), cpuBefore, cpuAfter)
		within("pod working set", p.GetMemory().GetWorkingSetBytes().GetValue(), memBefore, memAfter)
		if v := p.GetCpu().GetUsageCoreNanoSeconds().GetValue(); v <= lastPodCPU || v < c.GetCpu().GetUsageCoreNanoSeconds().GetValue() {
			t.Errorf("round %d: pod CPU %d: not more than before (%d), or less than its container's", round, v, lastPodCPU)
		} else {
			lastPodCPU = v
		}
		if v := p.GetMemory().GetWorkingSetBytes().GetValue(); v <= lastPodMem {
			t.Errorf("round %d: pod working set %d, not more than the %d before", round, v, lastPodMem)
		} else {
			lastPodMem = v
		}
		if n := p.GetProcess().GetProcessCount().GetValue(); n < 2 {
			t.Errorf("pod process count %d; the pause process and the shell are in it", n)
		}
		if p.GetNetwork() == nil {
			t.Error("no network figures for a pod with a network namespace")
		}
		if len(p.GetContainers()) != 1 || p.GetContainers()[0].GetAttributes().GetId() != cid {
			t.Errorf("pod stats list containers %v, want %s", p.GetContainers(), cid)
		}
		if ps.Stats[0].GetAttributes().GetMetadata().GetName() != "statsp" {
			t.Errorf("pod attributes %v", ps.Stats[0].GetAttributes())
		}
	}
	// The tables a person reads: a CPU percentage near one busy core.
	out := e.mustCrictl(t, "statsp", "--id", podID)
	if !strings.Contains(out, "statsp") {
		t.Errorf("crictl statsp table:\n%s", out)
	}
	t.Logf("crictl statsp:\n%s", out)

	// A usage rate comes with the second reading of the same pod.
	resp, err := e.rt.PodSandboxStats(e.ctx(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	// Other work on the node may slow the shell down, but it never gets
	// more than one core.
	if cores := resp.GetStats().GetLinux().GetCpu().GetUsageNanoCores(); cores == nil || cores.GetValue() == 0 || cores.GetValue() > 1.1e9 {
		t.Errorf("pod uses %v nanocores; a shell spinning on one core should use up to 1e9", cores)
	}
	_, err = e.rt.PodSandboxStats(e.ctx(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: strings.Repeat("a", 64)})
	if code, _ := grpcCode(err); code.String() != "NotFound" {
		t.Errorf("stats of an unknown pod: %v, want NotFound", err)
	}

	e.removePod(t, podID)
	for _, c := range []string{"cpuacct", "memory"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", c, podCg)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the pod's %s cgroup is still there after RemovePodSandbox", c)
		}
	}
}

// cgroupDir is the path of pid's cgroup in the memory hierarchy (v1) or
// the v2 tree, as /proc/PID/cgroup names it.
func cgroupDir(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var unified string
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if slices.Contains(strings.Split(parts[1], ","), "memory") {
			return parts[2]
		}
		if parts[1] == "" {
			unified = parts[2]
		}
	}
	return unified
}

// cgroupPath is a file of the cgroup at dir: in controller's v1 hierarchy
// where it is mounted, else in the v2 tree.
func cgroupPath(controller, dir, file string) string {
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", controller)); err == nil {
		return filepath.Join("/sys/fs/cgroup", controller, dir, file)
	}
	return filepath.Join("/sys/fs/cgroup", dir, file)
}

// cgroupUint reads a number from a cgroup file; for cpuacct.usage on a v2
// host, the usage_usec of cpu.stat in nanoseconds.
func cgroupUint(t *testing.T, controller, dir, file string) uint64 {
	t.Helper()
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", controller)); err != nil && file == "cpuacct.usage" {
		return cgroupStat(t, cgroupPath("cpu", dir, "cpu.stat"), "usage_usec") * 1000
	}
	b, err := os.ReadFile(cgroupPath(controller, dir, file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cgroupStat reads key from a "key value" cgroup file.
func cgroupStat(t *testing.T, path, key string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return 0
}

// memoryStat reads a key of the memory.stat of the cgroup at dir: v1key
// on v1, v2key on v2.
func memoryStat(t *testing.T, dir, v1key, v2key string) uint64 {
	t.Helper()
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", "memory")); err != nil {
		return cgroupStat(t, cgroupPath("memory", dir, "memory.stat"), v2key)
	}
	return cgroupStat(t, cgroupPath("memory", dir, "memory.stat"), v1key)
}

// workingSet is cAdvisor's working set of the cgroup at dir, from the files:
// usage less the inactive file pages.
func workingSet(t *testing.T, controller, dir string) uint64 {
	t.Helper()
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", controller)); err != nil {
		usage := cgroupUint(t, controller, dir, "memory.current")
		return usage - min(usage, cgroupStat(t, cgroupPath(controller, dir, "memory.stat"), "inactive_file"))
	}
	usage := cgroupUint(t, controller, dir, "memory.usage_in_bytes")
	return usage - min(usage, cgroupStat(t, cgroupPath(controller, dir, "memory.stat"), "total_inactive_file"))
}
