package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/netns"
	"github.com/corral-runtime/corral/metadata"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopPodSandbox stops every container of the pod and its pause process
// while CNI tears its network down, then releases its network namespace
// and /dev/shm. Stopping a stopped pod
// does nothing.
func (s *Server) StopPodSandbox(ctx context.Context, r *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	sb, unlock, err := s.lockSandbox(ctx, r.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		// The CRI asks Stop to be idempotent: a pod that is gone is stopped.
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.stopSandbox(context.WithoutCancel(ctx), sb); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// stopSandbox does StopPodSandbox's work; the caller holds the pod's lock.
// Each step is idempotent, so a stop interrupted by a crash finishes on the
// next call.
func (s *Server) stopSandbox(ctx context.Context, sb metadata.Sandbox) error {
	if sb.Extra[extraStopped] == "true" {
		// Every step below finished before; RemovePodSandbox after
		// StopPodSandbox need not run the CNI DEL again.
		return nil
	}
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return c.SandboxID == sb.ID })
	if err != nil {
		return err
	}
	// The paths are derived from the ID, not read from the record: a
	// RunPodSandbox cut short by a crash made them before it could record
	// them.
	nsPath := filepath.Join(s.paths.netnsDir(), sb.ID)
	if sb.ShimAddress != "" {
		// One connection for the stops below; a dead shim is each one's
		// to handle.
		_, _ = s.podShim(ctx, sb.ID, sb.ShimAddress)
	}
	// The containers, the pause process and the network all go at once:
	// every kill in a pod stop is SIGKILL, with no grace period to wait
	// out in turn, and the plugins need only the namespace, which stays
	// until all three are done. NRI plugins, when there are any, are told
	// the pod stopped before its network goes, as containerd does.
	errs := make([]error, len(cs)+2)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			if err := s.stopContainerLocked(ctx, c, 0); err != nil {
				errs[i] = fmt.Errorf("stop container %s: %w", c.ID, err)
				return
			}
			s.nriStopContainer(ctx, c.ID)
		})
	}
	wg.Go(func() { errs[len(cs)] = s.stopPause(ctx, sb) })
	teardown := func() {}
	if cfg := sandboxConfig(sb); s.net != nil && cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() != runtimeapi.NamespaceMode_NODE {
		teardown = func() {
			// Idempotent: a pod never set up, or torn down before, is fine.
			if err := s.cniTeardown(ctx, networkPod(sb.ID, cfg, nsPath)); err != nil {
				errs[len(cs)+1] = fmt.Errorf("pod network teardown: %w", err)
			}
		}
	}
	if s.nri == nil {
		wg.Go(teardown)
	}
	wg.Wait()
	if s.nri != nil {
		if err := errors.Join(errs...); err != nil {
			return err
		}
		s.nriStopPodSandbox(ctx, sb)
		teardown()
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := netns.Remove(nsPath); err != nil {
		return fmt.Errorf("remove network namespace: %w", err)
	}
	if err := netns.Remove(filepath.Join(s.paths.usernsDir(), sb.ID)); err != nil {
		return fmt.Errorf("remove user namespace: %w", err)
	}
	if err := unmountIfMounted(filepath.Join(s.paths.sandboxBundle(sb.ID), "shm")); err != nil {
		return fmt.Errorf("unmount the pod's /dev/shm: %w", err)
	}
	if _, err := s.store.UpdateSandbox(sb.ID, func(rec *metadata.Sandbox) error {
		rec.State = metadata.SandboxNotReady
		if rec.Extra == nil {
			rec.Extra = map[string]string{}
		}
		rec.Extra[extraStopped] = "true"
		return nil
	}); err != nil {
		return err
	}
	s.log.Info("pod stopped", "pod", sb.ID)
	return nil
}

// stopPause kills the pod's pause process and waits for its exit.
func (s *Server) stopPause(ctx context.Context, sb metadata.Sandbox) error {
	if sb.ShimAddress == "" {
		return nil
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	switch {
	case errdefs.IsNotFound(err):
		// The shim is gone, and the pause process with it.
		return nil
	case err != nil:
		return err
	}
	st, err := sh.Task.State(ctx, &taskapi.StateRequest{ID: sb.ID})
	if err != nil || st.Status.String() == "STOPPED" {
		return nil
	}
	sh.Task.Kill(ctx, &taskapi.KillRequest{ID: sb.ID, Signal: uint32(unix.SIGKILL), All: true})
	if _, ok := waitTask(ctx, sh, sb.ID, 10*time.Second); !ok {
		return fmt.Errorf("pause process of pod %s did not exit after SIGKILL: %w", sb.ID, errdefs.ErrUnavailable)
	}
	return nil
}

// unmountIfMounted lazily unmounts path; nothing mounted there is fine.
func unmountIfMounted(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}
