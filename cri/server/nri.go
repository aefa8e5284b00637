package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/nri/pkg/api"
	"github.com/corral-runtime/corral/cri/nri"
	"github.com/corral-runtime/corral/metadata"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
)

// The glue between the CRI calls and cri/nri: each call file has one line
// per NRI event, and the conversions and lookups are here.

// newNRI makes corrald's NRI side when the config enables it; nil (which
// cri/nri treats as "off") otherwise, and for a server without a state
// directory (unit tests).
func (s *Server) newNRI() (*nri.NRI, error) {
	c := s.cfg.NRI
	if !c.Enable || s.paths.state == "" {
		return nil, nil
	}
	return nri.New(nri.Config{
		SocketPath:          c.Socket(s.paths.state),
		PluginPath:          c.PluginPath,
		PluginConfigPath:    c.PluginConfigPath,
		RegistrationTimeout: time.Duration(c.PluginRegistrationTimeout),
		RequestTimeout:      time.Duration(c.PluginRequestTimeout),
	}, RuntimeName, s.version, nriRuntime{s}, s.log)
}

// pendingSet holds the pods and containers being created. Their records
// are written first, so that a crash leaves something to clean up, but CRI
// does not show them until the creation (its NRI hook included) is done.
type pendingSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

// hold hides id until the returned function (or release) is called.
func (p *pendingSet) hold(id string) (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ids == nil {
		p.ids = map[string]bool{}
	}
	p.ids[id] = true
	return func() { p.release(id) }
}

func (p *pendingSet) release(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ids, id)
}

func (p *pendingSet) has(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids[id]
}

// notFoundIfPending answers for a pod or container being created as if it
// were not there yet.
func (s *Server) notFoundIfPending(id string) error {
	if s.pending.has(id) {
		return fmt.Errorf("%s is being created: %w", id, errdefs.ErrNotFound)
	}
	return nil
}

func (s *Server) nriPod(sb metadata.Sandbox) *api.PodSandbox {
	return nri.Pod(sb, sandboxConfig(sb), sandboxCgroup(sb).parent)
}

// nriContainer describes c with its spec as the bundle has it now.
func (s *Server) nriContainer(c metadata.Container) *api.Container {
	sp, _ := readSpec(c.Bundle)
	return nri.Container(c, sp)
}

// nriPodOf describes the pod of c; a pod already gone is described by its
// ID alone.
func (s *Server) nriPodOf(c metadata.Container) *api.PodSandbox {
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return &api.PodSandbox{Id: c.SandboxID}
	}
	return s.nriPod(sb)
}

// nriRunPodSandbox tells plugins of a new pod (rec, with its pid and IPs);
// from then on, a rollback tells them the pod is gone.
func (s *Server) nriRunPodSandbox(ctx context.Context, rec metadata.Sandbox, undo *[]func()) error {
	if s.nri == nil {
		return nil
	}
	pod := s.nriPod(rec)
	*undo = append(*undo, func() { s.nri.RemovePodSandbox(context.WithoutCancel(ctx), pod) })
	return s.nri.RunPodSandbox(ctx, pod)
}

// nriCreateContainer asks plugins about a new container (rec, spec sp) and
// applies their adjustments to sp; from then on, a rollback tells them the
// container is gone.
func (s *Server) nriCreateContainer(ctx context.Context, sb metadata.Sandbox, rec metadata.Container, sp *specs.Spec, undo *[]func()) error {
	if s.nri == nil {
		return nil
	}
	pod, ctr := s.nriPod(sb), nri.Container(rec, sp)
	*undo = append(*undo, func() { s.nri.UndoCreateContainer(context.WithoutCancel(ctx), pod, ctr) })
	return s.nri.CreateContainer(ctx, pod, ctr, sp)
}

func (s *Server) nriPostCreateContainer(ctx context.Context, sb metadata.Sandbox, c metadata.Container) {
	if s.nri != nil {
		s.nri.PostCreateContainer(ctx, s.nriPod(sb), s.nriContainer(c))
	}
}

func (s *Server) nriStartContainer(ctx context.Context, sb metadata.Sandbox, c metadata.Container) error {
	if s.nri == nil {
		return nil
	}
	return s.nri.StartContainer(ctx, s.nriPod(sb), s.nriContainer(c))
}

func (s *Server) nriPostStartContainer(ctx context.Context, sb metadata.Sandbox, c metadata.Container) {
	if s.nri != nil {
		s.nri.PostStartContainer(ctx, s.nriPod(sb), s.nriContainer(c))
	}
}

// nriUpdateContainer returns the resources to give c: res, or what the
// plugins made of it.
func (s *Server) nriUpdateContainer(ctx context.Context, c metadata.Container, res *specs.LinuxResources) (*specs.LinuxResources, error) {
	if s.nri == nil {
		return res, nil
	}
	return s.nri.UpdateContainer(ctx, s.nriPodOf(c), s.nriContainer(c), res)
}

func (s *Server) nriPostUpdateContainer(ctx context.Context, c metadata.Container) {
	if s.nri != nil {
		s.nri.PostUpdateContainer(ctx, s.nriPodOf(c), s.nriContainer(c))
	}
}

