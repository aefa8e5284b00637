package shim

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	shimapi "github.com/corral-runtime/corral/proto/shim/v1"
)

// TestCorralService drives ReopenLog and Attach on a container whose
// "child" is the test itself, writing on the runtime's ends of the pipes.
func TestCorralService(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestService(t)
	cs := s.Corral()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "c.log")
	dest := "file://" + logPath + "?format=cri"

	addContainer(t, s, "created", stateCreated, nil)
	c := addContainer(t, s, "c1", stateRunning, nil)
	pio, err := newProcessIO(stdio{Stdout: dest, Stderr: dest}, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	var child exec.Cmd
	pio.runtimeIO().Set(&child)
	if err := pio.start(ctx); err != nil {
		t.Fatal(err)
	}
	c.init.io = pio

	for name, tc := range map[string]struct {
		id   string
		want func(error) bool
	}{
		"unknown":     {"nope", errdefs.IsNotFound},
		"bad id":      {"../x", errdefs.IsInvalidArgument},
		"not started": {"created", errdefs.IsFailedPrecondition},
	} {
		if _, err := cs.ReopenLog(ctx, &shimapi.ReopenLogRequest{ContainerId: tc.id}); !tc.want(err) {
			t.Errorf("ReopenLog %s: %v", name, err)
		}
		if _, err := cs.Attach(ctx, &shimapi.AttachRequest{ContainerId: tc.id, Stdout: "/x"}); !tc.want(err) {
			t.Errorf("Attach %s: %v", name, err)
		}
	}
	if _, err := cs.Attach(ctx, &shimapi.AttachRequest{ContainerId: "c1"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Attach without FIFOs: %v, want InvalidArgument", err)
	}

	// Attach: output reaches the attacher and the log.
	outFifo := mkfifo(t, filepath.Join(dir, "attach-out"))
	r := fifoReader(t, outFifo)
	if _, err := cs.Attach(ctx, &shimapi.AttachRequest{ContainerId: "c1", Stdout: outFifo}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(child.Stdout, "first\n")
	got := make([]byte, len("first\n"))
	if _, err := io.ReadFull(r, got); err != nil || string(got) != "first\n" {
		t.Errorf("attacher read %q, %v", got, err)
	}

	// Rotation: rename, reopen, write.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.ReopenLog(ctx, &shimapi.ReopenLogRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(child.Stderr, "second\n")
	child.Stdout.(*os.File).Close()
	child.Stderr.(*os.File).Close()
	pio.wait(exitFlushTimeout)
	// The output ended: so does the attach.
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Errorf("attacher read %q, %v after the output ended; want EOF", rest, err)
	}
	old, _ := os.ReadFile(logPath + ".1")
	cur, _ := os.ReadFile(logPath)
	if !strings.HasSuffix(string(old), " stdout F first\n") || !strings.HasSuffix(string(cur), " stderr F second\n") {
		t.Errorf("rotated log %q, new log %q", old, cur)
	}
	c.init.setExited(0, c.init.exitedAt)
	if _, err := cs.ReopenLog(ctx, &shimapi.ReopenLogRequest{ContainerId: "c1"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("ReopenLog after exit: %v, want FailedPrecondition", err)
	}
}
