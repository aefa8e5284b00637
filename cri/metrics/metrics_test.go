package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// scrape serves m on a loopback port and parses what GET /metrics returns
// with the Prometheus text parser, as a Prometheus server would.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	t.Helper()
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsServe(t *testing.T) {
	m := New()
	m.ObserveCall("/runtime.v1.RuntimeService/RunPodSandbox", 20*time.Millisecond, nil)
	m.ObserveCall("/runtime.v1.RuntimeService/RunPodSandbox", time.Second, status.Error(codes.InvalidArgument, "bad"))
	m.ObserveCall("/runtime.v1.ImageService/PullImage", time.Second, nil)
	m.ObservePull(2*time.Second, nil)
	m.ObservePull(time.Second, errors.New("unreachable"))
	m.AddPullBytes(1000)
	m.AddPullBytes(24)
	m.ObserveCNI(CNIAdd, 5*time.Millisecond, nil)
	m.ObserveCNI(CNIDel, 5*time.Millisecond, errors.New("plugin failed"))
	m.ObserveRecovery(1500 * time.Millisecond)
	m.RecoveredPod(RecoveredReconnected)
	m.RecoveredPod(RecoveredShimGone)
	m.RecoveredPod(RecoveredShimGone)
	if err := m.RegisterState(State{
		Pods:            func() (map[string]int, error) { return map[string]int{"ready": 2}, nil },
		Containers:      func() (map[string]int, error) { return map[string]int{"running": 3, "exited": 1}, nil },
		Shims:           func() int { return 2 },
		PodStates:       []string{"ready", "notready"},
		ContainerStates: []string{"created", "running", "exited", "unknown"},
	}); err != nil {
		t.Fatal(err)
	}

	fams := scrape(t, m)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"corral_cri_request_duration_seconds", map[string]string{"method": "RunPodSandbox"}, 2},
		{"corral_cri_request_duration_seconds", map[string]string{"method": "PullImage"}, 1},
		{"corral_cri_request_errors_total", map[string]string{"method": "RunPodSandbox", "code": "InvalidArgument"}, 1},
		{"corral_image_pull_duration_seconds", nil, 2},
		{"corral_image_pulls_total", map[string]string{"result": "success"}, 1},
		{"corral_image_pulls_total", map[string]string{"result": "error"}, 1},
		{"corral_image_pull_bytes_total", nil, 1024},
		{"corral_image_imports_total", map[string]string{"result": "success"}, 0},
		{"corral_cni_operation_duration_seconds", map[string]string{"operation": "add", "result": "success"}, 1},
		{"corral_cni_operation_duration_seconds", map[string]string{"operation": "del", "result": "error"}, 1},
		{"corral_recovery_duration_seconds", nil, 1.5},
		{"corral_recovery_pods_total", map[string]string{"result": "shim_gone"}, 2},
		{"corral_pods", map[string]string{"state": "ready"}, 2},
		{"corral_pods", map[string]string{"state": "notready"}, 0},
		{"corral_containers", map[string]string{"state": "running"}, 3},
		{"corral_containers", map[string]string{"state": "created"}, 0},
		{"corral_shims", nil, 2},
	} {
		got, ok := value(t, fams, c.name, c.labels)
		if !ok {
			t.Errorf("%s%v: missing", c.name, c.labels)
			continue
		}
		if got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if _, ok := value(t, fams, "corral_cri_request_errors_total", map[string]string{"method": "PullImage"}); ok {
		t.Error("a call that succeeded was counted as an error")
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the Go runtime's metrics are missing")
	}
	for name := range fams {
		if strings.HasPrefix(name, "corral_") && strings.Contains(name, "_seconds") && !strings.HasSuffix(name, "_seconds") {
			t.Errorf("%s: a unit belongs at the end of the name", name)
		}
	}
}

// A store that cannot be read drops the counts it would give, not the rest
// of the scrape.
func TestMetricsStateError(t *testing.T) {
	m := New()
	m.ObserveCall("Version", time.Millisecond, nil)
	m.RegisterState(State{
		Pods:       func() (map[string]int, error) { return nil, errors.New("store closed") },
		Containers: func() (map[string]int, error) { return map[string]int{"running": 1}, nil },
	})
	fams := scrape(t, m)
	if _, ok := fams["corral_pods"]; ok {
		t.Error("corral_pods served though the store failed")
	}
	if v, _ := value(t, fams, "corral_containers", map[string]string{"state": "running"}); v != 1 {
		t.Errorf("corral_containers{running} = %v, want 1", v)
	}
	if v, _ := value(t, fams, "corral_cri_request_duration_seconds", map[string]string{"method": "Version"}); v != 1 {
		t.Errorf("Version calls = %v, want 1", v)
	}
}

// Two instances count separately: no global registry.
func TestMetricsInstancesIndependent(t *testing.T) {
	a, b := New(), New()
	a.ObserveCall("Version", time.Millisecond, nil)
	if v, ok := value(t, scrape(t, b), "corral_cri_request_duration_seconds", map[string]string{"method": "Version"}); ok && v != 0 {
		t.Errorf("b sees a's call: %v", v)
	}
}

// A nil *Metrics is metrics turned off: every method is a no-op.
func TestMetricsNil(t *testing.T) {
	var m *Metrics
	m.ObserveCall("Version", time.Millisecond, nil)
	m.ObservePull(time.Second, nil)
	m.AddPullBytes(1)
	m.ObserveImport(nil)
	m.ObserveCNI(CNIAdd, time.Millisecond, nil)
	m.ObserveRecovery(time.Second)
	m.RecoveredPod(RecoveredNoShim)
	if err := m.RegisterState(State{}); err != nil {
		t.Fatal(err)
	}
	if m.Registry() != nil {
		t.Fatal("nil Metrics has a registry")
	}
}

func TestInterceptors(t *testing.T) {
	m := New()
	unary := m.UnaryServerInterceptor()
	_, err := unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/StopPodSandbox"},
		func(context.Context, any) (any, error) { return nil, status.Error(codes.NotFound, "no pod") })
	if status.Code(err) != codes.NotFound {
		t.Fatalf("interceptor changed the error: %v", err)
	}
	stream := m.StreamServerInterceptor()
	if err := stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/runtime.v1.RuntimeService/GetContainerEvents"},
		func(any, grpc.ServerStream) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, m)
	if v, _ := value(t, fams, "corral_cri_request_errors_total", map[string]string{"method": "StopPodSandbox", "code": "NotFound"}); v != 1 {
		t.Errorf("StopPodSandbox NotFound = %v, want 1", v)
	}
	if v, _ := value(t, fams, "corral_cri_request_duration_seconds", map[string]string{"method": "GetContainerEvents"}); v != 1 {
		t.Errorf("GetContainerEvents = %v, want 1", v)
	}
}
