package shim

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

const fileHostBug = `validate and openOutput take the first segment of "file://x/y" as the URL host and ignore it: output goes to /y`

func TestStdioValidate(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "fifo"))
	file := writeFile(t, filepath.Join(dir, "file"), "")

	cases := []struct {
		name string
		s    stdio
		kind func(error) bool // nil: valid
		bug  string           // a known bug makes this case fail
	}{
		{"empty", stdio{}, nil, ""},
		{"fifos", stdio{Stdin: fifo, Stdout: fifo, Stderr: fifo}, nil, ""},
		{"fifo scheme", stdio{Stdout: "fifo://" + fifo}, nil, ""},
		{"file uri", stdio{Stdout: "file://" + filepath.Join(dir, "new", "out.log")}, nil, ""},
		{"missing fifo", stdio{Stdout: filepath.Join(dir, "missing")}, errdefs.IsInvalidArgument, ""},
		{"relative fifo", stdio{Stdout: "fifo"}, errdefs.IsInvalidArgument, ""},
		{"regular file", stdio{Stderr: file}, errdefs.IsInvalidArgument, ""},
		{"relative file uri", stdio{Stdout: "file://rel"}, errdefs.IsInvalidArgument, ""},
		{"relative file uri with a slash", stdio{Stdout: "file://rel/out.log"}, errdefs.IsInvalidArgument, fileHostBug},
		{"file uri with a host", stdio{Stdout: "file://otherhost/var/log/out.log"}, errdefs.IsInvalidArgument, fileHostBug},
		{"file uri for stdin", stdio{Stdin: "file://" + file}, errdefs.IsInvalidArgument, ""},
		{"binary scheme", stdio{Stdout: "binary:///usr/bin/logger"}, errdefs.IsNotImplemented, ""},
		{"binary scheme short", stdio{Stdout: "binary://x"}, errdefs.IsNotImplemented, ""},
		{"bad stdin, good outputs", stdio{Stdin: filepath.Join(dir, "missing"), Stdout: fifo}, errdefs.IsInvalidArgument, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.validate()
			if tc.kind == nil && err != nil {
				t.Errorf("validate = %v, want ok", err)
			}
			if tc.kind != nil && !tc.kind(err) {
				t.Errorf("validate = %v, want another kind", err)
			}
		})
	}
}

// fifoReader opens the client's read end of a FIFO, as containerd does.
func fifoReader(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.SetReadDeadline(time.Now().Add(10 * time.Second))
	return f
}

// readAll reads r to EOF. A read end opened before any writer reads EOF at
// once, so it reads until want is complete, then to EOF.
func readAll(t *testing.T, r *os.File, want string) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) && len(got) >= len(want) {
			return string(got)
		}
		if errors.Is(err, io.EOF) {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("read %q so far: %v", got, err)
		}
	}
}

