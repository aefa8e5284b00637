package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemovePodSandbox removes a pod and everything in it, stopping what still
// runs. Removing a pod that is not there is not an error.
func (s *Server) RemovePodSandbox(ctx context.Context, r *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, unlock, err := s.lockSandbox(ctx, r.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	id := sb.ID
	ctx = context.WithoutCancel(ctx)
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, err
	}
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return c.SandboxID == id })
	if err != nil {
		return nil, err
	}
	// Everything is stopped: the containers and the pause container are
	// deleted at once (each a runtime delete in the shim), unless NRI
	// plugins are to hear of the pod's removal in between.
	errs := make([]error, len(cs)+1)
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			if err := s.removeContainerLocked(ctx, c); err != nil {
				errs[i] = fmt.Errorf("remove container %s: %w", c.ID, err)
			}
		})
	}
	deletePause := func() { errs[len(cs)] = s.deleteTask(ctx, sb, id, s.paths.sandboxBundle(id)) }
	if s.nri == nil {
		wg.Go(deletePause)
	}
	wg.Wait()
	if s.nri != nil {
		// NRI plugins hear of the removal once the containers are gone
		// and before the pause container goes, as containerd tells them.
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
		s.nriRemovePodSandbox(ctx, sb)
		deletePause()
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if sh := s.shims.get(id); sh != nil {
		// The last task of the pod is gone: the shim ends.
		s.endShim(ctx, sh, sb)
	}
	s.shims.drop(id)
	if cg := sandboxCgroup(sb); cg.owned {
		// Its containers' cgroups went with them; the pod's own is
		// corrald's to remove.
		if err := s.cgroups.Remove(cg.path); err != nil {
			return nil, fmt.Errorf("remove the pod's cgroup: %w", err)
		}
	}
	for _, d := range []string{s.paths.sandboxBundle(id), s.paths.sandboxRoot(id)} {
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
	}
	if err := s.store.DeleteSandbox(id); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	s.log.Info("pod removed", "pod", id)
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// deleteTask deletes task id from the pod's shim; if the shim is gone, the
// shim binary's delete subcommand cleans up what it left.
func (s *Server) deleteTask(ctx context.Context, sb metadata.Sandbox, id, bundle string) error {
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err == nil {
		_, err = sh.Task.Delete(ctx, &taskapi.DeleteRequest{ID: id})
		if err = taskErr(err); err == nil || errdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("delete task %s: %w", id, err)
	}
	if !errdefs.IsNotFound(err) && !errdefs.IsFailedPrecondition(err) {
		return err
	}
	return s.deleteDeadShimTask(ctx, sb, id, bundle)
}

// deleteDeadShimTask is deleteTask for a pod whose shim is known to be
// gone: the shim binary's delete kills what the task left and removes its
// runc state and mounts. It is not cut short by ctx: a dead shim's pod
// is settled whole, each delete bounded by its own timeout.
func (s *Server) deleteDeadShimTask(ctx context.Context, sb metadata.Sandbox, id, bundle string) error {
	if _, statErr := os.Stat(bundle); statErr != nil {
		return nil
	}
	opts, oerr := s.podShimOptions(sb)
	if oerr != nil {
		return oerr
	}
	if _, derr := shimclient.Delete(context.WithoutCancel(ctx), bundle, id, opts); derr != nil {
		s.log.Warn("shim delete after its shim died", "task", id, "error", derr)
	}
	return nil
}
