package cgroup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"google.golang.org/protobuf/proto"
)

func TestCheckDriver(t *testing.T) {
	withSystemd := t.TempDir()
	if err := os.MkdirAll(filepath.Join(withSystemd, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	without := t.TempDir()
	if err := os.MkdirAll(filepath.Join(without, "proc/1"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(without, "proc/1/comm"), []byte("tini\n"), 0o644)

	for _, tc := range []struct {
		driver, root string
		want         string // "" for no error, else a part of the message
	}{
		{DriverCgroupfs, without, ""},
		{DriverCgroupfs, withSystemd, ""},
		{DriverSystemd, withSystemd, ""},
		{DriverSystemd, without, `systemd is not running on this node (PID 1 is "tini"`},
		{"", without, "is neither"},
		{"systemd-user", withSystemd, "is neither"},
	} {
		err := checkDriver(tc.driver, tc.root)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s on %s: %v", tc.driver, tc.root, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s on %s: got %v, want an error with %q", tc.driver, tc.root, err, tc.want)
		}
	}
	if err := checkDriver(DriverSystemd, without); err == nil || !strings.Contains(err.Error(), `cgroup_driver = "cgroupfs"`) {
		t.Errorf("the error should name the fix: %v", err)
	}
}

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		driver, parent, want string
		bad                  bool
	}{
		{DriverCgroupfs, "/corral/abc", "/corral/abc", false},
		{DriverCgroupfs, "/kubepods/burstable/pod1234/", "/kubepods/burstable/pod1234", false},
		// A slice-looking path is just a path to the cgroupfs driver.
		{DriverCgroupfs, "/kubepods.slice/kubepods-pod1.slice", "/kubepods.slice/kubepods-pod1.slice", false},
		{DriverCgroupfs, "kubepods", "", true},
		{DriverCgroupfs, "/a/../b", "", true},
		{DriverCgroupfs, "", "", true},
		{DriverSystemd, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12.slice", false},
		{DriverSystemd, "kubepods-besteffort-pod3.slice", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod3.slice", false},
		{DriverSystemd, "corral-abc.slice", "/corral.slice/corral-abc.slice", false},
		{DriverSystemd, "system.slice", "/system.slice", false},
		{DriverSystemd, "-.slice", "/", false},
		{DriverSystemd, "/kubepods/burstable", "", true},
		{DriverSystemd, "a--b.slice", "", true},
		{DriverSystemd, "-a.slice", "", true},
		{DriverSystemd, ".slice", "", true},
	} {
		got, err := Path(tc.driver, tc.parent)
		if tc.bad {
			if err == nil {
				t.Errorf("Path(%s, %q) = %q, want an error", tc.driver, tc.parent, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Path(%s, %q) = %q, %v; want %q", tc.driver, tc.parent, got, err, tc.want)
		}
	}
}

func TestDefaultParent(t *testing.T) {
	if got := DefaultParent(DriverCgroupfs, "abc"); got != "/corral/abc" {
		t.Errorf("cgroupfs: %q", got)
	}
	got := DefaultParent(DriverSystemd, "abc")
	if got != "corral-abc.slice" {
		t.Errorf("systemd: %q", got)
	}
	if p, err := Path(DriverSystemd, got); err != nil || p != "/corral.slice/corral-abc.slice" {
		t.Errorf("systemd default expands to %q, %v", p, err)
	}
}

// writeFiles creates files (path → content) under root.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStatV2 reads a fake v2 tree the way a v2 host lays it out.
func TestStatV2(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"corral/pod/cpu.stat":            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 10\nnr_throttled 3\nthrottled_usec 40000\n",
		"corral/pod/memory.current":      "104857600\n",
		"corral/pod/memory.max":          "max\n",
		"corral/pod/memory.peak":         "209715200\n",
		"corral/pod/memory.swap.current": "4096\n",
		"corral/pod/memory.swap.max":     "1048576\n",
		"corral/pod/memory.stat":         "anon 50000000\nfile 40000000\nkernel_stack 1000\nslab 2000\nsock 3000\nfile_mapped 1234\ninactive_file 30000000\nactive_file 10000000\npgfault 777\npgmajfault 7\n",
		"corral/pod/memory.events":       "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n",
		"corral/pod/pids.current":        "4\n",
		"corral/pod/pids.max":            "max\n",
		"corral/pod/io.stat":             "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
		"corral/pod/cgroup.procs":        "10\n11\n",
		"corral/pod/ctr/cgroup.procs":    "12\n",
	})
	n := Node{Root: root, Unified: true}
	m, err := n.Stat("/corral/pod")
	if err != nil {
		t.Fatal(err)
	}
	if m.V2 == nil || m.V1 != nil {
		t.Fatalf("got %+v, want v2 statistics", m)
	}
	u := m.Usage()
	wantCPU := CPU{UsageNanos: 2500000000, UserNanos: 2000000000, SystemNanos: 500000000, Periods: 10, ThrottledPeriods: 3, ThrottledNanos: 40000000}
	if u.CPU == nil || *u.CPU != wantCPU {
		t.Errorf("cpu %+v, want %+v", u.CPU, wantCPU)
	}
	wantMem := Memory{
		Usage: 104857600, WorkingSet: 104857600 - 30000000, MaxUsage: 209715200, Limit: 0, SwapLimit: 1048576,
		RSS: 50000000, Cache: 40000000, MappedFile: 1234, Kernel: 6000, Swap: 4096,
		ActiveFile: 10000000, InactiveFile: 30000000, PageFaults: 777, MajorPageFaults: 7, Failcnt: 5, OOMKills: 1,
	}
	if u.Memory == nil || *u.Memory != wantMem {
		t.Errorf("memory %+v,\nwant %+v", u.Memory, wantMem)
	}
	if u.Pids == nil || *u.Pids != (Pids{Current: 4}) {
		t.Errorf("pids %+v", u.Pids)
	}
	if !slices.Equal(u.BlkIO, []BlkIO{{Major: 8, Minor: 0, ReadBytes: 4096, WriteBytes: 8192, Reads: 1, Writes: 2}}) {
		t.Errorf("blkio %+v", u.BlkIO)
	}
	pids, err := n.Procs("/corral/pod")
	if err != nil || !slices.Equal(pids, []int{10, 11, 12}) {
		t.Errorf("procs %v, %v", pids, err)
	}
	if _, err := n.Stat("/corral/gone"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing cgroup: %v, want fs.ErrNotExist", err)
	}
}

// TestStatV1 reads fake v1 hierarchies, one directory per controller with
// cpu and cpuacct apart, as on this project's hosts.
func TestStatV1(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"cpu", "cpuacct", "memory", "pids", "blkio", "freezer", "unified"} {
		if err := os.MkdirAll(filepath.Join(root, c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const p = "corral/pod"
	writeFiles(t, root, map[string]string{
		"cpu/" + p + "/cpu.stat":                           "nr_periods 10\nnr_throttled 3\nthrottled_time 40000000\n",
		"cpuacct/" + p + "/cpuacct.usage":                  "2500000000\n",
		"cpuacct/" + p + "/cpuacct.stat":                   "user 200\nsystem 50\n",
		"cpuacct/" + p + "/cpuacct.usage_percpu":           "1500000000 1000000000\n",
		"memory/" + p + "/memory.stat":                     "cache 40000000\nrss 50000000\ntotal_cache 40000000\ntotal_rss 50000000\ntotal_mapped_file 1234\ntotal_inactive_file 30000000\ntotal_active_file 10000000\ntotal_pgfault 777\ntotal_pgmajfault 7\n",
		"memory/" + p + "/memory.usage_in_bytes":           "104857600\n",
		"memory/" + p + "/memory.max_usage_in_bytes":       "209715200\n",
		"memory/" + p + "/memory.limit_in_bytes":           "9223372036854771712\n",
		"memory/" + p + "/memory.failcnt":                  "5\n",
		"memory/" + p + "/memory.oom_control":              "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
		"memory/" + p + "/memory.memsw.usage_in_bytes":     "104861696\n",
		"memory/" + p + "/memory.memsw.max_usage_in_bytes": "0\n",
		"memory/" + p + "/memory.memsw.limit_in_bytes":     "209715200\n",
		"memory/" + p + "/memory.memsw.failcnt":            "0\n",
		"memory/memory.memsw.usage_in_bytes":               "0\n",
		"pids/" + p + "/pids.current":                      "4\n",
		"pids/" + p + "/pids.max":                          "max\n",
		"pids/" + p + "/cgroup.procs":                      "10\n",
		"pids/" + p + "/ctr/cgroup.procs":                  "11\n12\n",
	})
	n := Node{Root: root}
	m, err := n.Stat("/" + p)
	if err != nil {
		t.Fatal(err)
	}
	if m.V1 == nil {
		t.Fatalf("got %+v, want v1 statistics", m)
	}
	u := m.Usage()
	if u.CPU == nil || u.CPU.UsageNanos != 2500000000 || u.CPU.Periods != 10 || u.CPU.ThrottledPeriods != 3 || u.CPU.ThrottledNanos != 40000000 {
		t.Errorf("cpu %+v", u.CPU)
	}
	if u.CPU != nil && (u.CPU.UserNanos == 0 || u.CPU.SystemNanos == 0) {
		t.Errorf("cpu user/system from cpuacct.stat: %+v", u.CPU)
	}
	wantMem := Memory{
		Usage: 104857600, WorkingSet: 104857600 - 30000000, MaxUsage: 209715200, Limit: 0, SwapLimit: 209715200,
		RSS: 50000000, Cache: 40000000, MappedFile: 1234, Swap: 4096,
		ActiveFile: 10000000, InactiveFile: 30000000, PageFaults: 777, MajorPageFaults: 7, Failcnt: 5, OOMKills: 1,
	}
	if u.Memory == nil || *u.Memory != wantMem {
		t.Errorf("memory %+v,\nwant %+v", u.Memory, wantMem)
	}
	if u.Pids == nil || *u.Pids != (Pids{Current: 4}) {
		t.Errorf("pids %+v", u.Pids)
	}
	pids, err := n.Procs("/" + p)
	if err != nil || !slices.Equal(pids, []int{10, 11, 12}) {
		t.Errorf("procs %v, %v", pids, err)
	}
	if _, err := n.Stat("/corral/gone"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing cgroup: %v, want fs.ErrNotExist", err)
	}
}

func TestDecode(t *testing.T) {
	b1, _ := proto.Marshal(&v1.Metrics{Memory: &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 100}, TotalInactiveFile: 30}})
	m, err := Decode("type.googleapis.com/"+TypeV1, b1)
	if err != nil || m.Usage().Memory.WorkingSet != 70 {
		t.Errorf("v1: %+v, %v", m, err)
	}
	b2, _ := proto.Marshal(&v2.Metrics{CPU: &v2.CPUStat{UsageUsec: 3}})
	m, err = Decode(TypeV2, b2)
	if err != nil || m.Usage().CPU.UsageNanos != 3000 {
		t.Errorf("v2: %+v, %v", m, err)
	}
	if _, err := Decode("io.containerd.cgroups.v3.Metrics", nil); err == nil {
		t.Error("an unknown type decoded")
	}
	if _, err := Decode(TypeV1, []byte{0xff, 0xff}); err == nil {
		t.Error("garbage decoded")
	}
	// Working set never underflows.
	if u := (Metrics{V1: &v1.Metrics{Memory: &v1.MemoryStat{Usage: &v1.MemoryEntry{Usage: 10}, TotalInactiveFile: 30}}}).Usage(); u.Memory.WorkingSet != 0 {
		t.Errorf("working set %d", u.Memory.WorkingSet)
	}
	if u := (Metrics{}).Usage(); u.CPU != nil || u.Memory != nil || u.Pids != nil {
		t.Errorf("empty metrics gave %+v", u)
	}
}

func TestRemove(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"memory/corral/pod/ctr", "cpu/corral/pod", "unified/corral/pod", "pids/corral/other"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A co-mounted pair shows up as a symbolic link too.
	os.Symlink("cpu", filepath.Join(root, "cpuacct"))
	n := Node{Root: root}
	if err := n.Remove("/corral/pod"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"memory/corral/pod", "cpu/corral/pod", "unified/corral/pod"} {
		if _, err := os.Stat(filepath.Join(root, d)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s is still there", d)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "pids/corral/other")); err != nil {
		t.Errorf("another cgroup went too: %v", err)
	}
	if err := n.Remove("/corral/pod"); err != nil {
		t.Errorf("removing again: %v", err)
	}
	for _, bad := range []string{"", "/", "corral", "/corral/../x"} {
		if err := n.Remove(bad); err == nil {
			t.Errorf("Remove(%q) succeeded", bad)
		}
	}

	v2root := t.TempDir()
	os.MkdirAll(filepath.Join(v2root, "corral/pod/ctr"), 0o755)
	if err := (Node{Root: v2root, Unified: true}).Remove("/corral/pod"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(v2root, "corral/pod")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("v2 cgroup still there")
	}
}
