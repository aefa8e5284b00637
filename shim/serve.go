package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs/pkg/errgrpc"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/ttrpc"
	shimapi "github.com/corral-runtime/corral/proto/shim/v1"
	"golang.org/x/sys/unix"
)

// Serve runs the long-running shim: it serves the Task API on the socket
// passed as fd 3 by Start until a Shutdown leaves it with nothing to do.
func Serve(ctx context.Context, cfg Config) error {
	// Keep the heap small: a node runs one shim per pod.
	debug.SetGCPercent(40)

	// Be the parent of every container process, so their exits reach us.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, unix.SIGCHLD)
	defer signal.Stop(sigs)

	logOut := openShimLog(ctx)
	defer logOut.Close()
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level})).
		With("shim", os.Getpid(), "namespace", cfg.Namespace)

	l, err := net.FileListener(os.NewFile(3, "socket"))
	if err != nil {
		return fmt.Errorf("shim socket (fd 3): %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pubCtx, pubCancel := context.WithCancel(context.Background())
	defer pubCancel()
	publisher := NewPublisher(cfg.TTRPCAddress, cfg.Namespace, log)
	pubDone := make(chan struct{})
	go func() { publisher.Run(pubCtx); close(pubDone) }()

	svc := NewService(ctx, cfg, log, publisher, cancel)
	reaper := NewReaper(svc.HandleExit)
	svc.reaper = reaper
	// go-runc learns exits only through this package variable; the shim is
	// the one user of go-runc in its process, so setting it once is safe.
	runc.Monitor = reaper
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-sigs:
				reaper.Reap()
			}
		}
	}()

	server, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(errorInterceptor))
	if err != nil {
		return err
	}
	taskapi.RegisterTTRPCTaskService(server, svc)
	shimapi.RegisterShimService(server, svc.Corral())
	served := make(chan error, 1)
	go func() { served <- server.Serve(ctx, l) }()
	log.Info("serving", "socket", cfg.Socket, "version", Version)

	select {
	case <-ctx.Done():
	case err := <-served:
		if err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
			log.Error("serve", "error", err)
		}
	}

	// Deliver what is queued (the last exits and deletes) before leaving.
	flushCtx, flushCancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := publisher.Flush(flushCtx); err != nil {
		log.Warn("events lost at shutdown", "error", err)
	}
	flushCancel()
	pubCancel()
	<-pubDone

	shutCtx, shutCancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer shutCancel()
	server.Shutdown(shutCtx)
	if cfg.Socket != "" {
		os.Remove(cfg.Socket)
		os.Remove(cfg.Socket + ".pid")
	}
	log.Info("exiting")
	return nil
}

// errorInterceptor converts errdefs kinds into status codes at the edge, so
// clients can tell NotFound from InvalidArgument.
func errorInterceptor(ctx context.Context, u ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
	resp, err := m(ctx, u)
	if err != nil {
		return resp, errgrpc.ToGRPC(err)
	}
	return resp, nil
}

// openShimLog writes the shim's log where the daemon reads it: the "log" FIFO
// containerd creates in the bundle, else a shim.log file in the bundle.
func openShimLog(ctx context.Context) io.WriteCloser {
	if fi, err := os.Stat("log"); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		path, err := filepath.Abs("log")
		if err == nil {
			return &fifoLog{path: path}
		}
	}
	f, err := os.OpenFile("shim.log", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nopWriteCloser{io.Discard}
	}
	return f
}

// fifoLog writes to the daemon's log FIFO without ever waiting for it. The
// daemon reads the FIFO while it runs; killed, it reads nothing until the
// next one starts, and a write that waited for a reader (or for room in a
// full pipe) would hold the logger's lock, and with it every request that
// logs: a Create, and the Delete behind it, hung for good (the chaos suite
// found pods that could not be removed). So a line no one is reading is
// dropped, and the FIFO is opened again, non-blocking, for the next one.
type fifoLog struct {
	path string
	mu   sync.Mutex
	fd   int // valid while open
	open bool
}

func (l *fifoLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		// ENXIO: no reader now.
		fd, err := unix.Open(l.path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return len(p), nil
		}
		l.fd, l.open = fd, true
	}
	for off := 0; off < len(p); {
		n, err := unix.Write(l.fd, p[off:])
		if err != nil {
			if errors.Is(err, unix.EPIPE) {
				// The reader went away: open again next time.
				unix.Close(l.fd)
				l.open = false
			}
			// EAGAIN: the reader is not keeping up; the rest is dropped.
			return len(p), nil
		}
		off += n
	}
	return len(p), nil
}

func (l *fifoLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.open {
		return nil
	}
	l.open = false
	return unix.Close(l.fd)
}
