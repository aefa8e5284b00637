package server

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The label keys of the CRI metrics: cAdvisor's, which the kubelet's
// /metrics/cadvisor endpoint has always had, so dashboards keep working
// when the kubelet takes its metrics from the runtime. A pod-level metric
// has an empty container and image.
var (
	baseLabels      = []string{"pod", "namespace", "container", "id", "image"}
	interfaceLabels = []string{"interface"}
	deviceLabels    = []string{"device"}
)

// metricDesc is one metric: its cAdvisor name, help and type, and the
// labels it has beyond baseLabels.
type metricDesc struct {
	name, help string
	typ        runtimeapi.MetricType
	extra      []string
}

// The metrics corrald reports. Every value comes from the cgroup (through
// the shim's statistics or corrald's own reading of a pod's cgroup),
// /proc, statfs, or the container's spec and record; a metric whose
// source has nothing for a container is left out for it, never zero-filled.
// Values are integers because the CRI's are: seconds are whole seconds.
var (
	mCPUUser          = metricDesc{"container_cpu_user_seconds_total", "Cumulative user CPU time consumed in seconds.", counter, nil}
	mCPUSystem        = metricDesc{"container_cpu_system_seconds_total", "Cumulative system CPU time consumed in seconds.", counter, nil}
	mCPUUsage         = metricDesc{"container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", counter, nil}
	mCPUPeriods       = metricDesc{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", counter, nil}
	mCPUThrottled     = metricDesc{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", counter, nil}
	mCPUThrottledSecs = metricDesc{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", counter, nil}
	mMemCache         = metricDesc{"container_memory_cache", "Number of bytes of page cache memory.", gauge, nil}
	mMemRSS           = metricDesc{"container_memory_rss", "Size of RSS in bytes.", gauge, nil}
	mMemKernel        = metricDesc{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", gauge, nil}
	mMemMapped        = metricDesc{"container_memory_mapped_file", "Size of memory mapped files in bytes.", gauge, nil}
	mMemSwap          = metricDesc{"container_memory_swap", "Container swap usage in bytes.", gauge, nil}
	mMemFailcnt       = metricDesc{"container_memory_failcnt", "Number of memory usage hits limits.", counter, nil}
	mMemUsage         = metricDesc{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", gauge, nil}
	mMemMaxUsage      = metricDesc{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", gauge, nil}
	mMemWorkingSet    = metricDesc{"container_memory_working_set_bytes", "Current working set in bytes.", gauge, nil}
	mMemActiveFile    = metricDesc{"container_memory_total_active_file_bytes", "Current total active file in bytes.", gauge, nil}
	mMemInactiveFile  = metricDesc{"container_memory_total_inactive_file_bytes", "Current total inactive file in bytes.", gauge, nil}
	mMemFailures      = metricDesc{"container_memory_failures_total", "Cumulative count of memory allocation failures.", counter, []string{"failure_type", "scope"}}
	mOOMEvents        = metricDesc{"container_oom_events_total", "Count of out of memory events observed for the container.", counter, nil}
	mFsInodesFree     = metricDesc{"container_fs_inodes_free", "Number of available Inodes.", gauge, deviceLabels}
	mFsInodesTotal    = metricDesc{"container_fs_inodes_total", "Number of Inodes.", gauge, deviceLabels}
	mFsLimit          = metricDesc{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", gauge, deviceLabels}
	mFsUsage          = metricDesc{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", gauge, deviceLabels}
	mFsReadBytes      = metricDesc{"container_fs_reads_bytes_total", "Cumulative count of bytes read.", counter, deviceLabels}
	mFsReads          = metricDesc{"container_fs_reads_total", "Cumulative count of reads completed.", counter, deviceLabels}
	mFsWriteBytes     = metricDesc{"container_fs_writes_bytes_total", "Cumulative count of bytes written.", counter, deviceLabels}
	mFsWrites         = metricDesc{"container_fs_writes_total", "Cumulative count of writes completed.", counter, deviceLabels}
	mBlkioUsage       = metricDesc{"container_blkio_device_usage_total", "Blkio device bytes usage.", counter, []string{"device", "major", "minor", "operation"}}
	mNetRxBytes       = metricDesc{"container_network_receive_bytes_total", "Cumulative count of bytes received.", counter, interfaceLabels}
	mNetRxPackets     = metricDesc{"container_network_receive_packets_total", "Cumulative count of packets received.", counter, interfaceLabels}
	mNetRxDropped     = metricDesc{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.", counter, interfaceLabels}
	mNetRxErrors      = metricDesc{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", counter, interfaceLabels}
	mNetTxBytes       = metricDesc{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", counter, interfaceLabels}
	mNetTxPackets     = metricDesc{"container_network_transmit_packets_total", "Cumulative count of packets transmitted.", counter, interfaceLabels}
	mNetTxDropped     = metricDesc{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.", counter, interfaceLabels}
	mNetTxErrors      = metricDesc{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", counter, interfaceLabels}
	mProcesses        = metricDesc{"container_processes", "Number of processes running inside the container.", gauge, nil}
	mFileDescriptors  = metricDesc{"container_file_descriptors", "Number of open file descriptors for the container.", gauge, nil}
	mSockets          = metricDesc{"container_sockets", "Number of open sockets for the container.", gauge, nil}
	mThreads          = metricDesc{"container_threads", "Number of threads running inside the container.", gauge, nil}
	mThreadsMax       = metricDesc{"container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero.", gauge, nil}
	mLastSeen         = metricDesc{"container_last_seen", "Last time a container was seen by the exporter.", gauge, nil}
	mStartTime        = metricDesc{"container_start_time_seconds", "Start time of the container since unix epoch in seconds.", gauge, nil}
	mSpecCPUPeriod    = metricDesc{"container_spec_cpu_period", "CPU period of the container.", gauge, nil}
	mSpecCPUQuota     = metricDesc{"container_spec_cpu_quota", "CPU quota of the container.", gauge, nil}
	mSpecCPUShares    = metricDesc{"container_spec_cpu_shares", "CPU share of the container.", gauge, nil}
	mSpecMemLimit     = metricDesc{"container_spec_memory_limit_bytes", "Memory limit for the container, zero when unlimited.", gauge, nil}
	mSpecMemSwapLimit = metricDesc{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container, zero when unlimited.", gauge, nil}
	allMetricDescs    = []metricDesc{
		mCPUUser, mCPUSystem, mCPUUsage, mCPUPeriods, mCPUThrottled, mCPUThrottledSecs,
		mMemCache, mMemRSS, mMemKernel, mMemMapped, mMemSwap, mMemFailcnt, mMemUsage, mMemMaxUsage,
		mMemWorkingSet, mMemActiveFile, mMemInactiveFile, mMemFailures, mOOMEvents,
		mFsInodesFree, mFsInodesTotal, mFsLimit, mFsUsage,
		mFsReadBytes, mFsReads, mFsWriteBytes, mFsWrites, mBlkioUsage,
		mNetRxBytes, mNetRxPackets, mNetRxDropped, mNetRxErrors, mNetTxBytes, mNetTxPackets, mNetTxDropped, mNetTxErrors,
		mProcesses, mFileDescriptors, mSockets, mThreads, mThreadsMax,
		mLastSeen, mStartTime,
		mSpecCPUPeriod, mSpecCPUQuota, mSpecCPUShares, mSpecMemLimit, mSpecMemSwapLimit,
	}
)

const (
	counter = runtimeapi.MetricType_COUNTER
	gauge   = runtimeapi.MetricType_GAUGE
)

// ListMetricDescriptors lists the metrics ListPodSandboxMetrics reports,
// with their label keys in the order of the metrics' label values.
func (s *Server) ListMetricDescriptors(ctx context.Context, r *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{Descriptors: make([]*runtimeapi.MetricDescriptor, 0, len(allMetricDescs))}
	for _, d := range allMetricDescs {
		resp.Descriptors = append(resp.Descriptors, &runtimeapi.MetricDescriptor{
			Name: d.name, Help: d.help, LabelKeys: append(append([]string(nil), baseLabels...), d.extra...),
		})
	}
	return resp, nil
}
