package shimclient

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestPublishForwardsToTheEventsService(t *testing.T) {
	dir, err := os.MkdirTemp("", "pub")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	got := make(chan *types.Envelope, 1)
	srv, err := NewEventServer(func(_ context.Context, e *types.Envelope) error {
		got <- e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "d.sock.ttrpc")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go srv.Serve(ctx, l)
	defer srv.Close()

	exit, _ := proto.Marshal(&eventstypes.TaskExit{ContainerID: "c1", ID: "c1", ExitStatus: 7})
	payload, _ := proto.Marshal(&anypb.Any{TypeUrl: "containerd.events.TaskExit", Value: exit})
	if err := Publish(ctx, sock, "k8s.io", "/tasks/exit", payload); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-got:
		var ev eventstypes.TaskExit
		if e.Topic != "/tasks/exit" || e.Namespace != "k8s.io" || proto.Unmarshal(e.Event.Value, &ev) != nil || ev.ExitStatus != 7 {
			t.Errorf("forwarded %v", e)
		}
	case <-ctx.Done():
		t.Fatal("nothing forwarded")
	}

	for name, tc := range map[string]struct {
		topic, ns string
		payload   []byte
	}{
		"no topic":     {"", "k8s.io", payload},
		"no namespace": {"/tasks/exit", "", payload},
		"not an Any":   {"/tasks/exit", "k8s.io", []byte{0xff, 0x01}},
		"empty stdin":  {"/tasks/exit", "k8s.io", nil},
	} {
		if err := Publish(ctx, sock, tc.ns, tc.topic, tc.payload); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if err := Publish(ctx, filepath.Join(dir, "none"), "k8s.io", "/tasks/exit", payload); err == nil {
		t.Error("publish to nothing succeeded")
	}
}
