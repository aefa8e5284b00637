package integration

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-runtime/corral/cri/spec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainerResources creates a container with every Linux resource
// the CRI carries, as the kubelet sends them for a Guaranteed pod pinned to
// a CPU, under corrald's pids_limit, and reads each back from the
// container's cgroup files and /proc on the host: CPU quota, period and
// shares, cpuset, memory limit, swap and hugepage limits where the node's
// cgroups have them, oom_score_adj and pids.max. The pids limit holds
// against a burst of forks. The unified (v2) map is applied on a v2 node
// and refused with FailedPrecondition on a v1 one.
func TestContainerResources(t *testing.T) {
	const pidsLimit = 32
	e := newPodEnvWithConfig(t, loopbackConflist, func(string) string {
		return fmt.Sprintf("pids_limit = %d\n", pidsLimit)
	})
	pod := e.podConfig("limits")
	podID := e.runPod(t, pod)
	features := spec.OSHost{}.Cgroups()

	res := &runtimeapi.LinuxContainerResources{
		CpuPeriod: 50000, CpuQuota: 20000, CpuShares: 300,
		CpusetCpus: "0", CpusetMems: "0",
		MemoryLimitInBytes: 40 << 20, MemorySwapLimitInBytes: 80 << 20,
		OomScoreAdj:    500,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}},
	}
	cfg := e.containerConfig("limited", "sleep", "1000")
	cfg.Linux.Resources = res
	cid, pid := e.runContainer(t, podID, pod, cfg)

	for _, c := range []struct{ controller, v1, v2, want string }{
		{"cpu", "cpu.cfs_quota_us", "cpu.max", "20000"},
		{"cpu", "cpu.cfs_period_us", "cpu.max", "50000"},
		{"cpu", "cpu.shares", "cpu.weight", "300"},
		{"cpuset", "cpuset.cpus", "cpuset.cpus", "0"},
		{"cpuset", "cpuset.mems", "cpuset.mems", "0"},
		{"memory", "memory.limit_in_bytes", "memory.max", fmt.Sprint(40 << 20)},
		{"pids", "pids.max", "pids.max", fmt.Sprint(pidsLimit)},
	} {
		got := cgroupFile(t, pid, c.controller, c.v1, c.v2)
		// v2 files hold "quota period" together, and the weight runc
		// derives from the shares.
		if got != c.want && !(features.Unified && (c.v2 == "cpu.max" && strings.Contains(got, c.want) || c.v2 == "cpu.weight" && got == "12")) {
			t.Errorf("%s = %q, want %s", c.v1, got, c.want)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", pid)); err != nil || strings.TrimSpace(string(b)) != "500" {
		t.Errorf("oom_score_adj = %q, %v; want 500", b, err)
	}
	if features.Swap {
		// memory+swap on v1; swap alone on v2.
		v1, v2 := fmt.Sprint(80<<20), fmt.Sprint(40<<20)
		if got := cgroupFile(t, pid, "memory", "memory.memsw.limit_in_bytes", "memory.swap.max"); got != v1 && got != v2 {
			t.Errorf("swap limit %q, want %s (v1) or %s (v2)", got, v1, v2)
		}
	} else {
		t.Log("the node's memory controller accounts no swap: the swap limit is left unset, as the spec says")
	}
	if features.Hugetlb {
		if got := cgroupFile(t, pid, "hugetlb", "hugetlb.2MB.limit_in_bytes", "hugetlb.2MB.max"); got != "0" {
			t.Errorf("2MB hugepage limit %q, want 0", got)
		}
	} else {
		t.Log("the node has no hugetlb controller: hugepage limits are skipped, as containerd does")
	}
	st, _ := e.containerStatus(t, cid)
	if r := st.GetResources().GetLinux(); r.GetCpusetCpus() != "0" || r.GetCpuQuota() != 20000 || r.GetMemoryLimitInBytes() != 40<<20 || r.GetOomScoreAdj() != 500 {
		t.Errorf("ContainerStatus resources %v", r)
	}

	// The kubelet's oom_score_adj for a Guaranteed pod's containers is
	// -997. Lowering it below corrald's own needs CAP_SYS_RESOURCE; without
	// it the container gets corrald's value instead of failing to start.
	gcfg := e.containerConfig("guaranteed", "sleep", "1000")
	gcfg.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: -997}
	gid, gpid := e.runContainer(t, podID, pod, gcfg)
	want := "-997"
	if procCapEff(t, e.d.cmd.Process.Pid)&(1<<24) == 0 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", e.d.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		want = strings.TrimSpace(string(b))
		t.Logf("corrald lacks CAP_SYS_RESOURCE: -997 is clamped to its own %s", want)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", gpid)); err != nil || strings.TrimSpace(string(b)) != want {
		t.Errorf("oom_score_adj of a container asking for -997 = %q, %v; want %s", b, err, want)
	}
	if st, _ := e.containerStatus(t, gid); st.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the container asking for -997 is %v", st.GetState())
	}

	// A burst of 2*pidsLimit background processes: the kernel refuses the
	// forks past the limit, and the cgroup never holds more than it.
	out, _ := e.execIn(t, cid, "sh", "-c", fmt.Sprintf(`for i in $(seq %d); do sleep 30 </dev/null >/dev/null 2>&1 & done 2>&1 | head -c 200; true`, 2*pidsLimit))
	if n := cgroupStatValue(t, pid, "pids", "pids.events", "max"); n == 0 {
		t.Errorf("pids.events counts no refused fork after %d forks under a limit of %d (sh said %q)", 2*pidsLimit, pidsLimit, out)
	}
	if cur, err := strconv.Atoi(cgroupFile(t, pid, "pids", "pids.current", "pids.current")); err != nil || cur > pidsLimit {
		t.Errorf("pids.current %d (%v), over the limit %d", cur, err, pidsLimit)
	}

	// The unified map: cgroup v2 files by name.
	ucfg := e.containerConfig("unified", "sleep", "1000")
	ucfg.Linux.Resources = &runtimeapi.LinuxContainerResources{Unified: map[string]string{"memory.high": fmt.Sprint(30 << 20)}}
	if features.Unified {
		_, upid := e.runContainer(t, podID, pod, ucfg)
		if got := cgroupFile(t, upid, "memory", "memory.high", "memory.high"); got != fmt.Sprint(30<<20) {
			t.Errorf("memory.high = %q, want %d", got, 30<<20)
		}
	} else {
		_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: ucfg, SandboxConfig: pod})
		if code, msg := grpcCode(err); code.String() != "FailedPrecondition" || !strings.Contains(msg, "unified") || !strings.Contains(msg, "cgroup v1") {
			t.Errorf("unified settings on a cgroup v1 node: %v; want FailedPrecondition saying so", err)
		}
	}
	e.removePod(t, podID)
}

