package server

import (
	"context"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/metadata"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// handleShimEvent takes the events the pods' shims forward. An exit is
// committed to the store before the shim is told it arrived, so a corrald
// killed at any moment still learns it (the shim retries until answered).
func (s *Server) handleShimEvent(ctx context.Context, e *types.Envelope) error {
	if s.shimEvents.active() {
		s.shimEvents.publish(s.debugEvent(e))
	}
	switch e.Topic {
	case "/tasks/exit":
		var ev eventstypes.TaskExit
		if err := proto.Unmarshal(e.Event.Value, &ev); err != nil {
			return err
		}
		if ev.ID != ev.ContainerID {
			return nil // an exec; streaming (issue 7) follows those
		}
		return s.taskExited(ctx, ev.ContainerID, int32(ev.ExitStatus), ev.ExitedAt.AsTime())
	case "/tasks/oom":
		var ev eventstypes.TaskOOM
		if err := proto.Unmarshal(e.Event.Value, &ev); err != nil {
			return err
		}
		s.oom.mark(ev.ContainerID)
	}
	return nil
}

// taskExited records the end of a container's or a pause process's task.
// It is idempotent: the shim's event and StopContainer's own wait may both
// report one exit.
func (s *Server) taskExited(ctx context.Context, id string, code int32, at time.Time) error {
	c, err := s.store.GetContainer(id)
	if err == nil {
		return s.containerExited(c, code, at, "")
	}
	if !errdefs.IsNotFound(err) {
		return err
	}
	_, err = s.store.UpdateSandbox(id, func(sb *metadata.Sandbox) error {
		sb.State = metadata.SandboxNotReady
		return nil
	})
	if errdefs.IsNotFound(err) {
		return nil // removed meanwhile
	}
	return err
}

// containerExited moves a container to exited with its code, time and
// reason, once, and tells GetContainerEvents subscribers.
func (s *Server) containerExited(c metadata.Container, code int32, at time.Time, reason string) error {
	changed := false
	updated, err := s.store.UpdateContainer(c.ID, func(rec *metadata.Container) error {
		if rec.State == metadata.ContainerExited {
			return nil
		}
		changed = true
		rec.State = metadata.ContainerExited
		rec.ExitCode = code
		rec.FinishedAt = at
		switch {
		case reason != "":
			rec.Reason = reason
		case s.oom.take(c.ID):
			rec.Reason = "OOMKilled"
		case code == 0:
			rec.Reason = "Completed"
		default:
			rec.Reason = "Error"
		}
		return nil
	})
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if changed {
		s.log.Info("container exited", "pod", updated.SandboxID, "container", c.ID, "exit_code", code, "reason", updated.Reason)
		s.hub.publish(s.containerEvent(updated, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT))
		s.nriContainerExited(updated)
	}
	return nil
}

// oomSet remembers containers the kernel OOM-killed until their exit is
// recorded, so the exit's reason says so.
type oomSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (o *oomSet) mark(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ids == nil {
		o.ids = map[string]bool{}
	}
	o.ids[id] = true
}

func (o *oomSet) take(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	ok := o.ids[id]
	delete(o.ids, id)
	return ok
}

// eventHub fans container events out to GetContainerEvents streams. A slow
// subscriber loses events rather than stalling the runtime: the kubelet
// relists then, as it must after any gap.
type eventHub struct {
	mu   sync.Mutex
	subs map[chan *runtimeapi.ContainerEventResponse]struct{}
}

const eventBuffer = 256

func (h *eventHub) subscribe() (<-chan *runtimeapi.ContainerEventResponse, func()) {
	ch := make(chan *runtimeapi.ContainerEventResponse, eventBuffer)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[chan *runtimeapi.ContainerEventResponse]struct{}{}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

func (h *eventHub) publish(e *runtimeapi.ContainerEventResponse) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// containerEvent builds the CRI event for a container's change, with its
// pod's status and its own, as the evented PLEG wants them.
func (s *Server) containerEvent(c metadata.Container, kind runtimeapi.ContainerEventType) *runtimeapi.ContainerEventResponse {
	e := &runtimeapi.ContainerEventResponse{
		ContainerId:        c.ID,
		ContainerEventType: kind,
		CreatedAt:          time.Now().UnixNano(),
	}
	if sb, err := s.store.GetSandbox(c.SandboxID); err == nil {
		e.PodSandboxStatus = s.sandboxStatus(sb)
		if kind != runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT {
			e.ContainersStatuses = []*runtimeapi.ContainerStatus{containerStatus(c)}
		}
	}
	return e
}

// GetContainerEvents streams container lifecycle events until the client
// goes away or corrald stops.
func (s *Server) GetContainerEvents(r *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	ch, cancel := s.hub.subscribe()
	defer cancel()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.stopping:
			return nil
		case e := <-ch:
			if err := stream.Send(e); err != nil {
				return err
			}
		}
	}
}
