package shimclient

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// EventHandler receives each event a shim forwards. It must return quickly:
// the shim waits for the answer before it sends the next event, and an error
// makes the shim retry the same event later.
type EventHandler func(ctx context.Context, e *types.Envelope) error

// EventServer is the daemon's events endpoint at TTRPC_ADDRESS.
type EventServer struct {
	server  *ttrpc.Server
	handler EventHandler
}

// NewEventServer returns a server that passes forwarded events to h.
func NewEventServer(h EventHandler) (*EventServer, error) {
	srv, err := ttrpc.NewServer()
	if err != nil {
		return nil, err
	}
	s := &EventServer{server: srv, handler: h}
	eventsapi.RegisterTTRPCEventsService(srv, s)
	return s, nil
}

// Forward implements containerd.services.events.ttrpc.v1.Events.
func (s *EventServer) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	if r.Envelope == nil || r.Envelope.Event == nil {
		return nil, fmt.Errorf("event without payload: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.handler(ctx, r.Envelope); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Listen creates the unix socket at path (replacing a stale one), owner-only.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve serves forwarded events on l until ctx ends or Close.
func (s *EventServer) Serve(ctx context.Context, l net.Listener) error {
	return s.server.Serve(ctx, l)
}

// Close stops the server.
func (s *EventServer) Close() error { return s.server.Close() }

// Publish forwards one event to the events service at ttrpcAddress, as
// `containerd publish` does for shims of containerd 1.4 and older, which
// run their -publish-binary for every event instead of dialing
// TTRPC_ADDRESS: payload is the event as a marshalled protobuf Any, what
// those shims write to the binary's stdin.
func Publish(ctx context.Context, ttrpcAddress, namespace, topic string, payload []byte) error {
	if topic == "" || !strings.HasPrefix(topic, "/") {
		return fmt.Errorf("topic %q: want an absolute topic such as /tasks/exit: %w", topic, errdefs.ErrInvalidArgument)
	}
	if namespace == "" {
		return fmt.Errorf("no namespace: %w", errdefs.ErrInvalidArgument)
	}
	var event anypb.Any
	if err := proto.Unmarshal(payload, &event); err != nil || event.TypeUrl == "" {
		return fmt.Errorf("the event on stdin is not a protobuf Any (%d bytes): %w", len(payload), errdefs.ErrInvalidArgument)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", strings.TrimPrefix(ttrpcAddress, "unix://"))
	if err != nil {
		return fmt.Errorf("events service at %s: %w", ttrpcAddress, err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	_, err = eventsapi.NewTTRPCEventsClient(client).Forward(ctx, &eventsapi.ForwardRequest{Envelope: &types.Envelope{
		Timestamp: timestamppb.Now(),
		Namespace: namespace,
		Topic:     topic,
		Event:     &event,
	}})
	if err != nil {
		return fmt.Errorf("forward %s: %w", topic, err)
	}
	return nil
}
