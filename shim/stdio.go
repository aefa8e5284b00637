package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	runc "github.com/containerd/go-runc"
)

// stdio names where a process's standard streams go, as the client sent them.
type stdio struct {
	Stdin    string
	Stdout   string
	Stderr   string
	Terminal bool
}

func (s stdio) empty() bool { return s.Stdin == "" && s.Stdout == "" && s.Stderr == "" }

// validate checks the stream names before the runtime starts anything, so a
// typo fails the call instead of leaving a process without its streams.
func (s stdio) validate() error {
	for _, name := range []string{s.Stdin, s.Stdout, s.Stderr} {
		if name == "" {
			continue
		}
		u, err := url.Parse(name)
		if err == nil && u.Scheme == "file" {
			// file://rel/x parses "rel" as a host: refuse rather than write to /x.
			if (u.Host != "" && u.Host != "localhost") || !filepath.IsAbs(u.Path) {
				return fmt.Errorf("log file %q must be absolute: %w", name, errdefs.ErrInvalidArgument)
			}
			if f := u.Query().Get("format"); f != "" && f != "cri" {
				return fmt.Errorf("log file %q: format %q: only \"cri\" is known: %w", name, f, errdefs.ErrInvalidArgument)
			}
			continue
		}
		if err == nil && u.Scheme != "" && u.Scheme != "fifo" {
			return fmt.Errorf("stdio %q: scheme %q: %w", name, u.Scheme, errdefs.ErrNotImplemented)
		}
		if _, err := fifoPath(name); err != nil {
			return err
		}
	}
	if s.Stdin != "" && strings.HasPrefix(s.Stdin, "file://") {
		return fmt.Errorf("stdin %q must be a fifo: %w", s.Stdin, errdefs.ErrInvalidArgument)
	}
	return nil
}

// processIO connects a process's streams to their destinations and copies
// between them for the life of the process.
type processIO struct {
	stdio stdio

	// pipe mode: the runtime gets the child ends of rio.
	rio runc.IO
	// terminal mode: runc hands the pty master over socket.
	socket  *runc.Socket
	console console.Console

	stdinMu sync.Mutex
	stdin   io.WriteCloser // the process's stdin, closed by CloseIO
	// stdinHold is the shim's own write end of the stdin FIFO: the process
	// sees EOF on CloseIO, not when a client (an attach, corrald itself)
	// closes its end, as containerd's shim does.
	stdinHold io.Closer
	stdinDone chan struct{} // closed when the stdin copy ends

	outs *outputs
	// fans hand stdout (0) and stderr (1) to attachers beside the log.
	fans [2]fanout

	outputs sync.WaitGroup // copies towards stdout/stderr
	closers []io.Closer
}

// newProcessIO prepares the streams before the runtime starts the process.
// uid and gid own the pipes so a process running as another user can use them.
func newProcessIO(s stdio, uid, gid int) (*processIO, error) {
	p := &processIO{stdio: s}
	if s.Terminal {
		sock, err := runc.NewTempConsoleSocket()
		if err != nil {
			return nil, fmt.Errorf("create console socket: %w", err)
		}
		p.socket = sock
		return p, nil
	}
	if s.empty() {
		// Without any stream go-runc would capture the runtime's output in a
		// buffer that the container inherits and never closes.
		rio, err := runc.NewNullIO()
		if err != nil {
			return nil, err
		}
		p.rio = rio
		return p, nil
	}
	rio, err := runc.NewPipeIO(uid, gid, func(o *runc.IOOption) {
		o.OpenStdin = s.Stdin != ""
		o.OpenStdout = true
		o.OpenStderr = true
	})
	if err != nil {
		return nil, fmt.Errorf("create stdio pipes: %w", err)
	}
	p.rio = rio
	return p, nil
}

// consoleSocket is what the runtime needs to pass the pty master back; nil in
// pipe mode.
func (p *processIO) consoleSocket() runc.ConsoleSocket {
	if p.socket == nil {
		return nil
	}
	return p.socket
}

// runtimeIO is what the runtime's child gets; nil in terminal mode.
func (p *processIO) runtimeIO() runc.IO { return p.rio }

