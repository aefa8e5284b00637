// Package metrics is corrald's Prometheus instrumentation: the metrics
// corrald exports, the gRPC interceptors that time every CRI call, the
// collector that counts pods, containers and shims at scrape time, and the
// HTTP endpoint that serves them ([metrics] address).
//
// Each Metrics owns its registry: two corralds in one test process, or a
// unit test beside a daemon, never share a counter. Every method is safe on
// a nil *Metrics and does nothing, so the code that reports a metric needs
// no check of whether metrics are on.
//
// The names follow Prometheus' conventions: a corral_ prefix, base units
// (seconds, bytes) in the name, _total on counters. What each one means is
// in its help text, which the endpoint serves.
package metrics
