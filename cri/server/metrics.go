package server

import (
	"context"
	"time"

	"github.com/corral-runtime/corral/cri/metrics"
	"github.com/corral-runtime/corral/cri/network"
	"github.com/corral-runtime/corral/metadata"
)

// registerMetrics makes the pod, container and shim counts of the metrics
// endpoint come from the store and the shim connections at scrape time.
func (s *Server) registerMetrics() error {
	return s.metrics.RegisterState(metrics.State{
		Pods: func() (map[string]int, error) {
			n := map[string]int{}
			_, err := s.store.ListSandboxes(func(sb metadata.Sandbox) bool {
				n[string(sb.State)]++
				return false
			})
			return n, err
		},
		Containers: func() (map[string]int, error) {
			n := map[string]int{}
			_, err := s.store.ListContainers(func(c metadata.Container) bool {
				n[string(c.State)]++
				return false
			})
			return n, err
		},
		Shims:     s.shims.live,
		PodStates: []string{string(metadata.SandboxReady), string(metadata.SandboxNotReady)},
		ContainerStates: []string{string(metadata.ContainerCreated), string(metadata.ContainerRunning),
			string(metadata.ContainerExited), string(metadata.ContainerUnknown)},
	})
}

// live counts the shims whose connection is up.
func (s *shims) live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sh := range s.conns {
		select {
		case <-sh.Done():
		default:
			n++
		}
	}
	return n
}

// cniSetup is s.net.Setup, timed for the metrics.
func (s *Server) cniSetup(ctx context.Context, pod network.Pod) (network.Result, error) {
	start := time.Now()
	res, err := s.net.Setup(ctx, pod)
	s.metrics.ObserveCNI(metrics.CNIAdd, time.Since(start), err)
	return res, err
}

// cniTeardown is s.net.Teardown, timed for the metrics.
func (s *Server) cniTeardown(ctx context.Context, pod network.Pod) error {
	start := time.Now()
	err := s.net.Teardown(ctx, pod)
	s.metrics.ObserveCNI(metrics.CNIDel, time.Since(start), err)
	return err
}
