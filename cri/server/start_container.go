package server

import (
	"context"
	"fmt"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StartContainer starts a created container.
func (s *Server) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, unlock, err := s.lockContainer(ctx, r.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := c.ID
	if c.State != metadata.ContainerCreated {
		return nil, fmt.Errorf("container %s is %s, not created: %w", id, c.State, errdefs.ErrFailedPrecondition)
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		return nil, err
	}
	if err := s.nriStartContainer(ctx, sb, c); err != nil {
		return nil, err
	}
	// Taken before the start: a process that exits at once must not look
	// as if it finished before it started.
	startedAt := time.Now()
	started, err := sh.Task.Start(context.WithoutCancel(ctx), &taskapi.StartRequest{ID: id})
	if err != nil {
		err = taskErr(err)
		s.endFailedStart(context.WithoutCancel(ctx), sb, sh, id)
		// As containerd does: the container is done, and says why.
		s.store.UpdateContainer(id, func(rec *metadata.Container) error {
			rec.State = metadata.ContainerExited
			rec.ExitCode = 128
			rec.Reason = "StartError"
			rec.Message = err.Error()
			rec.FinishedAt = time.Now()
			return nil
		})
		s.nriStopContainer(context.WithoutCancel(ctx), id)
		return nil, fmt.Errorf("start container %s: %w", id, err)
	}
	updated, err := s.store.UpdateContainer(id, func(rec *metadata.Container) error {
		rec.StartedAt = startedAt
		rec.PID = started.GetPid()
		// A container that exits at once may already be recorded as
		// exited by its exit event; that stays.
		if rec.State == metadata.ContainerCreated {
			rec.State = metadata.ContainerRunning
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("container started", "pod", c.SandboxID, "container", id)
	s.hub.publish(s.containerEvent(updated, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT))
	s.nriPostStartContainer(ctx, sb, updated)
	return &runtimeapi.StartContainerResponse{}, nil
}

// endFailedStart ends whatever a failed Start may have started: a shim
// killed under Start leaves its runtime's start going on alone, and the
// process would run under a record that says it exited. It waits for the
// runtime, then kills the container through the shim, or, with the shim
// gone, has the shim binary's delete kill it and remove its runc state.
func (s *Server) endFailedStart(ctx context.Context, sb metadata.Sandbox, sh *shimclient.Shim, id string) {
	bundle := s.paths.containerBundle(id)
	waitRuntimeProcesses(bundle, id, runtimeGrace)
	_, err := sh.Task.Kill(ctx, &taskapi.KillRequest{ID: id, Signal: uint32(unix.SIGKILL), All: true})
	if err = taskErr(err); err == nil || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) {
		return
	}
	opts, oerr := s.podShimOptions(sb)
	if oerr != nil {
		return
	}
	if _, derr := shimclient.Delete(ctx, bundle, id, opts); derr != nil {
		s.log.Warn("end a failed start", "container", id, "error", derr)
	}
}
