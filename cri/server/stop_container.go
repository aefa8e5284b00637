package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/image"
	"github.com/corral-runtime/corral/metadata"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// killWait bounds the wait for a SIGKILLed container to be reported gone.
const killWait = 10 * time.Second

// StopContainer stops a container: its stop signal (the image's STOPSIGNAL,
// else SIGTERM), then SIGKILL after the timeout. Stopping a stopped
// container does nothing.
func (s *Server) StopContainer(ctx context.Context, r *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if r.GetTimeout() < 0 {
		return nil, fmt.Errorf("timeout %d is negative: %w", r.GetTimeout(), errdefs.ErrInvalidArgument)
	}
	c, unlock, err := s.lockContainer(ctx, r.GetContainerId())
	if errdefs.IsNotFound(err) {
		// The CRI asks Stop to be idempotent: a container that is gone is
		// stopped.
		return &runtimeapi.StopContainerResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.stopContainerLocked(context.WithoutCancel(ctx), c, time.Duration(r.GetTimeout())*time.Second); err != nil {
		return nil, err
	}
	s.nriStopContainer(context.WithoutCancel(ctx), c.ID)
	return &runtimeapi.StopContainerResponse{}, nil
}

// stopContainerLocked stops c; the caller holds c's lock (or its pod's).
func (s *Server) stopContainerLocked(ctx context.Context, c metadata.Container, timeout time.Duration) error {
	if c.State != metadata.ContainerRunning && c.State != metadata.ContainerCreated {
		return nil
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if errdefs.IsNotFound(err) {
		// The shim died and took the container with it.
		return s.containerExited(c, 255, time.Now(), "Unknown")
	}
	if err != nil {
		return err
	}
	if timeout > 0 && c.State == metadata.ContainerRunning {
		sig := s.stopSignal(c)
		_, err := sh.Task.Kill(ctx, &taskapi.KillRequest{ID: c.ID, Signal: uint32(sig)})
		if err = taskErr(err); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("signal %s: %w", c.ID, err)
		}
		if w, ok := waitTask(ctx, sh, c.ID, timeout); ok {
			return s.containerExited(c, int32(w.ExitStatus), w.ExitedAt.AsTime(), "")
		}
		s.log.Info("container ignored its stop signal, killing", "container", c.ID, "signal", sig, "timeout", timeout)
	}
	_, err = sh.Task.Kill(ctx, &taskapi.KillRequest{ID: c.ID, Signal: uint32(unix.SIGKILL), All: true})
	if err = taskErr(err); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("kill %s: %w", c.ID, err)
	}
	w, ok := waitTask(ctx, sh, c.ID, killWait)
	if !ok {
		return fmt.Errorf("container %s did not exit %s after SIGKILL: %w", c.ID, killWait, errdefs.ErrUnavailable)
	}
	return s.containerExited(c, int32(w.ExitStatus), w.ExitedAt.AsTime(), "")
}

// stopSignal is the image's STOPSIGNAL, else SIGTERM.
func (s *Server) stopSignal(c metadata.Container) unix.Signal {
	if s.images == nil {
		return unix.SIGTERM
	}
	img, err := s.images.Get(c.ImageID)
	if err != nil {
		return unix.SIGTERM
	}
	cfg, err := image.Config(img)
	if err != nil || cfg.Config.StopSignal == "" {
		return unix.SIGTERM
	}
	return parseSignal(cfg.Config.StopSignal)
}

// parseSignal reads "SIGQUIT", "QUIT" or "3"; anything else is SIGTERM.
func parseSignal(v string) unix.Signal {
	if n, err := strconv.Atoi(v); err == nil && n > 0 && n < 65 {
		return unix.Signal(n)
	}
	name := strings.ToUpper(v)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig
	}
	return unix.SIGTERM
}