// start begins copying once the runtime has created the process. In terminal
// mode it first receives the pty master from the runtime.
func (p *processIO) start(ctx context.Context) error {
	var stdout, stderr io.Reader
	var stdinDst io.WriteCloser
	if p.socket != nil {
		con, err := p.socket.ReceiveMaster()
		p.socket.Close()
		p.socket = nil
		if err != nil {
			return fmt.Errorf("receive pty master: %w", err)
		}
		p.console = con
		p.closers = append(p.closers, con)
		stdout = eioAsEOF{con}
		stdinDst = nopWriteCloser{con}
	} else {
		if !p.stdio.empty() {
			stdout = p.rio.Stdout()
			stderr = p.rio.Stderr()
			stdinDst = p.rio.Stdin()
		}
		p.closers = append(p.closers, p.rio)
	}

	outs, err := openOutputs(ctx, p.stdio.Stdout, p.stdio.Stderr, p.console != nil)
	if err != nil {
		return err
	}
	p.outs = outs
	p.closers = append(p.closers, outs)
	for i, s := range []struct {
		src io.Reader
		dst io.WriteCloser
	}{{stdout, outs.stdout}, {stderr, outs.stderr}} {
		if s.src == nil {
			// A terminal has no stderr: an attach to it ends at once.
			p.fans[i].close()
			continue
		}
		if s.dst == nil {
			s.dst = nopWriteCloser{io.Discard}
		}
		p.copyOut(&teeWriter{log: s.dst, fan: &p.fans[i]}, s.src)
	}

	if p.stdio.Stdin != "" && stdinDst != nil {
		in, err := openInput(p.stdio.Stdin)
		if err != nil {
			return err
		}
		p.closers = append(p.closers, in)
		// The hold must be open before any client can write: fifo.OpenFifo
		// opens in the background, and a client that wrote and closed
		// before that would give the copy below EOF, ending stdin for
		// good. O_RDWR on a FIFO opens at once on Linux, with or without
		// a reader; the shim never reads from it.
		hold, err := os.OpenFile(strings.TrimPrefix(p.stdio.Stdin, "fifo://"), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("open stdin fifo %q: %w", p.stdio.Stdin, err)
		}
		done := make(chan struct{})
		p.stdinMu.Lock()
		p.stdin = stdinDst
		p.stdinHold = hold
		p.stdinDone = done
		p.stdinMu.Unlock()
		go func() {
			defer close(done)
			buf := copyBuffers.Get().(*[]byte)
			defer copyBuffers.Put(buf)
			_, _ = io.CopyBuffer(stdinDst, in, *buf)
			// Every writer closed its end, the shim's own last (CloseIO):
			// the process sees EOF, as on a terminal's ^D or a closed pipe.
			p.endStdin()
		}()
	}
	return nil
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (p *processIO) copyOut(dst io.WriteCloser, src io.Reader) {
	p.outputs.Add(1)
	go func() {
		defer p.outputs.Done()
		buf := copyBuffers.Get().(*[]byte)
		defer copyBuffers.Put(buf)
		_, _ = io.CopyBuffer(dst, src, *buf)
		dst.Close()
	}()
}

// stdinDrain bounds how long CloseIO lets what clients wrote reach the
// process before it gets EOF anyway.
const stdinDrain = 2 * time.Second

// closeStdin gives the process EOF on stdin (CloseIO). The shim's own end
// closes now; what clients wrote is still copied, and once their ends are
// closed too the process sees EOF. A client that keeps its end open holds
// it for stdinDrain at most.
func (p *processIO) closeStdin() {
	p.stdinMu.Lock()
	if p.stdinHold != nil {
		p.stdinHold.Close()
		p.stdinHold = nil
	}
	done := p.stdinDone
	p.stdinMu.Unlock()
	if done == nil {
		p.endStdin()
		return
	}
	go func() {
		t := time.NewTimer(stdinDrain)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			p.endStdin()
		}
	}()
}

