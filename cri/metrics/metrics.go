package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// namespace prefixes every metric corral defines.
const namespace = "corral"

// Results of the operations counted with a "result" label.
const (
	ResultSuccess = "success"
	ResultError   = "error"
)

// criBuckets span a CRI call from a status read (well under a millisecond)
// to a pull or a stop with a long grace period (minutes).
var criBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// pullBuckets span an image pull from a cached image to a large one.
var pullBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200}

// cniBuckets span a CNI ADD or DEL: a few ms for loopback, seconds for a
// plugin that waits on an IPAM server.
var cniBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Metrics holds corrald's metrics and the registry that serves them.
type Metrics struct {
	reg *prometheus.Registry

	criDuration   *prometheus.HistogramVec
	criErrors     *prometheus.CounterVec
	pullDuration  prometheus.Histogram
	pulls         *prometheus.CounterVec
	pullBytes     prometheus.Counter
	imports       *prometheus.CounterVec
	cniDuration   *prometheus.HistogramVec
	recoverySecs  prometheus.Gauge
	recoveredPods *prometheus.CounterVec
}

// New makes a Metrics with its own registry, holding corral's metrics and
// the Go runtime's and the process's, as every Go exporter serves them.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		criDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "cri", Name: "request_duration_seconds",
			Help:    "Time corrald took to answer a CRI call, by method (RunPodSandbox, PullImage, ...). Its _count is the number of calls.",
			Buckets: criBuckets,
		}, []string{"method"}),
		criErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "cri", Name: "request_errors_total",
			Help: "CRI calls that returned an error, by method and gRPC code (NotFound, InvalidArgument, ...).",
		}, []string{"method", "code"}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "image", Name: "pull_duration_seconds",
			Help:    "Time an image pull took, from resolving the reference to the recorded image. Concurrent pulls of one image count once.",
			Buckets: pullBuckets,
		}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "image", Name: "pulls_total",
			Help: "Image pulls, by result (success, error). Concurrent pulls of one image count once.",
		}, []string{"result"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "image", Name: "pull_bytes_total",
			Help: "Bytes of image layers received from registries; layers already on the node are not fetched and not counted.",
		}),
		imports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "image", Name: "imports_total",
			Help: "Images imported from archives (corralctl images import), by result (success, error).",
		}, []string{"result"}),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "cni", Name: "operation_duration_seconds",
			Help:    "Time a pod's CNI ADD or DEL took, all plugins of the network included, by operation (add, del) and result (success, error).",
			Buckets: cniBuckets,
		}, []string{"operation", "result"}),
		recoverySecs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "recovery", Name: "duration_seconds",
			Help: "Time corrald took at start to reconnect to the pods' shims and settle what happened while it was down.",
		}),
		recoveredPods: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "recovery", Name: "pods_total",
			Help: "Pods looked at during recovery at start, by result: reconnected (shim alive), shim_gone (containers marked exited), no_shim (pod had none yet).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(
		m.criDuration, m.criErrors,
		m.pullDuration, m.pulls, m.pullBytes, m.imports,
		m.cniDuration,
		m.recoverySecs, m.recoveredPods,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Series that should read 0 rather than be absent before the first
	// event, so that rate() and alerts work from the start.
	for _, r := range []string{ResultSuccess, ResultError} {
		m.pulls.WithLabelValues(r)
		m.imports.WithLabelValues(r)
	}
	return m
}

// Registry is where the metrics live, for a caller that gathers them
// itself (tests, another exposition).
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// Handler serves the metrics in the Prometheus exposition formats. A
// collector that fails (the store cannot be read) drops its own metrics from
// the answer, not the whole scrape.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	})
}

// Serve answers GET /metrics on l until ctx is done, then closes l.
func (m *Metrics) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err := srv.Serve(l)
	<-stopped
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serve metrics: %w", err)
}

// ObserveCall records one CRI call: its duration and, if it failed, its
// gRPC code. method is the full gRPC method name or the bare one.
func (m *Metrics) ObserveCall(method string, d time.Duration, err error) {
	if m == nil {
		return
	}
	name := path.Base(method)
	m.criDuration.WithLabelValues(name).Observe(d.Seconds())
	if err != nil {
		m.criErrors.WithLabelValues(name, status.Code(err).String()).Inc()
	}
}

// UnaryServerInterceptor times every unary call. Put it outermost in the
// chain, so it sees the status the client gets and the time it waited.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.ObserveCall(info.FullMethod, time.Since(start), err)
		return resp, err
	}
}

// StreamServerInterceptor does for streaming calls what
// UnaryServerInterceptor does for the rest; a stream's duration is its
// whole life.
func (m *Metrics) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.ObserveCall(info.FullMethod, time.Since(start), err)
		return err
	}
}

// ObservePull records one finished image pull.
func (m *Metrics) ObservePull(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.pullDuration.Observe(d.Seconds())
	m.pulls.WithLabelValues(result(err)).Inc()
}

// AddPullBytes counts n bytes received from a registry.
func (m *Metrics) AddPullBytes(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.pullBytes.Add(float64(n))
}

// ObserveImport records one image import from an archive.
func (m *Metrics) ObserveImport(err error) {
	if m == nil {
		return
	}
	m.imports.WithLabelValues(result(err)).Inc()
}

// CNI operations.
const (
	CNIAdd = "add"
	CNIDel = "del"
)

// ObserveCNI records one CNI ADD or DEL of a pod.
func (m *Metrics) ObserveCNI(op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.cniDuration.WithLabelValues(op, result(err)).Observe(d.Seconds())
}

// Results of recovering one pod at start.
const (
	RecoveredReconnected = "reconnected"
	RecoveredShimGone    = "shim_gone"
	RecoveredNoShim      = "no_shim"
)

// RecoveredPod counts one pod recovered at start, by result.
func (m *Metrics) RecoveredPod(result string) {
	if m == nil {
		return
	}
	m.recoveredPods.WithLabelValues(result).Inc()
}

// ObserveRecovery records how long recovery at start took.
func (m *Metrics) ObserveRecovery(d time.Duration) {
	if m == nil {
		return
	}
	m.recoverySecs.Set(d.Seconds())
}

func result(err error) string {
	if err != nil {
		return ResultError
	}
	return ResultSuccess
}
