package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"github.com/corral-runtime/corral/metadata"
	debug "github.com/corral-runtime/corral/proto/debug/v1"
	imagesapi "github.com/corral-runtime/corral/proto/images/v1"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestDebugService(t *testing.T) {
	state := shortTempDir(t)
	store := testStore(t)
	srv, err := New(testConfig(t), store, Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "9.9.9", State: state,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateSandbox(metadata.Sandbox{ID: "pod1", Name: "p", Namespace: "ns", UID: "u", State: metadata.SandboxReady}); err != nil {
		t.Fatal(err)
	}
	if err := store.CreateContainer(metadata.Container{ID: "ctr1", SandboxID: "pod1", Name: "c", State: metadata.ContainerRunning}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(serveCtx, bufconn.Listen(1<<16)) }()
	defer func() {
		stop()
		<-done
	}()

	var conn net.Conn
	waitFor(t, "the debug socket", func() bool {
		conn, err = net.Dial("unix", filepath.Join(state, DebugSocket))
		return err == nil
	})
	client := ttrpc.NewClient(conn)
	defer client.Close()
	dbg := debug.NewDebugClient(client)

	// The images service shares the socket: it answers (here, without an
	// image store, Unimplemented from the service, not ttrpc's "service
	// not found").
	exp, err := imagesapi.NewImagesClient(client).Export(ctx, &imagesapi.ExportRequest{Refs: []string{"busybox"}})
	if err == nil {
		_, err = exp.Recv()
	}
	if err == nil || !strings.Contains(err.Error(), "image service: not implemented") {
		t.Errorf("images service on the debug socket: %v, want the service's own Unimplemented", err)
	}

	info, err := dbg.Info(ctx, &debug.InfoRequest{})
	if err != nil || info.Version != "9.9.9" || info.State != state || info.SchemaVersion != metadata.SchemaVersion {
		t.Errorf("Info = %v, %v", info, err)
	}

	dump, err := dbg.Dump(ctx, &debug.DumpRequest{Buckets: []string{"v1/containers", "/meta/"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		rec, err := dump.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rec.Bucket+":"+string(rec.Key))
	}
	if want := []string{"meta:schema_version", "v1/containers:ctr1"}; !slices.Equal(got, want) {
		t.Errorf("dump %q, want %q", got, want)
	}

	events, err := dbg.Events(ctx, &debug.EventsRequest{Topics: []string{"/tasks/exit"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the events subscription", srv.shimEvents.active)
	send := func(topic string, m proto.Message, typeURL string) {
		b, _ := proto.Marshal(m)
		if err := srv.handleShimEvent(ctx, &types.Envelope{Timestamp: timestamppb.Now(), Namespace: "k8s.io", Topic: topic, Event: &anypb.Any{TypeUrl: typeURL, Value: b}}); err != nil {
			t.Fatal(err)
		}
	}
	send("/tasks/start", &eventstypes.TaskStart{ContainerID: "ctr1", Pid: 5}, "containerd.events.TaskStart")
	send("/tasks/exit", &eventstypes.TaskExit{ContainerID: "ctr1", ID: "ctr1", ExitStatus: 3}, "containerd.events.TaskExit")
	e, err := events.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var exit eventstypes.TaskExit
	if e.Topic != "/tasks/exit" || e.ContainerId != "ctr1" || e.PodId != "pod1" || proto.Unmarshal(e.Value, &exit) != nil || exit.ExitStatus != 3 {
		t.Errorf("event %v", e)
	}
	if c, _ := store.GetContainer("ctr1"); c.State != metadata.ContainerExited || c.ExitCode != 3 {
		t.Errorf("the exit was not recorded while streamed: %+v", c)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
