package shim

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	shimapi "github.com/corral-runtime/corral/proto/shim/v1"
)

// CorralService serves corral.shim.v1.Shim, the calls corrald needs beside
// the Task API, for the containers of the same Service.
type CorralService struct{ s *Service }

var _ shimapi.ShimService = CorralService{}

// Corral returns the corral.shim.v1 service over s's containers.
func (s *Service) Corral() CorralService { return CorralService{s} }

// running returns a container's running (or paused) init process's streams.
func (c CorralService) running(id string) (*processIO, error) {
	if err := checkID("container ID", id); err != nil {
		return nil, err
	}
	ctr, err := c.s.container(id)
	if err != nil {
		return nil, err
	}
	st, _, _, _ := ctr.init.snapshot()
	if st != stateRunning && st != statePaused {
		return nil, fmt.Errorf("container %q is %s, not running: %w", id, statusName(st), errdefs.ErrFailedPrecondition)
	}
	pio := ctr.init.streams()
	if pio == nil {
		return nil, fmt.Errorf("container %q has no streams: %w", id, errdefs.ErrFailedPrecondition)
	}
	return pio, nil
}

// ReopenLog reopens the container's log file at its path.
func (c CorralService) ReopenLog(ctx context.Context, r *shimapi.ReopenLogRequest) (*shimapi.ReopenLogResponse, error) {
	pio, err := c.running(r.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := pio.reopen(); err != nil {
		return nil, fmt.Errorf("container %q: %w", r.ContainerId, err)
	}
	c.s.log.Info("log reopened", "container", r.ContainerId)
	return &shimapi.ReopenLogResponse{}, nil
}

// Attach copies the container's output from now on to the caller's FIFOs.
func (c CorralService) Attach(ctx context.Context, r *shimapi.AttachRequest) (*shimapi.AttachResponse, error) {
	if r.Stdout == "" && r.Stderr == "" {
		return nil, fmt.Errorf("attach to %q: name a stdout or stderr FIFO: %w", r.ContainerId, errdefs.ErrInvalidArgument)
	}
	pio, err := c.running(r.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := pio.attach(r.Stdout, r.Stderr); err != nil {
		return nil, fmt.Errorf("attach to %q: %w", r.ContainerId, err)
	}
	return &shimapi.AttachResponse{}, nil
}

func statusName(s processState) string {
	switch s {
	case stateCreated:
		return "created"
	case stateStopped:
		return "stopped"
	case statePaused:
		return "paused"
	}
	return "running"
}
