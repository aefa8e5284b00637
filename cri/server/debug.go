package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
	debug "github.com/corral-runtime/corral/proto/debug/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// DebugSocket is where corrald serves its debug service, below --state.
const DebugSocket = "debug.sock"

func (l layout) debugAddress() string { return filepath.Join(l.state, DebugSocket) }

// debugService is corrald's debug ttrpc service (proto/debug/v1): it only
// reads, so it can be answered without any pod's lock.
type debugService struct {
	s       *Server
	started time.Time
}

var _ debug.DebugService = (*debugService)(nil)

// serveDebug listens on STATE/debug.sock, owner-only, until the returned
// stop is called: corral.debug.v1.Debug and corral.images.v1.Images.
func (s *Server) serveDebug(ctx context.Context) (func(), error) {
	srv, err := ttrpc.NewServer()
	if err != nil {
		return nil, err
	}
	debug.RegisterDebugService(srv, &debugService{s: s, started: time.Now()})
	// The admin calls that change state (image import and export) are a
	// service of their own on the same socket.
	s.registerImages(srv)
	l, err := shimclient.Listen(s.paths.debugAddress())
	if err != nil {
		return nil, fmt.Errorf("debug socket: %w", err)
	}
	go func() {
		if err := srv.Serve(context.WithoutCancel(ctx), l); err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
			s.log.Error("debug server", "error", err)
		}
	}()
	return func() {
		srv.Close()
		os.Remove(s.paths.debugAddress())
	}, nil
}

// Info implements corral.debug.v1.Debug.
func (d *debugService) Info(ctx context.Context, _ *debug.InfoRequest) (*debug.InfoResponse, error) {
	return &debug.InfoResponse{
		Version:       d.s.version,
		Pid:           int32(os.Getpid()),
		Root:          d.s.paths.root,
		State:         d.s.paths.state,
		SchemaVersion: metadata.SchemaVersion,
		StartedAt:     d.started.UnixNano(),
	}, nil
}

// Dump implements corral.debug.v1.Debug. The records are copied out of
// one read transaction before any is sent: a slow client must not hold the
// store's read transaction open, which would stall its writers' growth.
func (d *debugService) Dump(ctx context.Context, r *debug.DumpRequest, stream debug.Debug_DumpServer) error {
	want := func(bucket string) bool {
		if len(r.Buckets) == 0 {
			return true
		}
		return slices.ContainsFunc(r.Buckets, func(b string) bool {
			b = strings.Trim(b, "/")
			return bucket == b || strings.HasPrefix(bucket, b+"/")
		})
	}
	var records []*debug.Record
	err := d.s.store.Dump(func(bucket string, key, value []byte) error {
		if want(bucket) {
			records = append(records, &debug.Record{Bucket: bucket, Key: slices.Clone(key), Value: slices.Clone(value)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dump the metadata store: %w", err)
	}
	for _, rec := range records {
		if err := stream.Send(rec); err != nil {
			return err
		}
	}
	return nil
}

// Events implements corral.debug.v1.Debug.
func (d *debugService) Events(ctx context.Context, r *debug.EventsRequest, stream debug.Debug_EventsServer) error {
	ch, cancel := d.s.shimEvents.subscribe()
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.s.stopping:
			return nil
		case e := <-ch:
			if len(r.Topics) > 0 && !slices.ContainsFunc(r.Topics, func(p string) bool { return strings.HasPrefix(e.Topic, p) }) {
				continue
			}
			if err := stream.Send(e); err != nil {
				return err
			}
		}
	}
}

// debugEvent is a shim's envelope as the debug service sends it, with the
// pod and container it is about.
func (s *Server) debugEvent(e *types.Envelope) *debug.Event {
	out := &debug.Event{Namespace: e.Namespace, Topic: e.Topic}
	if e.Timestamp != nil {
		out.Timestamp = e.Timestamp.AsTime().UnixNano()
	}
	if e.Event == nil {
		return out
	}
	out.TypeUrl, out.Value = e.Event.TypeUrl, e.Event.Value
	out.ContainerId = containerIDOf(e.Event.TypeUrl, e.Event.Value)
	if out.ContainerId != "" {
		if c, err := s.store.GetContainer(out.ContainerId); err == nil {
			out.PodId = c.SandboxID
		} else if _, err := s.store.GetSandbox(out.ContainerId); err == nil {
			out.PodId = out.ContainerId
		}
	}
	return out
}

// containerIDOf reads the container_id field every containerd task event
// has, whatever its type; "" for an event type not linked in.
func containerIDOf(typeURL string, value []byte) string {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(typeURL)
	if err != nil {
		return ""
	}
	m := mt.New()
	if proto.Unmarshal(value, m.Interface()) != nil {
		return ""
	}
	f := m.Descriptor().Fields().ByName("container_id")
	if f == nil || f.Kind() != protoreflect.StringKind {
		return ""
	}
	return m.Get(f).String()
}

// envelopeHub fans the shims' events out to debug Events streams. A slow
// subscriber loses events rather than stall the shims, who wait for
// corrald's answer before sending the next.
type envelopeHub struct {
	mu   sync.Mutex
	subs map[chan *debug.Event]struct{}
}

func (h *envelopeHub) subscribe() (<-chan *debug.Event, func()) {
	ch := make(chan *debug.Event, eventBuffer)
	h.mu.Lock()
	if h.subs == nil {
		h.subs = map[chan *debug.Event]struct{}{}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

// active reports whether anyone listens, so events are not decoded for
// nobody.
func (h *envelopeHub) active() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

func (h *envelopeHub) publish(e *debug.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- e:
		default:
		}
	}
}
