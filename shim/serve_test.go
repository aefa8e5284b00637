package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestErrorInterceptor(t *testing.T) {
	cases := []struct {
		name string
		err  error
		code codes.Code
	}{
		{"ok", nil, codes.OK},
		{"not found", fmt.Errorf("container %q: %w", "c1", errdefs.ErrNotFound), codes.NotFound},
		{"invalid", fmt.Errorf("bad: %w", errdefs.ErrInvalidArgument), codes.InvalidArgument},
		{"exists", fmt.Errorf("dup: %w", errdefs.ErrAlreadyExists), codes.AlreadyExists},
		{"precondition", fmt.Errorf("state: %w", errdefs.ErrFailedPrecondition), codes.FailedPrecondition},
		{"not implemented", fmt.Errorf("checkpoint: %w", errdefs.ErrNotImplemented), codes.Unimplemented},
		{"plain", errors.New("runc create: boom"), codes.Unknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := func(ctx context.Context, u func(any) error) (any, error) { return "resp", tc.err }
			resp, err := errorInterceptor(context.Background(), nil, &ttrpc.UnaryServerInfo{FullMethod: "/x/Y"}, method)
			if resp != "resp" {
				t.Errorf("resp = %v", resp)
			}
			if got := status.Code(err); got != tc.code {
				t.Errorf("code = %v (%v), want %v", got, err, tc.code)
			}
		})
	}
}

func TestOpenShimLog(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		t.Chdir(dir)
		w := openShimLog(context.Background())
		io.WriteString(w, "line\n")
		w.Close()
		if b, err := os.ReadFile(filepath.Join(dir, "shim.log")); err != nil || string(b) != "line\n" {
			t.Errorf("shim.log = %q, %v", b, err)
		}
	})

	t.Run("fifo", func(t *testing.T) {
		dir := t.TempDir()
		mkfifo(t, filepath.Join(dir, "log"))
		// The daemon's read end.
		r, err := os.OpenFile(filepath.Join(dir, "log"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		t.Chdir(dir)
		w := openShimLog(context.Background())
		if _, err := io.WriteString(w, "to the daemon\n"); err != nil {
			t.Fatal(err)
		}
		w.Close()
		if got := readAll(t, r, "to the daemon\n"); got != "to the daemon\n" {
			t.Errorf("daemon read %q", got)
		}
		if _, err := os.Stat(filepath.Join(dir, "shim.log")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("shim.log written although the log FIFO exists: %v", err)
		}
	})

	// The daemon was killed: no reader, then one that reads nothing, then
	// one that reads. The shim never waits; what no one read is lost.
	t.Run("fifo nobody reads", func(t *testing.T) {
		dir := t.TempDir()
		mkfifo(t, filepath.Join(dir, "log"))
		t.Chdir(dir)
		w := openShimLog(context.Background())
		defer w.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.WriteString(w, "no reader\n")
			r, err := os.OpenFile(filepath.Join(dir, "log"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
			if err != nil {
				t.Error(err)
				return
			}
			// 1 MiB into a 64 KiB pipe nobody drains.
			for range 1024 {
				io.WriteString(w, strings.Repeat("x", 1023)+"\n")
			}
			r.Close()
			io.WriteString(w, "reader gone\n")
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a log write waited for the daemon")
		}
		r, err := os.OpenFile(filepath.Join(dir, "log"), os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := io.WriteString(w, "back\n"); err != nil {
			t.Fatal(err)
		}
		// The shim keeps its end open, so read what is there, not to EOF.
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := r.Read(buf)
		if got := string(buf[:n]); err != nil || got != "back\n" {
			t.Errorf("the daemon back read %q, %v", got, err)
		}
	})
}
