package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    target
		wantErr bool
	}{
		{in: "corral=/tmp/x/corral.sock:123", want: target{Name: "corral", Socket: "/tmp/x/corral.sock", PID: 123}},
		{in: "containerd=unix:///run/c.sock:9", want: target{Name: "containerd", Socket: "/run/c.sock", PID: 9}},
		{in: "corral=/tmp/x.sock", wantErr: true},
		{in: "=/tmp/x.sock:1", wantErr: true},
		{in: "corral=/tmp/x.sock:0", wantErr: true},
		{in: "corral=/tmp/x.sock:abc", wantErr: true},
	} {
		got, err := parseTarget(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("parseTarget(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || *got != tc.want {
			t.Errorf("parseTarget(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestIsShimOf(t *testing.T) {
	const sock = "/tmp/w/containerd.sock"
	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{[]string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address", sock}, true},
		{[]string{"/w/bin/containerd-shim-corral-v2", "-namespace", "k8s.io", "-id", "abc", "-address", "unix://" + sock, "-publish-binary", "corrald"}, true},
		{[]string{"/usr/bin/containerd-shim-runc-v2", "-address", "/other.sock"}, false},
		{[]string{"/usr/bin/containerd", "-address", sock}, false},
		{[]string{"/usr/bin/containerd-shim-runc-v2", "-address"}, false},
	} {
		cmdline := []byte(strings.Join(tc.argv, "\x00") + "\x00")
		if got := isShimOf(cmdline, sock); got != tc.want {
			t.Errorf("isShimOf(%q) = %v, want %v", tc.argv, got, tc.want)
		}
	}
}

func TestProcField(t *testing.T) {
	const rollup = "55d0c0a00000-7ffd [rollup]\nRss:                9876 kB\nPss:                1234 kB\nPss_Anon:            800 kB\n"
	if v, err := procField(strings.NewReader(rollup), "Pss:"); err != nil || v != 1234 {
		t.Errorf("Pss = %d, %v; want 1234", v, err)
	}
	if _, err := procField(strings.NewReader(rollup), "VmRSS:"); err == nil {
		t.Error("a missing key: want an error")
	}
}

func TestCritestMedians(t *testing.T) {
	data := []byte(`{"operationsNames":["CreatePod","StatusPod"],"numParallel":1,"datapoints":[
		{"operationsDurationsNs":[3000000,100]},
		{"operationsDurationsNs":[1000000,300]},
		{"operationsDurationsNs":[2000000,200]}]}`)
	got, err := critestMedians(data)
	if err != nil {
		t.Fatal(err)
	}
	if got["CreatePod"] != 2*time.Millisecond || got["StatusPod"] != 200 {
		t.Errorf("medians = %v", got)
	}
	if _, err := critestMedians([]byte(`{"operationsNames":["CreatePod"],"datapoints":[]}`)); err == nil {
		t.Error("no samples: want an error")
	}
}

func TestMedian(t *testing.T) {
	if got := median(nil); got != 0 {
		t.Errorf("median(nil) = %v", got)
	}
	if got := median([]time.Duration{5, 1, 3}); got != 3 {
		t.Errorf("odd: %v", got)
	}
	if got := median([]time.Duration{4, 1, 3, 2}); got != 2 {
		t.Errorf("even: %v, want 2 (the mean of 2 and 3, truncated)", got)
	}
}

// TestResults checks the ratios, the goals and the net figures from known
// raw figures, and that the table and the JSON carry them.
func TestResults(t *testing.T) {
	p := params{Pods: 2, ParallelPods: 4, Clients: 2, VersionRuns: 1, Critest: "critest", CritestN: 2}
	r := newResults(p, []*target{{Name: "corral"}, {Name: "containerd"}})
	ms := time.Millisecond
	r.fill(0, &figures{
		version: []time.Duration{20 * ms}, podUp: []time.Duration{100 * ms, 120 * ms}, runp: []time.Duration{50 * ms},
		stopp: []time.Duration{10 * ms, 10 * ms}, rmp: []time.Duration{10 * ms, 10 * ms}, stopRemoveAll: 40 * ms,
		daemon: memory{RSS: 20 << 10, PSS: 16 << 10}, shims: []memory{{RSS: 4096, PSS: 1024}, {RSS: 4096, PSS: 2048}},
		parallelStart: time.Second, parallelUp: 4, parallelRemove: time.Second,
		critest: map[string]time.Duration{"CreatePod": 30 * ms},
	})
	r.fill(1, &figures{
		version: []time.Duration{20 * ms}, podUp: []time.Duration{300 * ms, 320 * ms}, runp: []time.Duration{100 * ms},
		stopp: []time.Duration{50 * ms, 50 * ms}, rmp: []time.Duration{50 * ms, 50 * ms}, stopRemoveAll: 200 * ms,
		daemon: memory{RSS: 40 << 10, PSS: 40 << 10}, shims: []memory{{RSS: 8192, PSS: 3072}, {RSS: 8192, PSS: 3072}},
		parallelStart: 3 * time.Second, parallelUp: 4, parallelRemove: 2 * time.Second,
		critest: map[string]time.Duration{"CreatePod": 60 * ms},
	})
	r.finish()
	byKey := map[string]*row{}
	for _, rw := range r.Rows {
		byKey[rw.Key] = rw
	}
	check := func(key string, a, b, ratio float64, met *bool) {
		t.Helper()
		rw := byKey[key]
		if rw == nil {
			t.Fatalf("no row %s", key)
		}
		if math.Abs(rw.Values[0]-a) > 1e-9 || math.Abs(rw.Values[1]-b) > 1e-9 || math.Abs(rw.Ratio-ratio) > 1e-9 {
			t.Errorf("%s = %v ratio %v; want [%v %v] ratio %v", key, rw.Values, rw.Ratio, a, b, ratio)
		}
		if (met == nil) != (rw.Met == nil) || (met != nil && *met != *rw.Met) {
			t.Errorf("%s met = %v, want %v", key, rw.Met, met)
		}
	}
	yes := true
	// 110 - 3×20 = 50; 310 - 60 = 250.
	check("pod_start_net_ms", 50, 250, 0.2, &yes)
	check("stop_remove_total_s", 0.04, 0.2, 0.2, &yes)
	check("daemon_pss_mib", 16, 40, 0.4, &yes)
	check("shim_pss_mib", 1.5, 3, 0.5, &yes)
	check("parallel_start_s", 1, 3, 1.0/3, &yes)
	check("critest_createpod_ms", 30, 60, 0.5, nil)
	check("create_ms", math.NaN(), math.NaN(), 0, nil)

	var out bytes.Buffer
	r.print(&out)
	for _, want := range []string{"pod start net of 3 client start-ups", "≤ 0.50", "met", "corral", "containerd"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(`"key":"create_ms"`)) || !bytes.Contains(data, []byte(`"values":[null,null]`)) {
		t.Errorf("JSON: %s", data)
	}

	// One pod of the parallel start failed: that goal is not met, however fast.
	r.figs[0].parallelUp = 3
	r.Rows = nil
	r.finish()
	for _, rw := range r.Rows {
		if rw.Key == "parallel_start_s" && (rw.Met == nil || *rw.Met) {
			t.Errorf("parallel start with a pod down: met = %v, want false", rw.Met)
		}
	}
}
