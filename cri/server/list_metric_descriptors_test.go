package server

import (
	"slices"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestMetricDescriptors(t *testing.T) {
	env := newTestEnv(t, testConfig(t))
	resp, err := env.runtime.ListMetricDescriptors(ctxTimeout(t), &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range resp.Descriptors {
		if seen[d.Name] {
			t.Errorf("%s described twice", d.Name)
		}
		seen[d.Name] = true
		if d.Help == "" || !slices.Equal(d.LabelKeys[:5], baseLabels) {
			t.Errorf("descriptor %v", d)
		}
	}
	// The metrics the kubelet's cAdvisor endpoint has always had, as
	// critest (cri-tools v1.37) checks them, less those no runtime reports
	// yet (hugetlb, pressure, memory reservation, ulimits).
	for _, name := range []string{
		"container_blkio_device_usage_total", "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
		"container_cpu_cfs_throttled_seconds_total", "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
		"container_cpu_user_seconds_total", "container_file_descriptors", "container_fs_inodes_free", "container_fs_inodes_total",
		"container_fs_limit_bytes", "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
		"container_fs_writes_bytes_total", "container_fs_writes_total", "container_last_seen", "container_memory_cache",
		"container_memory_failcnt", "container_memory_failures_total", "container_memory_kernel_usage", "container_memory_mapped_file",
		"container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap", "container_memory_usage_bytes",
		"container_memory_working_set_bytes", "container_network_receive_bytes_total", "container_network_receive_errors_total",
		"container_network_receive_packets_dropped_total", "container_network_receive_packets_total", "container_network_transmit_bytes_total",
		"container_network_transmit_errors_total", "container_network_transmit_packets_dropped_total", "container_network_transmit_packets_total",
		"container_oom_events_total", "container_processes", "container_sockets", "container_spec_cpu_period", "container_spec_cpu_shares",
		"container_spec_memory_limit_bytes", "container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads",
		"container_threads_max",
	} {
		if !seen[name] {
			t.Errorf("%s is not described", name)
		}
	}
}

func TestMetricSetLabels(t *testing.T) {
	m := metricSet{labels: []string{"p", "ns", "c", "id", "img"}}
	m.add(mCPUUsage, 3)
	m.add(mNetRxBytes, 4, "eth0")
	m.add(mMemFailures, 5, "pgfault", "container")
	m.add(mNetRxBytes, 6) // a missing label value: refused
	if len(m.out) != 3 {
		t.Fatalf("got %d metrics: %v", len(m.out), m.out)
	}
	for _, x := range m.out {
		var d metricDesc
		for _, c := range allMetricDescs {
			if c.name == x.Name {
				d = c
			}
		}
		if len(x.LabelValues) != len(baseLabels)+len(d.extra) || x.MetricType != d.typ {
			t.Errorf("%s: labels %v, type %v", x.Name, x.LabelValues, x.MetricType)
		}
	}
	if v := m.out[1].LabelValues; v[5] != "eth0" {
		t.Errorf("interface label %v", v)
	}
	// The labels are copied: a later change to the set's labels does not
	// reach metrics already made.
	m.labels[0] = "changed"
	if m.out[0].LabelValues[0] != "p" {
		t.Error("labels shared between metrics")
	}
}