func TestOpenOutputsSharedFIFO(t *testing.T) {
	fifo := mkfifo(t, filepath.Join(t.TempDir(), "out"))
	o, err := openOutputs(context.Background(), fifo, fifo, false)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	sw, ok := o.stdout.(*sharedWriter)
	if !ok || o.stderr != o.stdout {
		t.Fatalf("stdout %T and stderr %T: want one sharedWriter", o.stdout, o.stderr)
	}
	if len(o.all) != 1 {
		t.Errorf("%d destinations opened, want 1", len(o.all))
	}
	r := fifoReader(t, fifo)

	for _, w := range []struct {
		w    io.Writer
		data string
	}{{o.stdout, "out\n"}, {o.stderr, "err\n"}} {
		if _, err := io.WriteString(w.w, w.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.stdout.Close(); err != nil {
		t.Fatal(err)
	}
	// One copy is done; the other still writes.
	if _, err := io.WriteString(o.stderr, "more\n"); err != nil {
		t.Fatalf("write after the first close: %v", err)
	}
	if err := o.stderr.Close(); err != nil {
		t.Fatal(err)
	}
	if sw.refs != 0 {
		t.Errorf("refs = %d after both closes", sw.refs)
	}
	if _, err := sw.Write([]byte("late")); err == nil {
		t.Error("write after both closes succeeded: the writer was not closed")
	}
	if got := readAll(t, r, "out\nerr\nmore\n"); got != "out\nerr\nmore\n" {
		t.Errorf("client read %q", got)
	}
}

func TestOpenOutputs(t *testing.T) {
	dir := t.TempDir()
	outFifo := mkfifo(t, filepath.Join(dir, "out"))
	errFifo := mkfifo(t, filepath.Join(dir, "err"))
	cases := []struct {
		name           string
		stdout, stderr string
		kind           func(error) bool // nil: opens
		haveOut, haveE bool
	}{
		{"none", "", "", nil, false, false},
		{"two fifos", outFifo, errFifo, nil, true, true},
		{"stdout only", outFifo, "", nil, true, false},
		{"stderr only", "", errFifo, nil, false, true},
		{"missing stdout", filepath.Join(dir, "missing"), errFifo, errdefs.IsInvalidArgument, false, false},
		{"missing stderr", outFifo, filepath.Join(dir, "missing"), errdefs.IsInvalidArgument, false, false},
		{"binary scheme", "binary:///bin/logger", "", errdefs.IsNotImplemented, false, false},
		{"relative file", "file://rel", "", errdefs.IsInvalidArgument, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := openOutputs(context.Background(), tc.stdout, tc.stderr, false)
			if tc.kind != nil {
				if !tc.kind(err) {
					t.Errorf("err = %v, want another kind", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			if (o.stdout != nil) != tc.haveOut || (o.stderr != nil) != tc.haveE {
				t.Errorf("stdout %v stderr %v", o.stdout, o.stderr)
			}
		})
	}
}

func TestOpenOutputsFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs", "nested")
	out, errPath := filepath.Join(dir, "out.log"), filepath.Join(dir, "err.log")
	writeFile(t, out, "before\n")
	o, err := openOutputs(context.Background(), "file://"+out, "file://"+errPath, false)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(o.stdout, "to stdout\n")
	io.WriteString(o.stderr, "to stderr\n")
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{out: "before\nto stdout\n", errPath: "to stderr\n"} {
		if b, err := os.ReadFile(path); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q (appended)", path, b, err, want)
		}
	}
	// The same file for both is opened once.
	o, err = openOutputs(context.Background(), "file://"+out, "file://"+out, false)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if len(o.all) != 1 || o.stdout != o.stderr {
		t.Errorf("same file opened %d times", len(o.all))
	}
}

func TestOpenInput(t *testing.T) {
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "in"))
	in, err := openInput(fifo)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	for _, bad := range []string{"rel", filepath.Join(dir, "missing"), writeFile(t, filepath.Join(dir, "f"), "")} {
		if _, err := openInput(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("openInput(%q) = %v, want InvalidArgument", bad, err)
		}
	}
}

type readResult struct {
	data string
	err  error
}

// scriptedReader returns one scripted result per Read.
type scriptedReader []readResult

func (s *scriptedReader) Read(b []byte) (int, error) {
	r := (*s)[0]
	*s = (*s)[1:]
	return copy(b, r.data), r.err
}

func TestEIOAsEOF(t *testing.T) {
	cases := []struct {
		name string
		in   readResult
		want error
	}{
		{"data", readResult{"abc", nil}, nil},
		{"EIO", readResult{"ab", syscall.EIO}, io.EOF},
		{"wrapped EIO", readResult{"", &os.PathError{Op: "read", Path: "/dev/ptmx", Err: syscall.EIO}}, io.EOF},
		{"EOF", readResult{"", io.EOF}, io.EOF},
		{"other error", readResult{"", syscall.EBADF}, syscall.EBADF},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := scriptedReader{tc.in}
			buf := make([]byte, 16)
			n, err := eioAsEOF{&r}.Read(buf)
			if string(buf[:n]) != tc.in.data || !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("Read = %q, %v; want %q, %v", buf[:n], err, tc.in.data, tc.want)
			}
		})
	}
}

// TestEIOAsEOFPty reads a real pty master after its slave side closed: the
// kernel reports EIO, a copy sees a clean end of stream.
func TestEIOAsEOFPty(t *testing.T) {
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(slave, "hi\n")
	slave.Close()

	done := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(eioAsEOF{master})
		done <- readResult{string(b), err}
	}()
	select {
	case got := <-done:
		if got.err != nil || got.data != "hi\r\n" {
			t.Errorf("ReadAll = %q, %v; want %q and no error", got.data, got.err, "hi\r\n")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read of a closed pty did not end")
	}
}

