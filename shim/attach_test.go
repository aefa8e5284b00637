package shim

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestLogFileReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "c.log")
	lf, err := openLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(lf, "before\n")
	// The kubelet's rotation: rename, then reopen.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	io.WriteString(lf, "between\n")
	if err := lf.reopen(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(lf, "after\n")
	for file, want := range map[string]string{path + ".1": "before\nbetween\n", path: "after\n"} {
		if b, _ := os.ReadFile(file); string(b) != want {
			t.Errorf("%s holds %q, want %q", file, b, want)
		}
	}
	lf.Close()
	if err := lf.reopen(); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("reopen after close: %v, want FailedPrecondition", err)
	}
	if _, err := lf.Write([]byte("x")); err == nil {
		t.Error("write after close succeeded")
	}
}

func TestOutputsReopenCRILog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	outs, err := openOutputs(t.Context(), "file://"+path+"?format=cri", "file://"+path+"?format=cri", false)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(outs.stdout, "one\n")
	os.Rename(path, path+".1")
	if err := outs.reopen(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(outs.stderr, "two\n")
	outs.stdout.Close()
	outs.stderr.Close()
	outs.Close()
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.HasSuffix(string(old), " stdout F one\n") || !strings.HasSuffix(string(cur), " stderr F two\n") {
		t.Errorf("rotated %q, new %q", old, cur)
	}

	none, err := openOutputs(t.Context(), "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := none.reopen(); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("reopen without a file: %v, want FailedPrecondition", err)
	}
}

func TestFanout(t *testing.T) {
	var f fanout
	r1, w1, _ := os.Pipe()
	r2, w2, _ := os.Pipe()
	defer r1.Close()
	if err := f.add(w1); err != nil {
		t.Fatal(err)
	}
	if err := f.add(w2); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("hello "))
	buf := make([]byte, 6)
	if _, err := io.ReadFull(r2, buf); err != nil || string(buf) != "hello " {
		t.Fatalf("second reader got %q, %v", buf, err)
	}
	// A reader that leaves is dropped at the next write and never blocks
	// the stream.
	r2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.Write([]byte("x"))
		f.mu.Lock()
		n := len(f.subs)
		f.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the attacher whose reader left is still there")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.close()
	got, err := io.ReadAll(r1)
	if err != nil || !strings.HasPrefix(string(got), "hello x") {
		t.Errorf("first reader got %q, %v", got, err)
	}
	// After the stream ended, an attach is refused and its FIFO closed.
	r3, w3, _ := os.Pipe()
	if err := f.add(w3); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("add after close: %v, want FailedPrecondition", err)
	}
	if b, err := io.ReadAll(r3); err != nil || len(b) != 0 {
		t.Errorf("late attacher read %q, %v; want EOF", b, err)
	}
}

func TestFanoutCutsOffSlowReader(t *testing.T) {
	var f fanout
	r, w, _ := os.Pipe()
	defer r.Close()
	if err := f.add(w); err != nil {
		t.Fatal(err)
	}
	// Nobody reads: the pipe fills, then the queue; Write never blocks.
	chunk := bytes.Repeat([]byte("y"), 32<<10)
	done := make(chan struct{})
	go func() {
		for range 4 * attachQueue {
			f.Write(chunk)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a reader that does not read")
	}
	f.mu.Lock()
	n := len(f.subs)
	f.mu.Unlock()
	if n != 0 {
		t.Errorf("%d attachers left; the slow one should be cut off", n)
	}
}

func TestReaderGone(t *testing.T) {
	dir := t.TempDir()
	path := mkfifo(t, filepath.Join(dir, "f"))
	if _, err := openAttachFifo(path); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("attach fifo without a reader: %v, want FailedPrecondition", err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := openAttachFifo(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if readerGone(w) {
		t.Error("reader reported gone while open")
	}
	r.Close()
	if !readerGone(w) {
		t.Error("reader not reported gone after it closed")
	}
	if _, err := openAttachFifo(filepath.Join(dir, "missing")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("missing fifo: %v, want InvalidArgument", err)
	}
}
