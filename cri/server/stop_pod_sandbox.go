package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/netns"
	"github.com/corral-runtime/corral/metadata"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopPodSandbox stops every container of the pod, then its pause process,
// and releases its network namespace and /dev/shm. Stopping a stopped pod
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
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return c.SandboxID == sb.ID })
	if err != nil {
		return err
	}
	for _, c := range cs {
		if err := s.stopContainerLocked(ctx, c, 0); err != nil {
			return fmt.Errorf("stop container %s: %w", c.ID, err)
		}
		s.nriStopContainer(ctx, c.ID)
	}
	if sb.ShimAddress != "" {
		sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
		switch {
		case errdefs.IsNotFound(err):
			// The shim is gone, and the pause process with it.
		case err != nil:
			return err
		default:
			st, err := sh.Task.State(ctx, &taskapi.StateRequest{ID: sb.ID})
			if err == nil && st.Status.String() != "STOPPED" {
				sh.Task.Kill(ctx, &taskapi.KillRequest{ID: sb.ID, Signal: uint32(unix.SIGKILL), All: true})
				if _, ok := waitTask(ctx, sh, sb.ID, 10*time.Second); !ok {
					return fmt.Errorf("pause process of pod %s did not exit after SIGKILL: %w", sb.ID, errdefs.ErrUnavailable)
				}
			}
		}
	}
	s.nriStopPodSandbox(ctx, sb)
	// The paths are derived from the ID, not read from the record: a
	// RunPodSandbox cut short by a crash made them before it could record
	// them.
	nsPath := filepath.Join(s.paths.netnsDir(), sb.ID)
	if cfg := sandboxConfig(sb); s.net != nil && cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() != runtimeapi.NamespaceMode_NODE {
		// Idempotent: a pod never set up, or torn down before, is fine.
		if err := s.cniTeardown(ctx, networkPod(sb.ID, cfg, nsPath)); err != nil {
			return fmt.Errorf("pod network teardown: %w", err)
		}
	}
	if err := netns.Remove(nsPath); err != nil {
		return fmt.Errorf("remove network namespace: %w", err)
	}
	if err := unmountIfMounted(filepath.Join(s.paths.sandboxBundle(sb.ID), "shm")); err != nil {
		return fmt.Errorf("unmount the pod's /dev/shm: %w", err)
	}
	if sb.State != metadata.SandboxNotReady {
		if _, err := s.store.UpdateSandbox(sb.ID, func(rec *metadata.Sandbox) error {
			rec.State = metadata.SandboxNotReady
			return nil
		}); err != nil {
			return err
		}
		s.log.Info("pod stopped", "pod", sb.ID)
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