// nriStopContainer tells plugins that c (by its ID, as it is now) stopped,
// if it did.
func (s *Server) nriStopContainer(ctx context.Context, id string) {
	if s.nri == nil {
		return
	}
	c, err := s.store.GetContainer(id)
	if err != nil || c.State != metadata.ContainerExited {
		return
	}
	s.nri.StopContainer(ctx, s.nriPodOf(c), s.nriContainer(c))
}

// nriContainerExited tells plugins, without waiting for them, that c
// exited by itself.
func (s *Server) nriContainerExited(c metadata.Container) {
	if s.nri != nil {
		s.nri.ContainerExited(s.nriPodOf(c), s.nriContainer(c))
	}
}

// nriRemoveContainer tells plugins that c is gone; its bundle must still
// be there.
func (s *Server) nriRemoveContainer(ctx context.Context, c metadata.Container) {
	if s.nri != nil {
		s.nri.RemoveContainer(ctx, s.nriPodOf(c), s.nriContainer(c))
	}
}

func (s *Server) nriStopPodSandbox(ctx context.Context, sb metadata.Sandbox) {
	if s.nri != nil {
		s.nri.StopPodSandbox(ctx, s.nriPod(sb))
	}
}

func (s *Server) nriRemovePodSandbox(ctx context.Context, sb metadata.Sandbox) {
	if s.nri != nil {
		s.nri.RemovePodSandbox(ctx, s.nriPod(sb))
	}
}

// nriRuntime is what corrald does for NRI plugins beyond the events.
type nriRuntime struct{ s *Server }

// Snapshot lists the pods and containers CRI shows (none being created).
func (r nriRuntime) Snapshot(ctx context.Context) ([]*api.PodSandbox, []*api.Container, error) {
	s := r.s
	sbs, err := s.store.ListSandboxes(func(sb metadata.Sandbox) bool { return !s.pending.has(sb.ID) })
	if err != nil {
		return nil, nil, err
	}
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return !s.pending.has(c.ID) })
	if err != nil {
		return nil, nil, err
	}
	pods := make([]*api.PodSandbox, 0, len(sbs))
	for _, sb := range sbs {
		pods = append(pods, s.nriPod(sb))
	}
	ctrs := make([]*api.Container, 0, len(cs))
	for _, c := range cs {
		ctrs = append(ctrs, s.nriContainer(c))
	}
	return pods, ctrs, nil
}

// nriLockWait bounds the wait for a container's lock when a plugin asks to
// update or evict it: the plugin's request may come while another call
// holds that lock and waits for NRI.
const nriLockWait = 2 * time.Second

// UpdateContainers applies the resources plugins ask for, as
// UpdateContainerResources does.
func (r nriRuntime) UpdateContainers(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	var failed []*api.ContainerUpdate
	var errs []error
	for _, u := range updates {
		res := u.GetLinux().GetResources().ToOCI()
		if res == nil {
			continue
		}
		if err := r.update(ctx, u.GetContainerId(), res); err != nil {
			if !u.GetIgnoreFailure() {
				failed = append(failed, u)
				errs = append(errs, err)
			}
		}
	}
	return failed, errors.Join(errs...)
}

func (r nriRuntime) update(ctx context.Context, id string, res *specs.LinuxResources) error {
	s := r.s
	lctx, cancel := context.WithTimeout(ctx, nriLockWait)
	defer cancel()
	c, unlock, err := s.lockContainer(lctx, id)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	defer unlock()
	if c.State != metadata.ContainerRunning && c.State != metadata.ContainerCreated {
		return fmt.Errorf("container %s is %s: %w", id, c.State, errdefs.ErrFailedPrecondition)
	}
	raw, err := json.Marshal(res)
	if err != nil {
		return err
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		return err
	}
	if _, err := sh.Task.Update(ctx, &taskapi.UpdateTaskRequest{
		ID: id, Resources: &anypb.Any{TypeUrl: resourcesType, Value: raw},
	}); err != nil {
		return fmt.Errorf("update resources of %s: %w", id, taskErr(err))
	}
	return recordResources(c.Bundle, res)
}

// EvictContainers stops the containers plugins want gone.
func (r nriRuntime) EvictContainers(ctx context.Context, evict []*api.ContainerEviction) ([]*api.ContainerEviction, error) {
	s := r.s
	var failed []*api.ContainerEviction
	var errs []error
	for _, e := range evict {
		err := func() error {
			lctx, cancel := context.WithTimeout(ctx, nriLockWait)
			defer cancel()
			c, unlock, err := s.lockContainer(lctx, e.GetContainerId())
			if err != nil {
				return err
			}
			defer unlock()
			s.log.Info("NRI plugin evicts container", "pod", c.SandboxID, "container", c.ID, "reason", e.GetReason())
			return s.stopContainerLocked(context.WithoutCancel(ctx), c, 0)
		}()
		if err != nil {
			failed = append(failed, e)
			errs = append(errs, fmt.Errorf("evict %s: %w", e.GetContainerId(), err))
		}
	}
	return failed, errors.Join(errs...)
}