// endStdin closes the process's end of stdin; a terminal stays open, as
// it is also the process's stdout.
func (p *processIO) endStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin != nil && p.console == nil {
		p.stdin.Close()
	}
	p.stdin = nil
}

// reopen reopens the log files the output goes to (log rotation).
func (p *processIO) reopen() error {
	if p.outs == nil {
		return fmt.Errorf("the process logs to no file: %w", errdefs.ErrFailedPrecondition)
	}
	return p.outs.reopen()
}

// attach copies stdout and stderr, from now on, to FIFOs a client reads.
func (p *processIO) attach(stdout, stderr string) error {
	var opened []*os.File
	for _, path := range []string{stdout, stderr} {
		if path == "" {
			opened = append(opened, nil)
			continue
		}
		f, err := openAttachFifo(path)
		if err != nil {
			for _, o := range opened {
				if o != nil {
					o.Close()
				}
			}
			return err
		}
		opened = append(opened, f)
	}
	var errs []error
	for i, f := range opened {
		if f != nil {
			errs = append(errs, p.fans[i].add(f))
		}
	}
	return errors.Join(errs...)
}

// wait waits until the process's output has been copied out, or until
// timeout: a child that outlives the process may hold the pipe open forever,
// and that must not hold back the exit.
func (p *processIO) wait(timeout time.Duration) {
	done := make(chan struct{})
	go func() { p.outputs.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (p *processIO) resize(width, height uint32) error {
	if p.console == nil {
		return fmt.Errorf("process has no terminal: %w", errdefs.ErrFailedPrecondition)
	}
	return p.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// close releases every stream; the copies end with them.
func (p *processIO) close() {
	if p.socket != nil {
		p.socket.Close()
		p.socket = nil
	}
	p.stdinMu.Lock()
	if p.stdinHold != nil {
		p.stdinHold.Close()
		p.stdinHold = nil
	}
	p.stdinMu.Unlock()
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i].Close()
	}
	p.closers = nil
	p.fans[0].close()
	p.fans[1].close()
}

// outputs holds the opened stdout and stderr destinations; when both name
// the same destination it is opened once and closed after both copies end.
type outputs struct {
	stdout, stderr io.WriteCloser
	all            []io.Closer
	// files are what log rotation reopens: a plain log file, or the
	// CRI-format log over one, which starts the new file as it must.
	files []interface{ reopen() error }
}

// reopen reopens every log file by its path.
func (o *outputs) reopen() error {
	if len(o.files) == 0 {
		return fmt.Errorf("the process logs to no file: %w", errdefs.ErrFailedPrecondition)
	}
	var errs []error
	for _, f := range o.files {
		errs = append(errs, f.reopen())
	}
	return errors.Join(errs...)
}

func (o *outputs) Close() error {
	var errs []error
	for _, c := range o.all {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// openOutputs opens where stdout and stderr go. tty says the process writes
// to a terminal, which a CRI-format log marks and whose line ends it
// cleans up.
func openOutputs(ctx context.Context, stdout, stderr string, tty bool) (*outputs, error) {
	o := &outputs{}
	// open returns the writer for one stream; a destination asking for the
	// CRI log format gets a record writer over the file.
	open := func(dest, stream string) (io.WriteCloser, *criLogFile, error) {
		w, err := openOutput(ctx, dest)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", stream, err)
		}
		o.all = append(o.all, w)
		lf, isFile := w.(*logFile)
		if !criFormat(dest) {
			if isFile {
				o.files = append(o.files, lf)
			}
			return w, nil, nil
		}
		var reopen func() error
		if isFile {
			reopen = lf.reopen
		}
		cf, err := newCRILogFile(w, tty, time.Now, reopen)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", stream, err)
		}
		if isFile {
			o.files = append(o.files, cf)
		}
		return cf.stream(stream), cf, nil
	}
	if stdout != "" {
		w, lf, err := open(stdout, "stdout")
		if err != nil {
			o.Close()
			return nil, err
		}
		o.stdout = w
		if stderr == stdout {
			if lf != nil {
				o.stderr = lf.stream("stderr")
			} else {
				shared := &sharedWriter{w: w, refs: 2}
				o.stdout, o.stderr = shared, shared
			}
			return o, nil
		}
	}
	if stderr != "" {
		w, _, err := open(stderr, "stderr")
		if err != nil {
			o.Close()
			return nil, err
		}
		o.stderr = w
	}
	return o, nil
}

// criFormat reports whether a file:// destination asks for the CRI log
// format (?format=cri), as corrald does for container logs.
func criFormat(dest string) bool {
	u, err := url.Parse(dest)
	return err == nil && u.Scheme == "file" && u.Query().Get("format") == "cri"
}

// openOutput opens a destination named the way containerd names them: a FIFO
// path, or a file:// URI.
func openOutput(ctx context.Context, dest string) (io.WriteCloser, error) {
	u, err := url.Parse(dest)
	if err == nil && u.Scheme != "" && u.Scheme != "fifo" {
		switch u.Scheme {
		case "file":
			if !filepath.IsAbs(u.Path) {
				return nil, fmt.Errorf("log file %q must be absolute: %w", dest, errdefs.ErrInvalidArgument)
			}
			return openLogFile(u.Path)
		default:
			return nil, fmt.Errorf("stdio scheme %q: %w", u.Scheme, errdefs.ErrNotImplemented)
		}
	}
	path, err := fifoPath(dest)
	if err != nil {
		return nil, err
	}
	// Hold a read end open ourselves: writes then never fail with EPIPE when
	// the client goes away, and opening the write end does not block.
	r, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open fifo %q: %w", path, err)
	}
	w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open fifo %q: %w", path, err)
	}
	return &fifoWriter{WriteCloser: w, reader: r}, nil
}

