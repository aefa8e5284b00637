package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestContainerResources(t *testing.T) {
	v1 := CgroupFeatures{}
	full := CgroupFeatures{Unified: true, Swap: true, Hugetlb: true}
	for _, tc := range []struct {
		name string
		r    *runtimeapi.LinuxContainerResources
		cg   CgroupFeatures
		want string // JSON of the spec's resources
	}{
		{name: "nil", r: nil, want: `{}`},
		{name: "zero means unset", r: &runtimeapi.LinuxContainerResources{}, want: `{}`},
		{
			name: "cpu",
			r:    &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, CpusetCpus: "0-3,6", CpusetMems: "0"},
			want: `{"cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0-3,6","mems":"0"}}`,
		},
		{name: "unlimited quota", r: &runtimeapi.LinuxContainerResources{CpuQuota: -1}, want: `{"cpu":{"quota":-1}}`},
		{name: "memory caps swap when swap is accounted", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}, cg: full, want: `{"memory":{"limit":67108864,"swap":67108864}}`},
		{name: "memory without swap accounting", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}, cg: v1, want: `{"memory":{"limit":67108864}}`},
		{name: "explicit swap", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 128 << 20}, cg: full, want: `{"memory":{"limit":67108864,"swap":134217728}}`},
		{name: "unlimited swap", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: -1}, cg: full, want: `{"memory":{"limit":67108864,"swap":-1}}`},
		{name: "swap dropped without accounting", r: &runtimeapi.LinuxContainerResources{MemorySwapLimitInBytes: -1}, cg: v1, want: `{}`},
		{
			name: "hugepages",
			r:    &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 1 << 21}, {PageSize: "1GB"}}},
			cg:   full, want: `{"hugepageLimits":[{"pageSize":"2MB","limit":2097152},{"pageSize":"1GB","limit":0}]}`,
		},
		{name: "hugepages skipped without hugetlb", r: &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 1}}}, cg: v1, want: `{}`},
		{name: "unified", r: &runtimeapi.LinuxContainerResources{Unified: map[string]string{"memory.high": "max", "cpu.weight": "100"}}, cg: full, want: `{"unified":{"cpu.weight":"100","memory.high":"max"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := containerResources("linux.resources.", tc.r, tc.cg)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(got)
			if string(b) != tc.want {
				t.Errorf("resources = %s\nwant        %s", b, tc.want)
			}
		})
	}
}

func TestContainerResourcesErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       *runtimeapi.LinuxContainerResources
		cg      CgroupFeatures
		is      func(error) bool
		wantErr string
	}{
		{name: "negative period", r: &runtimeapi.LinuxContainerResources{CpuPeriod: -1}, wantErr: "cpu_period"},
		{name: "quota below -1", r: &runtimeapi.LinuxContainerResources{CpuQuota: -2}, wantErr: "cpu_quota"},
		{name: "negative shares", r: &runtimeapi.LinuxContainerResources{CpuShares: -2}, wantErr: "cpu_shares"},
		{name: "bad cpuset", r: &runtimeapi.LinuxContainerResources{CpusetCpus: "0-"}, wantErr: "cpuset_cpus"},
		{name: "backwards cpuset range", r: &runtimeapi.LinuxContainerResources{CpusetMems: "3-1"}, wantErr: "cpuset_mems"},
		{name: "negative memory", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -1}, wantErr: "memory_limit_in_bytes"},
		{name: "swap below memory", r: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 100, MemorySwapLimitInBytes: 50}, wantErr: "memory_swap_limit_in_bytes"},
		{name: "swap below -1", r: &runtimeapi.LinuxContainerResources{MemorySwapLimitInBytes: -2}, wantErr: "memory_swap_limit_in_bytes"},
		{name: "page size with a path", r: &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "../2MB"}}}, wantErr: "hugepage_limits[0].page_size"},
		{name: "page size without unit", r: &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2048"}}}, wantErr: "hugepage_limits[0].page_size"},
		{name: "nil hugepage limit", r: &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{nil}}, wantErr: "hugepage_limits[0]"},
		{name: "unified key with a path", r: &runtimeapi.LinuxContainerResources{Unified: map[string]string{"../../memory.max": "1"}}, cg: CgroupFeatures{Unified: true}, wantErr: "unified"},
		{name: "unified key without controller", r: &runtimeapi.LinuxContainerResources{Unified: map[string]string{"max": "1"}}, cg: CgroupFeatures{Unified: true}, wantErr: "unified"},
		{name: "unified on cgroup v1", r: &runtimeapi.LinuxContainerResources{Unified: map[string]string{"memory.high": "1"}}, is: errdefs.IsFailedPrecondition, wantErr: "unified: cgroup v2 settings given, but this node runs cgroup v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := tc.is
			if is == nil {
				is = errdefs.IsInvalidArgument
			}
			_, err := containerResources("linux.resources.", tc.r, tc.cg)
			wantErr(t, err, is, "linux.resources."+tc.wantErr)
		})
	}
}

func TestCgroupsPath(t *testing.T) {
	for _, tc := range []struct {
		parent        string
		systemd       bool
		want, wantErr string
	}{
		{parent: "", want: ""},
		{parent: "", systemd: true, want: ""},
		{parent: "/kubepods/burstable/pod1", want: "/kubepods/burstable/pod1/c1"},
		// To the cgroupfs driver a slice-looking parent is a path.
		{parent: "/kubepods.slice/kubepods-pod1.slice", want: "/kubepods.slice/kubepods-pod1.slice/c1"},
		{parent: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice", systemd: true, want: "kubepods-burstable-pod1.slice:corral:c1"},
		{parent: "kubepods-pod1.slice", systemd: true, want: "kubepods-pod1.slice:corral:c1"},
		{parent: "kubepods-pod1.slice", wantErr: "absolute cgroupfs path"},
		{parent: "/kubepods/burstable", systemd: true, wantErr: "systemd slice"},
		{parent: "kubepods", wantErr: "absolute"},
		{parent: "/kubepods/../etc", wantErr: `".."`},
		{parent: "/a\x00", wantErr: "NUL"},
	} {
		got, err := cgroupsPath("f", tc.parent, "c1", tc.systemd)
		if tc.wantErr != "" {
			wantErr(t, err, errdefs.IsInvalidArgument, tc.wantErr)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("cgroupsPath(%q, systemd %v) = %q, %v; want %q", tc.parent, tc.systemd, got, err, tc.want)
		}
	}

	// The CRI's parent wins over the caller's default.
	opts := ctrOpts(newFakeHost())
	opts.CgroupParent = "/corral"
	s, err := Container(ctrConfig(), podConfig(), nil, opts)
	if err != nil || s.Linux.CgroupsPath != "/kubepods/besteffort/poduid-1/c1" {
		t.Errorf("cgroups path %q, %v", s.Linux.CgroupsPath, err)
	}
	p := podConfig()
	p.Linux.CgroupParent = ""
	if s, err = Container(ctrConfig(), p, nil, opts); err != nil || s.Linux.CgroupsPath != "/corral/c1" {
		t.Errorf("cgroups path %q, %v; want the caller's default parent", s.Linux.CgroupsPath, err)
	}
}

func TestOOMScoreAdj(t *testing.T) {
	res := func(adj int64) *runtimeapi.ContainerConfig {
		c := ctrConfig()
		c.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: adj}
		return c
	}
	for _, tc := range []struct {
		name     string
		restrict bool
		current  int
		adj      int64
		want     int
	}{
		{name: "unrestricted", adj: -500, want: -500},
		{name: "clamped up to corrald's", restrict: true, current: 0, adj: -500, want: 0},
		{name: "higher is kept", restrict: true, current: -100, adj: 900, want: 900},
		{name: "clamped to a negative current", restrict: true, current: -100, adj: -999, want: -100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost()
			h.oom = tc.current
			opts := ctrOpts(h)
			opts.RestrictOOMScoreAdj = tc.restrict
			s, err := Container(res(tc.adj), podConfig(), nil, opts)
			if err != nil {
				t.Fatal(err)
			}
			if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != tc.want {
				t.Errorf("oom_score_adj = %v, want %d", s.Process.OOMScoreAdj, tc.want)
			}
		})
	}

	// No resources: the container inherits the shim's score.
	s, err := Container(ctrConfig(), podConfig(), nil, ctrOpts(newFakeHost()))
	if err != nil || s.Process.OOMScoreAdj != nil {
		t.Errorf("oom_score_adj = %v, %v; want unset", s.Process.OOMScoreAdj, err)
	}

	_, err = Container(res(1001), podConfig(), nil, ctrOpts(newFakeHost()))
	wantErr(t, err, errdefs.IsInvalidArgument, "oom_score_adj")

	h := newFakeHost()
	h.oomErr = errors.New("no /proc")
	opts := ctrOpts(h)
	opts.RestrictOOMScoreAdj = true
	if _, err = Container(res(1), podConfig(), nil, opts); !errors.Is(err, h.oomErr) {
		t.Errorf("err = %v, want the host's", err)
	}
}

// TestPidsLimit: corrald's pids_limit becomes every container's pids.max,
// privileged ones too; 0 sets none, and a negative one is a bug of the
// caller's.
func TestPidsLimit(t *testing.T) {
	for _, tc := range []struct {
		limit      int64
		privileged bool
		want       int64 // 0: no pids settings at all
	}{
		{limit: 0},
		{limit: 1024, want: 1024},
		{limit: 50, privileged: true, want: 50},
	} {
		opts := ctrOpts(newFakeHost())
		opts.PidsLimit = tc.limit
		cfg, pod := ctrConfig(), podConfig()
		if tc.privileged {
			cfg.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{Privileged: true}
			pod.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
		}
		s, err := Container(cfg, pod, nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		got := s.Linux.Resources.Pids
		if tc.want == 0 && got != nil || tc.want != 0 && (got == nil || got.Limit == nil || *got.Limit != tc.want) {
			t.Errorf("limit %d, privileged %v: pids %+v, want %d", tc.limit, tc.privileged, got, tc.want)
		}
	}
	opts := ctrOpts(newFakeHost())
	opts.PidsLimit = -1
	if _, err := Container(ctrConfig(), podConfig(), nil, opts); err == nil || !strings.Contains(err.Error(), "PidsLimit") {
		t.Errorf("a negative PidsLimit: %v", err)
	}
}

func TestSandboxOOMScoreAdj(t *testing.T) {
	for _, tc := range []struct {
		restrict bool
		current  int
		want     int
	}{
		{restrict: false, want: -998},
		{restrict: true, current: 0, want: 0}, // this VM: no CAP_SYS_RESOURCE
		{restrict: true, current: -999, want: -998},
	} {
		h := newFakeHost()
		h.oom = tc.current
		opts := sandboxOpts(h)
		opts.RestrictOOMScoreAdj = tc.restrict
		s, err := Sandbox(podConfig(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if *s.Process.OOMScoreAdj != tc.want {
			t.Errorf("restrict=%v current=%d: oom_score_adj = %d, want %d", tc.restrict, tc.current, *s.Process.OOMScoreAdj, tc.want)
		}
	}
}

func TestDevices(t *testing.T) {
	c := ctrConfig()
	c.Devices = []*runtimeapi.Device{
		{HostPath: "/dev/fuse", ContainerPath: "/dev/fuse", Permissions: "rwm"},
		{HostPath: "/dev/dri", ContainerPath: "/dev/gpu", Permissions: "rw"},
	}
	s, err := Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, d := range s.Linux.Devices {
		paths = append(paths, d.Path)
	}
	if want := "[/dev/fuse /dev/gpu/card0 /dev/gpu/renderD128]"; fmt.Sprint(paths) != want {
		t.Errorf("devices %v, want %s", paths, want)
	}
	rules := s.Linux.Resources.Devices
	if len(rules) != 4 || rules[0].Allow || rules[0].Access != "rwm" {
		t.Fatalf("device rules %+v: want deny-all first, then one per device", rules)
	}
	if r := rules[2]; !r.Allow || r.Type != "c" || *r.Major != 226 || *r.Minor != 0 || r.Access != "rw" {
		t.Errorf("rule %+v", r)
	}

	for _, tc := range []struct {
		name    string
		d       *runtimeapi.Device
		wantErr string
	}{
		{name: "missing", d: &runtimeapi.Device{HostPath: "/dev/nope", Permissions: "r"}, wantErr: "does not exist"},
		{name: "bad permissions", d: &runtimeapi.Device{HostPath: "/dev/fuse", Permissions: "rwx"}, wantErr: "permissions"},
		{name: "no permissions", d: &runtimeapi.Device{HostPath: "/dev/fuse"}, wantErr: "permissions"},
		{name: "relative container path", d: &runtimeapi.Device{HostPath: "/dev/fuse", ContainerPath: "fuse", Permissions: "r"}, wantErr: "container_path"},
		{name: "relative host path", d: &runtimeapi.Device{HostPath: "fuse", Permissions: "r"}, wantErr: "host_path"},
		{name: "host root", d: &runtimeapi.Device{HostPath: "/", Permissions: "r"}, wantErr: "host_path"},
		{name: "nil", d: nil, wantErr: "devices[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ctrConfig()
			c.Devices = []*runtimeapi.Device{tc.d}
			_, err := Container(c, podConfig(), nil, ctrOpts(newFakeHost()))
			wantErr(t, err, errdefs.IsInvalidArgument, tc.wantErr)
		})
	}
}

// A device the host lookup reports outside the asked path is a bug in the
// lookup, never a device to hand out.
func TestDevicesOutsidePath(t *testing.T) {
	h := newFakeHost()
	h.devices["/dev/dri"] = []specs.LinuxDevice{{Path: "/dev/sda", Type: "b"}}
	c := ctrConfig()
	c.Devices = []*runtimeapi.Device{{HostPath: "/dev/dri", Permissions: "r"}}
	if _, err := Container(c, podConfig(), nil, ctrOpts(h)); err == nil {
		t.Error("a device outside the asked path was accepted")
	}
}
