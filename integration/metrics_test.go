package integration

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// metricsAddress finds the endpoint corrald logs when it serves metrics on
// a port it picked.
var metricsAddress = regexp.MustCompile(`msg="serving metrics" address=(http://127\.0\.0\.1:[0-9]+/metrics)`)

// TestMetrics is issue 12's acceptance 1: after a pod runs, the Prometheus
// endpoint counts RunPodSandbox, CreateContainer, StartContainer and
// PullImage, in text that Prometheus' own parser reads. It also checks the
// rest of what the endpoint promises: pull bytes, pods, containers and
// shims by state from the store, recovery at start, CNI ADD and DEL.
func TestMetrics(t *testing.T) {
	e := newPodEnv(t)
	// A pod from before the restart, for recovery to find.
	before := e.podConfig("metrics-before")
	e.runPod(t, before)

	if err := e.d.stop(t, 10*time.Second); err != nil {
		t.Fatalf("corrald stop: %v", err)
	}
	f, err := os.OpenFile(e.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "[metrics]\naddress = %q\n", "127.0.0.1:0")
	f.Close()
	e.restart(t)
	var url string
	waitUntil(t, 10*time.Second, "corrald logs its metrics address", func() (bool, string) {
		m := metricsAddress.FindStringSubmatch(e.d.logs.String())
		if m == nil {
			return false, "not logged yet"
		}
		url = m[1]
		return true, ""
	})

	// Pull for real, so bytes arrive from the registry: the image goes
	// first (no container uses it yet, so its layers go too).
	if _, err := e.images.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: e.busybox}}); err != nil {
		t.Fatal(err)
	}
	resp, err := e.images.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: e.busybox}})
	if err != nil {
		t.Fatal(err)
	}
	e.busyboxID = resp.ImageRef
	podCfg := e.podConfig("metrics")
	podID := e.runPod(t, podCfg)
	e.runContainer(t, podID, podCfg, e.containerConfig("sleeper", "sleep", "1000"))
	// One call that fails, to be counted as an error with its code.
	if _, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: "0123456789ab"}); err == nil {
		t.Fatal("ContainerStatus of an unknown container succeeded")
	}

	fams := scrapeMetrics(t, url)
	for _, method := range []string{"RunPodSandbox", "CreateContainer", "StartContainer", "PullImage"} {
		if n := sample(fams, "corral_cri_request_duration_seconds", "method", method); n < 1 {
			t.Errorf("corral_cri_request_duration_seconds{method=%q} count = %v, want > 0", method, n)
		}
	}
	for _, c := range []struct {
		name, label, value string
		min, max           float64
	}{
		{"corral_cri_request_errors_total", "method", "ContainerStatus", 1, 1},
		{"corral_image_pulls_total", "result", "success", 1, 1},
		{"corral_image_pull_duration_seconds", "", "", 1, 1},
		{"corral_image_pull_bytes_total", "", "", 100_000, 1e9}, // busybox-static is ~1 MB
		{"corral_pods", "state", "ready", 2, 2},
		{"corral_pods", "state", "notready", 0, 0},
		{"corral_containers", "state", "running", 1, 1},
		{"corral_shims", "", "", 2, 2},
		{"corral_recovery_pods_total", "result", "reconnected", 1, 1},
		{"corral_recovery_duration_seconds", "", "", 1e-9, 10},
		{"corral_cni_operation_duration_seconds", "operation", "add", 1, 1},
	} {
		n := sample(fams, c.name, c.label, c.value)
		if n < c.min || n > c.max {
			t.Errorf("%s{%s=%q} = %v, want in [%v, %v]", c.name, c.label, c.value, n, c.min, c.max)
		}
	}

	// Pods going away show at the next scrape: the counts are read from the
	// store, not kept beside it.
	e.removePod(t, podID)
	fams = scrapeMetrics(t, url)
	if n := sample(fams, "corral_pods", "state", "ready"); n != 1 {
		t.Errorf("corral_pods{state=ready} after removing a pod = %v, want 1", n)
	}
	if n := sample(fams, "corral_containers", "state", "running"); n != 0 {
		t.Errorf("corral_containers{state=running} after removing the pod = %v, want 0", n)
	}
	if n := sample(fams, "corral_cni_operation_duration_seconds", "operation", "del"); n < 1 {
		t.Errorf("CNI DEL count = %v, want > 0", n)
	}
}

// scrapeMetrics GETs url and parses it with Prometheus' text parser.
func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("%s is not valid Prometheus text: %v", url, err)
	}
	return fams
}

// sample sums the values of family name's samples whose label has value
// (every sample when label is ""): a counter's or gauge's value, a
// histogram's count.
func sample(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	var sum float64
	for _, m := range fams[name].GetMetric() {
		if label != "" {
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == label && l.GetValue() == value
			}
			if !found {
				continue
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}
