package server

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/metadata"
	shimapi "github.com/corral-runtime/corral/proto/shim/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ReopenContainerLog asks the container's shim to reopen its log file, the
// kubelet's second step of log rotation after renaming the file. Only
// corral's shim can: the Task API has no such call.
func (s *Server) ReopenContainerLog(ctx context.Context, r *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	if r.GetContainerId() == "" {
		return nil, fmt.Errorf("container_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.store.GetContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	if c.State != metadata.ContainerRunning {
		return nil, fmt.Errorf("container %s is %s, not running: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	if c.LogPath == "" {
		return nil, fmt.Errorf("container %s has no log_path: nothing to reopen: %w", c.ID, errdefs.ErrFailedPrecondition)
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return nil, err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		return nil, err
	}
	if _, err := sh.Corral.ReopenLog(ctx, &shimapi.ReopenLogRequest{ContainerId: c.ID}); err != nil {
		return nil, fmt.Errorf("reopen log of %s: %w", c.ID, s.corralCallErr(sb, "ReopenContainerLog", err))
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}

// corralCallErr converts the error of a corral.shim.v1 call. A shim that is
// not corral's (containerd-shim-runc-v2 as a runtime handler) does not know
// the service: say which shim and what it cannot do.
func (s *Server) corralCallErr(sb metadata.Sandbox, call string, err error) error {
	err = taskErr(err)
	if !errdefs.IsNotImplemented(err) {
		return err
	}
	shim := sb.Extra[extraShimBinary]
	if shim == "" {
		if _, rt, herr := s.handler(sb.RuntimeHandler); herr == nil {
			shim = rt.Shim
		}
	}
	handler := sb.RuntimeHandler
	if handler == "" {
		handler = s.cfg.DefaultRuntime
	}
	return fmt.Errorf("%s needs containerd-shim-corral-v2; runtime handler %q runs shim %q, which does not serve it: %w", call, handler, shim, errdefs.ErrNotImplemented)
}
