package integration

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodSandboxMetrics: ListMetricDescriptors names cAdvisor's metrics
// with their label keys, and ListPodSandboxMetrics reports them for a pod
// on a bridge network: network counters that count the traffic the test
// sends into the pod, and a container's CPU, memory, limits, processes and
// writable layer, each agreeing with the cgroup files, /proc and the
// container's config. crictl metricdescs and metricsp show the same.
func TestPodSandboxMetrics(t *testing.T) {
	bridge := fmt.Sprintf("crm%06x", rand.IntN(1<<24))
	subnet := fmt.Sprintf("10.198.%d", 100+rand.IntN(100))
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	e := newPodEnvWithCNI(t, fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "corral-test-metrics", "plugins": [
		{"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
		 "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s.0/24"}]]}}]}`, bridge, subnet))

	descs, err := e.rt.ListMetricDescriptors(e.ctx(), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	labelKeys := map[string][]string{}
	for _, d := range descs.Descriptors {
		if d.Help == "" || len(d.LabelKeys) < 5 || d.LabelKeys[0] != "pod" {
			t.Errorf("descriptor %v", d)
		}
		labelKeys[d.Name] = d.LabelKeys
	}

	pod := e.podConfig("metrics")
	podID := e.runPod(t, pod)
	ps, _ := e.podStatus(t, podID)
	ip := ps.GetNetwork().GetIp()
	cfg := e.containerConfig("app", "sh", "-c", `x=$(head -c 8000000 /dev/zero | tr '\0' a); while true; do nc -l -p 8080 </dev/null >/dev/null; done`)
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 96 << 20}
	cid, pid := e.runContainer(t, podID, pod, cfg)
	ctrCg := cgroupDir(t, pid)

	// Traffic into the pod, so the counters have something to count.
	waitUntil(t, 15*time.Second, "the pod takes a connection", func() (bool, string) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, "8080"), time.Second)
		if err != nil {
			return false, err.Error()
		}
		defer c.Close()
		_, err = c.Write(make([]byte, 100_000))
		return err == nil, fmt.Sprint(err)
	})
	// What the pod's eth0 receives is what its veth peer on the host
	// sends: the host's counters bound the pod's from both sides.
	peer := vethPeer(t, pid)
	waitUntil(t, 10*time.Second, "the container holds its 8 MB", func() (bool, string) {
		ws := workingSet(t, "memory", ctrCg)
		return ws >= 8e6, fmt.Sprintf("working set %d", ws)
	})

	cpuBefore, txBefore := cgroupUint(t, "cpuacct", ctrCg, "cpuacct.usage"), sysfsUint(t, peer, "tx_bytes")
	resp, err := e.rt.ListPodSandboxMetrics(e.ctx(), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cpuAfter, txAfter := cgroupUint(t, "cpuacct", ctrCg, "cpuacct.usage"), sysfsUint(t, peer, "tx_bytes")
	var pm *runtimeapi.PodSandboxMetrics
	for _, m := range resp.PodMetrics {
		if m.PodSandboxId == podID {
			pm = m
		}
	}
	if pm == nil {
		t.Fatalf("no metrics for pod %s in %d pods", podID, len(resp.PodMetrics))
	}
	// first value of each metric, by name and by name plus its extra labels
	values := map[string]uint64{}
	check := func(m *runtimeapi.Metric, wantID string) {
		keys, ok := labelKeys[m.Name]
		if !ok {
			t.Errorf("metric %s has no descriptor", m.Name)
			return
		}
		if len(m.LabelValues) != len(keys) {
			t.Errorf("metric %s has labels %v for keys %v", m.Name, m.LabelValues, keys)
			return
		}
		if m.LabelValues[0] != "metrics" || m.LabelValues[1] != podNamespace || m.LabelValues[3] != wantID {
			t.Errorf("metric %s labels %v", m.Name, m.LabelValues)
		}
		key := strings.Join(append([]string{m.Name}, m.LabelValues[5:]...), "|")
		if _, seen := values[key]; !seen {
			values[key] = m.GetValue().GetValue()
		}
		if _, seen := values[m.Name]; !seen {
			values[m.Name] = m.GetValue().GetValue()
		}
	}
	for _, m := range pm.Metrics {
		check(m, podID)
	}
	if len(pm.ContainerMetrics) != 1 || pm.ContainerMetrics[0].ContainerId != cid {
		t.Fatalf("container metrics %v, want %s's", pm.ContainerMetrics, cid)
	}
	for _, m := range pm.ContainerMetrics[0].Metrics {
		check(m, cid)
		if m.LabelValues[2] != "app" || m.LabelValues[4] != e.busybox {
			t.Errorf("metric %s labels %v: want container app, image %s", m.Name, m.LabelValues, e.busybox)
		}
	}

	if v := values["container_network_receive_bytes_total|eth0"]; v < 100_000 || v < txBefore || v > txAfter {
		t.Errorf("eth0 received %d bytes; its host peer %s sent %d..%d, the test at least 100000", v, peer, txBefore, txAfter)
	}
	if values["container_network_receive_packets_total|eth0"] == 0 || values["container_network_transmit_packets_total|eth0"] == 0 {
		t.Errorf("no packets counted on eth0: %v", values)
	}
	if v := values["container_cpu_usage_seconds_total"]; v < cpuBefore/1e9 || v > cpuAfter/1e9+1 {
		t.Errorf("cpu usage %d s; the cgroup says %d..%d ns", v, cpuBefore, cpuAfter)
	}
	for name, want := range map[string]uint64{
		"container_spec_cpu_period":         100000,
		"container_spec_cpu_quota":          50000,
		"container_spec_cpu_shares":         512,
		"container_spec_memory_limit_bytes": 96 << 20,
	} {
		if got, ok := values[name]; !ok || got != want {
			t.Errorf("%s = %d (reported: %v), want %d", name, got, ok, want)
		}
	}
	if got := values["container_spec_memory_limit_bytes"]; fmt.Sprint(got) != fmt.Sprint(cgroupUint(t, "memory", ctrCg, "memory.limit_in_bytes")) {
		t.Errorf("memory limit %d differs from the cgroup's", got)
	}
	if ws, file := values["container_memory_working_set_bytes"], workingSet(t, "memory", ctrCg); float64(ws) < 0.9*float64(file) || float64(ws) > 1.1*float64(file) {
		t.Errorf("working set %d, the cgroup files say %d", ws, file)
	}
	if values["container_memory_rss"] < 8e6 {
		t.Errorf("rss %d; the shell holds 8 MB", values["container_memory_rss"])
	}
	if n := values["container_processes"]; n < 1 || n > 3 {
		t.Errorf("%d processes; the shell and maybe its nc", n)
	}
	if values["container_file_descriptors"] < 3 || values["container_threads"] < 1 {
		t.Errorf("fds %d, threads %d", values["container_file_descriptors"], values["container_threads"])
	}
	if v := values["container_start_time_seconds"]; v == 0 || time.Since(time.Unix(int64(v), 0)) > 5*time.Minute {
		t.Errorf("start time %d", v)
	}
	if values["container_fs_limit_bytes"] == 0 || values["container_fs_inodes_total"] == 0 {
		t.Errorf("no file system figures: %v", values)
	}
	for _, name := range []string{"container_memory_failures_total|pgfault|container", "container_oom_events_total", "container_threads_max", "container_memory_cache", "container_cpu_user_seconds_total", "container_last_seen"} {
		if _, ok := values[name]; !ok {
			t.Errorf("%s not reported", name)
		}
	}

	out := e.mustCrictl(t, "metricdescs")
	if !strings.Contains(out, "container_memory_working_set_bytes") {
		t.Errorf("crictl metricdescs:\n%s", out)
	}
	out = e.mustCrictl(t, "metricsp")
	if !strings.Contains(out, podID) || !strings.Contains(out, "container_cpu_usage_seconds_total") {
		t.Errorf("crictl metricsp lacks the pod or its metrics:\n%.2000s", out)
	}
	e.removePod(t, podID)
}

// vethPeer is the host end of the veth pair whose other end is eth0 in the
// network namespace of pid.
func vethPeer(t *testing.T, pid int) string {
	t.Helper()
	// Netlink, not sysfs: /sys shows the namespace of whoever mounted it.
	out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", pid), "ip", "-o", "link", "show", "eth0").Output()
	if err != nil {
		t.Fatalf("eth0's peer: %v", err)
	}
	// "3: eth0@if45: <...>"
	_, rest, ok := strings.Cut(string(out), "@if")
	want, _, _ := strings.Cut(rest, ":")
	if !ok || want == "" {
		t.Fatalf("eth0's peer: %q", out)
	}
	links, _ := filepath.Glob("/sys/class/net/*/ifindex")
	for _, l := range links {
		if b, err := os.ReadFile(l); err == nil && strings.TrimSpace(string(b)) == want {
			return filepath.Base(filepath.Dir(l))
		}
	}
	t.Fatalf("no host interface has ifindex %s", want)
	return ""
}

// sysfsUint reads a statistics counter of a host interface.
func sysfsUint(t *testing.T, iface, counter string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/net", iface, "statistics", counter))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
