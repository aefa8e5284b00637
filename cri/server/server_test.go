package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-runtime/corral/cri/config"
	"github.com/corral-runtime/corral/metadata"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// testConfig is the built-in config with the CNI directory moved into the
// test's own temp dir, so no test depends on the host's /etc/cni.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Network.ConfDir = filepath.Join(t.TempDir(), "net.d")
	return cfg
}

func testStore(t *testing.T) *metadata.Store {
	t.Helper()
	st, err := metadata.Open(filepath.Join(t.TempDir(), "meta.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// syncBuffer collects log output written from the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testEnv is a Server serving over an in-memory connection, with clients.
type testEnv struct {
	srv     *Server
	conn    *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
	image   runtimeapi.ImageServiceClient
	logs    *syncBuffer
}

func newTestEnv(t *testing.T, cfg *config.Config) *testEnv {
	t.Helper()
	srv, logs := newTestServer(t, cfg)
	return startEnv(t, srv, logs)
}

// newTestServer is a Server that logs everything into the returned buffer.
func newTestServer(t *testing.T, cfg *config.Config) (*Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	srv, err := New(cfg, testStore(t), Options{
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Version: "1.2.3-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, logs
}

func dialBufconn(t *testing.T, l *bufconn.Listener) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///corral",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func startEnv(t *testing.T, srv *Server, logs *syncBuffer) *testEnv {
	t.Helper()
	l := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	conn := dialBufconn(t, l)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return &testEnv{
		srv:     srv,
		conn:    conn,
		runtime: runtimeapi.NewRuntimeServiceClient(conn),
		image:   runtimeapi.NewImageServiceClient(conn),
		logs:    logs,
	}
}

func ctxTimeout(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestNewRefusesWhatCannotServe(t *testing.T) {
	st := testStore(t)
	if _, err := New(nil, st, Options{}); err == nil {
		t.Error("nil config accepted")
	}
	if _, err := New(config.Default(), nil, Options{}); err == nil {
		t.Error("nil store accepted")
	}
	bad := config.Default()
	bad.DefaultRuntime = "nope"
	if _, err := New(bad, st, Options{}); err == nil || !strings.Contains(err.Error(), "default_runtime") {
		t.Errorf("invalid config: err = %v", err)
	}
}

func TestCallsNotBuiltYetAreUnimplemented(t *testing.T) {
	env := newTestEnv(t, testConfig(t))
	ctx := ctxTimeout(t)
	_, err := env.runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "CheckpointContainer: not implemented yet") {
		t.Errorf("CheckpointContainer: %v, want Unimplemented naming the call", err)
	}
	_, err = env.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "config is missing") {
		t.Errorf("RunPodSandbox without a config: %v, want InvalidArgument", err)
	}
	// Image calls check their input first, then need an image store.
	_, err = env.image.PullImage(ctx, &runtimeapi.PullImageRequest{})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "image.image is empty") {
		t.Errorf("PullImage without an image: %v, want InvalidArgument", err)
	}
	_, err = env.image.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("ImageFsInfo without an image store: %v, want Unimplemented", err)
	}
	// The event stream stays open, with nothing to say yet.
	sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	stream, err := env.runtime.GetContainerEvents(sctx, &runtimeapi.GetEventsRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("GetContainerEvents: %v, want an open stream until the deadline", err)
	}
}

// TestServeStopsWhenContextEnds serves on a real unix socket, then stops
// the way corrald does on SIGTERM.
func TestServeStopsWhenContextEnds(t *testing.T) {
	srv, err := New(testConfig(t), testStore(t), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	dir := shortTempDir(t)
	l, err := Listen("unix://" + filepath.Join(dir, "corral.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "corral.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := runtimeapi.NewRuntimeServiceClient(conn).Version(ctxTimeout(t), &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("Version over the unix socket: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := os.Lstat(filepath.Join(dir, "corral.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind after stop: %v", err)
	}
}

// TestServeCutsCallsThatOutliveTheShutdownTimeout: a call that never ends
// on its own (an event stream) must not keep the daemon from exiting.
func TestServeCutsCallsThatOutliveTheShutdownTimeout(t *testing.T) {
	srv, err := New(testConfig(t), testStore(t), Options{
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
		ShutdownTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	registerTestService(srv, func(ctx context.Context, _ string) error {
		close(started)
		<-ctx.Done() // ends only when the connection is cut
		return ctx.Err()
	})
	l := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	conn := dialBufconn(t, l)
	go conn.Invoke(context.Background(), testMethod, &emptypb.Empty{}, &emptypb.Empty{})
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking call never reached the server")
	}
	stopAt := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		if d := time.Since(stopAt); d > 5*time.Second {
			t.Errorf("stop took %s with a 200ms shutdown timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still waits for a call that never ends")
	}
}

func TestListen(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "state", "sub", "corral.sock")
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	if os.Geteuid() == 0 {
		if st := fi.Sys().(*syscall.Stat_t); st.Gid != 0 || st.Uid != 0 {
			t.Errorf("socket owned by %d:%d, want root:root", st.Uid, st.Gid)
		}
	}

	// A live socket is somebody else's: refuse it, and leave it working.
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another process is serving") {
		t.Errorf("second Listen on a live socket: err = %v", err)
	}
	if c, err := net.Dial("unix", sock); err != nil {
		t.Errorf("the live socket stopped working: %v", err)
	} else {
		c.Close()
	}

	// A socket left by a daemon that died is replaced.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("could not leave a stale socket: %v", err)
	}
	l2, err := Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l2.Close()

	// Anything that is not a socket is not ours to delete.
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: err = %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("Listen clobbered a regular file")
	}
}

func TestSocketPath(t *testing.T) {
	for endpoint, want := range map[string]string{
		"unix:///run/corral/corral.sock": "/run/corral/corral.sock",
		"/run/corral/corral.sock":        "/run/corral/corral.sock",
		"unix:///run//corral/./x.sock":   "/run/corral/x.sock",
	} {
		got, err := SocketPath(endpoint)
		if err != nil || got != want {
			t.Errorf("SocketPath(%q) = %q, %v; want %q", endpoint, got, err, want)
		}
	}
	for endpoint, why := range map[string]string{
		"tcp://127.0.0.1:1234":                      "only unix",
		"unix://run/corral.sock":                    "absolute",
		"corral.sock":                               "absolute",
		"unix:///" + strings.Repeat("d/", 60) + "s": "107",
	} {
		if _, err := SocketPath(endpoint); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("SocketPath(%q): err = %v, want one saying %q", endpoint, err, why)
		}
	}
}

// shortTempDir keeps socket paths under the 107 bytes a unix socket allows,
// which t.TempDir's long names can exceed.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "crs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