func openInput(src string) (io.ReadCloser, error) {
	path, err := fifoPath(src)
	if err != nil {
		return nil, err
	}
	// Not tied to the request: stdin outlives the call that set it up.
	r, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open stdin fifo %q: %w", path, err)
	}
	return r, nil
}

// fifoPath checks that a stream names an existing FIFO by absolute path, so
// a typo is an error the caller can act on rather than a hang.
func fifoPath(name string) (string, error) {
	path := strings.TrimPrefix(name, "fifo://")
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("stdio fifo %q must be an absolute path: %w", name, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("stdio fifo %q: %w: %w", name, errdefs.ErrInvalidArgument, err)
	}
	if fi.Mode()&os.ModeNamedPipe == 0 {
		return "", fmt.Errorf("stdio %q is not a fifo (use file:// for a file): %w", name, errdefs.ErrInvalidArgument)
	}
	return path, nil
}

type fifoWriter struct {
	io.WriteCloser
	reader io.Closer
}

func (f *fifoWriter) Close() error {
	err := f.WriteCloser.Close()
	f.reader.Close()
	return err
}

type sharedWriter struct {
	mu   sync.Mutex
	w    io.WriteCloser
	refs int
}

func (s *sharedWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (s *sharedWriter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs--
	if s.refs == 0 {
		return s.w.Close()
	}
	return nil
}

// eioAsEOF turns the EIO a pty master returns once the slave side is closed
// into an ordinary end of stream.
type eioAsEOF struct{ r io.Reader }

func (e eioAsEOF) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	return n, err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// logFile is an output file that log rotation can reopen: the kubelet
// renames it and asks for a reopen, and from then on output goes to a new
// file at the same path. Writes before the reopen land in the renamed file,
// so no line is lost between the two.
type logFile struct {
	path   string
	mu     sync.Mutex
	f      *os.File
	closed bool
}

func openLogFile(path string) (*logFile, error) {
	f, err := createLog(path)
	if err != nil {
		return nil, err
	}
	return &logFile{path: path, f: f}, nil
}

func createLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
}

func (l *logFile) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, os.ErrClosed
	}
	return l.f.Write(b)
}

func (l *logFile) reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("log %s: the process has exited: %w", l.path, errdefs.ErrFailedPrecondition)
	}
	f, err := createLog(l.path)
	if err != nil {
		return fmt.Errorf("reopen log: %w", err)
	}
	l.f.Close()
	l.f = f
	return nil
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.f.Close()
}
