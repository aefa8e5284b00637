package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestUpdateContainerResources resizes a running container's memory limit
// and CPU shares, as the kubelet's in-place resize does, and reads the new
// values from the container's cgroups on the host; bad input is refused.
func TestUpdateContainerResources(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("resize")
	podID := e.runPod(t, pod)
	cid, pid := e.runContainer(t, podID, pod, e.containerConfig("app", "sleep", "1000"))

	limit := int64(96 << 20)
	if _, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: cid, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: limit, CpuShares: 512},
	}); err != nil {
		t.Fatal(err)
	}
	mem, cpu := cgroupFile(t, pid, "memory", "memory.limit_in_bytes", "memory.max"), cgroupFile(t, pid, "cpu", "cpu.shares", "cpu.weight")
	if mem != fmt.Sprint(limit) {
		t.Errorf("memory limit %s, want %d", mem, limit)
	}
	if cpu != "512" && cpu != "20" { // v1 shares, or the v2 weight runc derives from 512 shares
		t.Errorf("cpu %s after setting 512 shares", cpu)
	}

	// Acceptance 2 of issue 8: the CPU quota and the memory limit of the
	// running container change, in its cgroup files and in its status.
	limit = 48 << 20
	if _, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: cid, Linux: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 25000, MemoryLimitInBytes: limit},
	}); err != nil {
		t.Fatal(err)
	}
	if mem := cgroupFile(t, pid, "memory", "memory.limit_in_bytes", "memory.max"); mem != fmt.Sprint(limit) {
		t.Errorf("memory limit %s, want %d", mem, limit)
	}
	quota, period := cgroupFile(t, pid, "cpu", "cpu.cfs_quota_us", "cpu.max"), cgroupFile(t, pid, "cpu", "cpu.cfs_period_us", "cpu.max")
	if quota != "25000" && quota != "25000 100000" {
		t.Errorf("cpu quota %q, want 25000", quota)
	}
	if period != "100000" && period != "25000 100000" {
		t.Errorf("cpu period %q, want 100000", period)
	}
	st, _ := e.containerStatus(t, cid)
	if r := st.GetResources().GetLinux(); r.GetCpuQuota() != 25000 || r.GetCpuPeriod() != 100000 || r.GetMemoryLimitInBytes() != limit || r.GetCpuShares() != 512 {
		t.Errorf("ContainerStatus resources %v, want quota 25000/100000, %d bytes and the 512 shares from before", r, limit)
	}
	// Processes that exceed the new quota are throttled: the quota is
	// live. Two loops, one per core, use a period's 25 ms in half the
	// time; a node busy with other work may still deny them that much
	// CPU for a while, so they run again until the kernel throttles them.
	expectWithin(t, 60*time.Second, "a busy loop under a quarter-core quota is throttled", func() (bool, string) {
		if _, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c",
			"timeout 1 sh -c 'while :; do :; done' & timeout 1 sh -c 'while :; do :; done'; wait; true"}, Timeout: 10}); err != nil {
			return false, err.Error()
		}
		n := cgroupStatValue(t, pid, "cpu", "cpu.stat", "nr_throttled")
		return n > 0, fmt.Sprintf("nr_throttled %d", n)
	})

	_, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: cid})
	if code, _ := grpcCode(err); code.String() != "InvalidArgument" {
		t.Errorf("update without resources: %v, want InvalidArgument", err)
	}
	_, err = e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: strings.Repeat("0", 64), Linux: &runtimeapi.LinuxContainerResources{}})
	if code, _ := grpcCode(err); code.String() != "NotFound" {
		t.Errorf("update of an unknown container: %v, want NotFound", err)
	}
	e.removePod(t, podID)
}

// cgroupFile reads a cgroup file of pid's cgroup for controller: the v1
// file where that hierarchy is mounted, else the v2 one.
func cgroupFile(t *testing.T, pid int, controller, v1file, v2file string) string {
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
		if parts[1] == "" {
			unified = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				if v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", parts[1], parts[2], v1file)); err == nil {
					return strings.TrimSpace(string(v))
				}
			}
		}
	}
	v, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", unified, v2file))
	if err != nil {
		t.Fatalf("no %s cgroup file for pid %d: %v", controller, pid, err)
	}
	return strings.TrimSpace(string(v))
}

// cgroupStatValue reads key from a "key value" file of pid's cgroup for
// controller.
func cgroupStatValue(t *testing.T, pid int, controller, file, key string) uint64 {
	t.Helper()
	for _, line := range strings.Split(cgroupFile(t, pid, controller, file, file), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			var n uint64
			fmt.Sscan(v, &n)
			return n
		}
	}
	t.Fatalf("%s of pid %d has no %s", file, pid, key)
	return 0
}
