package shim

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// Tests in this package never call t.Parallel: Reaper.Reap waits for any
// child of the test process, so a test starting children concurrently with
// the reaper test would lose its children's exits to it.

// In the shim, go-runc's Monitor is the reaper (serve.go), which waits for a
// runtime command only when go-runc asks. go-runc's default monitor calls
// cmd.Wait as soon as the command starts instead, and Wait closes the
// StdoutPipe that Stats is still reading ("read |0: file already closed").
// The tests, which run the runtime without the reaper, get a monitor that
// waits when asked, as the reaper does.
func init() { runc.Monitor = waitingMonitor{} }

type waitingMonitor struct{}

func (waitingMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	return make(chan runc.Exit), nil
}

func (m waitingMonitor) StartLocked(c *exec.Cmd) (chan runc.Exit, error) { return m.Start(c) }

func (waitingMonitor) Wait(c *exec.Cmd, _ chan runc.Exit) (int, error) {
	err := c.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok {
			return ws.ExitStatus(), nil
		}
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// discardLog is a logger for code under test whose log is not checked.
func discardLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// shortTempDir is a temporary directory with a short path: a unix socket's
// path must fit in sun_path (107 bytes), which t.TempDir() under a long
// test name may not.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shim")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func mkfifo(t testing.TB, path string) string {
	t.Helper()
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatalf("mkfifo %s: %v", path, err)
	}
	return path
}

func writeFile(t testing.TB, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// isMountpoint reports whether a mount sits on path, from mountinfo.
func isMountpoint(t testing.TB, path string) bool {
	t.Helper()
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == path {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