// TestPodCgroupParent runs a pod under a cgroup_parent named the kubelet's
// way (cgroupfs: /kubepods/burstable/pod<uid>): its containers' cgroups
// are PARENT/<container id>, PodSandboxStats reads the parent, and
// RemovePodSandbox leaves the parent, which is the kubelet's, in place.
func TestPodCgroupParent(t *testing.T) {
	top := fmt.Sprintf("/corral-it-%d", os.Getpid())
	parent := top + "/burstable/pod-uid-1"
	// Registered first, so it runs after the env's cleanup has removed
	// the pods: the test plays the kubelet, which removes its own cgroups.
	t.Cleanup(func() { removeCgroupTree(top) })
	e := newPodEnv(t)
	pod := e.podConfig("kubepod")
	pod.Linux.CgroupParent = parent
	podID := e.runPod(t, pod)
	cid, pid := e.runContainer(t, podID, pod, e.containerConfig("app", "sh", "-c", "while :; do :; done"))
	if got := cgroupDir(t, pid); got != parent+"/"+cid {
		t.Errorf("container cgroup %s, want %s/%s", got, parent, cid)
	}
	waitUntil(t, 10*time.Second, "the pod's CPU usage in its parent cgroup", func() (bool, string) {
		before := cgroupUint(t, "cpuacct", parent, "cpuacct.usage")
		resp, err := e.rt.PodSandboxStats(e.ctx(), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podID})
		if err != nil {
			return false, err.Error()
		}
		got := resp.GetStats().GetLinux().GetCpu().GetUsageCoreNanoSeconds().GetValue()
		after := cgroupUint(t, "cpuacct", parent, "cpuacct.usage")
		return before > 0 && got >= before && got <= after, fmt.Sprintf("pod CPU %d, the parent cgroup %d before and %d after", got, before, after)
	})
	e.removePod(t, podID)
	if _, err := os.Stat(cgroupPath("memory", parent, "")); err != nil {
		t.Errorf("RemovePodSandbox removed the kubelet's cgroup %s: %v", parent, err)
	}
	if _, err := os.Stat(cgroupPath("memory", parent+"/"+cid, "")); err == nil {
		t.Errorf("the container's cgroup is still there after RemovePodSandbox")
	}
}

// removeCgroupTree removes a cgroup and the ones below it from every v1
// hierarchy and the v2 tree, deepest first.
func removeCgroupTree(p string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		var dirs []string
		filepath.WalkDir(filepath.Join(r, p), func(d string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				dirs = append(dirs, d)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}