// TestProcessIOPipes runs the streams of a process in pipe mode with no
// process: the test plays the child on the runtime's ends of the pipes.
func TestProcessIOPipes(t *testing.T) {
	dir := t.TempDir()
	st := stdio{
		Stdin:  mkfifo(t, filepath.Join(dir, "in")),
		Stdout: mkfifo(t, filepath.Join(dir, "out")),
		Stderr: mkfifo(t, filepath.Join(dir, "err")),
	}
	pio, err := newProcessIO(st, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	if pio.consoleSocket() != nil {
		t.Error("console socket in pipe mode")
	}
	var child exec.Cmd
	pio.runtimeIO().Set(&child)
	if err := pio.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	outR, errR := fifoReader(t, st.Stdout), fifoReader(t, st.Stderr)

	// The client writes stdin and closes its end: the child reads it, but
	// EOF comes only with CloseIO, since the shim holds stdin open for the
	// next client (an attach), as containerd's shim does.
	in, err := os.OpenFile(st.Stdin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, "ping\n")
	in.Close()
	childIn := child.Stdin.(*os.File)
	b := make([]byte, 5)
	if _, err := io.ReadFull(childIn, b); err != nil || string(b) != "ping\n" {
		t.Errorf("child read stdin %q, %v", b, err)
	}
	in, err = os.OpenFile(st.Stdin, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, "again\n")
	in.Close()
	pio.closeStdin()
	if b, err := io.ReadAll(childIn); err != nil || string(b) != "again\n" {
		t.Errorf("child read stdin %q, %v after CloseIO; want the second client's line, then EOF", b, err)
	}

	// The child writes and exits: its ends close, the copies drain.
	io.WriteString(child.Stdout, "hello\n")
	io.WriteString(child.Stderr, "oops\n")
	child.Stdout.(*os.File).Close()
	child.Stderr.(*os.File).Close()
	start := time.Now()
	pio.wait(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("wait took %v after the outputs ended", d)
	}
	if got := readAll(t, outR, "hello\n"); got != "hello\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := readAll(t, errR, "oops\n"); got != "oops\n" {
		t.Errorf("stderr = %q", got)
	}
	pio.closeStdin() // idempotent
	if err := pio.resize(80, 24); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("resize without a terminal: %v", err)
	}
}

// TestProcessIOWaitTimeout: output held open (by a child that outlives the
// process) must not hold back the exit for more than the timeout.
func TestProcessIOWaitTimeout(t *testing.T) {
	st := stdio{Stdout: mkfifo(t, filepath.Join(t.TempDir(), "out"))}
	pio, err := newProcessIO(st, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	var child exec.Cmd
	pio.runtimeIO().Set(&child)
	if err := pio.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pio.wait(100 * time.Millisecond)
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("wait returned after %v, want about 100ms", d)
	}
	// Closing releases the copies.
	pio.close()
	child.Stdout.(*os.File).Close()
	child.Stderr.(*os.File).Close()
}

func TestProcessIONull(t *testing.T) {
	pio, err := newProcessIO(stdio{}, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	var child exec.Cmd
	pio.runtimeIO().Set(&child)
	if f, ok := child.Stdout.(*os.File); !ok || f.Name() != os.DevNull {
		t.Errorf("child stdout = %v, want %s", child.Stdout, os.DevNull)
	}
	if err := pio.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pio.wait(time.Second)
	pio.close()
}

// TestProcessIOTerminal plays runc in terminal mode: it sends a pty master
// over the console socket; what the "process" writes on the slave reaches
// stdout, resize reaches the pty, and the slave's close ends the copy (EIO
// read as EOF) so wait returns.
func TestProcessIOTerminal(t *testing.T) {
	st := stdio{Terminal: true, Stdout: mkfifo(t, filepath.Join(t.TempDir(), "out"))}
	pio, err := newProcessIO(st, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	defer pio.close()
	sock := pio.consoleSocket()
	if sock == nil || pio.runtimeIO() != nil {
		t.Fatalf("terminal mode: socket %v, pipes %v", sock, pio.runtimeIO())
	}
	sockDir := filepath.Dir(sock.Path())

	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	sent := make(chan error, 1)
	go func() {
		defer master.Close()
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock.Path(), Net: "unix"})
		if err != nil {
			sent <- err
			return
		}
		defer conn.Close()
		_, _, err = conn.WriteMsgUnix([]byte("ptmx"), unix.UnixRights(int(master.Fd())), nil)
		sent <- err
	}()
	if err := pio.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sockDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("console socket dir left after the master arrived: %v", err)
	}
	outR := fifoReader(t, st.Stdout)

	slave, err := os.OpenFile(slavePath, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := pio.resize(100, 40); err != nil {
		t.Fatal(err)
	}
	ws, err := unix.IoctlGetWinsize(int(slave.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Col != 100 || ws.Row != 40 {
		t.Errorf("window size = %+v, %v; want 100x40", ws, err)
	}
	io.WriteString(slave, "hello\n")
	slave.Close()

	start := time.Now()
	pio.wait(10 * time.Second)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("wait took %v after the slave closed: EIO not taken as EOF?", d)
	}
	if got := readAll(t, outR, "hello\r\n"); got != "hello\r\n" {
		t.Errorf("stdout = %q", got)
	}
	pio.closeStdin() // no stdin: a no-op
}
