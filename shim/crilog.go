package shim

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/errdefs"
)

// maxLogLine is where a line without a newline is cut into partial ("P")
// records, as the kubelet's and containerd's log writers do, so one endless
// line cannot grow the shim's memory.
const maxLogLine = 16 << 10

// ttyMarker is the text of the record that starts the log of a container
// with a terminal, so that a reader (kubectl logs, a log collector) knows
// why there is no stderr and where the line ends went. The CRI log format
// has no stream type or tag for a terminal (Kubernetes left it at
// "stdout", as Docker does, and readers such as the kubelet's reject other
// stream names), so the marker is an ordinary record that every reader
// parses.
const ttyMarker = `[corral] this container has a terminal (tty): stdout and stderr are one stream, logged as stdout, with the terminal's \r\n line ends logged as \n`

// criLogFile is a container log in the CRI log format that the kubelet and
// crictl read: one record per line, "<RFC3339Nano time> <stream> <F|P> <text>".
// stdout and stderr share one file; records are written whole under a lock.
type criLogFile struct {
	mu   sync.Mutex
	w    io.WriteCloser
	refs int
	now  func() time.Time
	// tty is set when the process writes to a terminal: its output comes
	// as stdout only, each line ended by the terminal's "\r\n" (the
	// tty's ONLCR turns the process's "\n" into it). The "\r" is dropped
	// there, so crictl and kubectl print the lines the process wrote, as
	// containerd's log writer does; a "\r" elsewhere in a line (a
	// progress bar) stays. Every file starts with ttyMarker.
	tty bool
	// reopenW reopens the file under w at its path (log rotation); nil
	// when w is not a file.
	reopenW func() error
}

// newCRILogFile starts a CRI-format log over w; a terminal's log starts
// with the marker record.
func newCRILogFile(w io.WriteCloser, tty bool, now func() time.Time, reopen func() error) (*criLogFile, error) {
	f := &criLogFile{w: w, now: now, tty: tty, reopenW: reopen}
	if tty {
		if err := f.record([]byte("stdout"), 'F', []byte(ttyMarker)); err != nil {
			return nil, fmt.Errorf("log: %w", err)
		}
	}
	return f, nil
}

// reopen reopens the file at its path and, for a terminal, starts the new
// file with the marker. It holds the lock throughout, so no record lands
// in the new file before the marker, and times stay in order.
func (f *criLogFile) reopen() error {
	if f.reopenW == nil {
		return fmt.Errorf("the process logs to no file: %w", errdefs.ErrFailedPrecondition)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.reopenW(); err != nil {
		return err
	}
	if f.tty {
		return f.writeRecord([]byte("stdout"), 'F', []byte(ttyMarker))
	}
	return nil
}

// stream returns the writer for one stream ("stdout" or "stderr"); the file
// closes when every stream has.
func (f *criLogFile) stream(name string) io.WriteCloser {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
	return &criLogStream{file: f, name: []byte(name), tty: f.tty}
}

// record writes one record. The time is taken under the lock, so the
// records of both streams are in time order in the file, as log readers
// that merge or tail by time expect.
func (f *criLogFile) record(stream []byte, tag byte, line []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writeRecord(stream, tag, line)
}

func (f *criLogFile) writeRecord(stream []byte, tag byte, line []byte) error {
	var b bytes.Buffer
	b.Grow(len(line) + 48)
	b.WriteString(f.now().Format(time.RFC3339Nano))
	b.WriteByte(' ')
	b.Write(stream)
	b.WriteByte(' ')
	b.WriteByte(tag)
	b.WriteByte(' ')
	b.Write(line)
	b.WriteByte('\n')
	_, err := f.w.Write(b.Bytes())
	return err
}

func (f *criLogFile) release() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refs--
	if f.refs == 0 {
		return f.w.Close()
	}
	return nil
}

type criLogStream struct {
	file    *criLogFile
	name    []byte
	pending []byte
	// partial is set while the last record written was a "P": the line
	// it began is not finished until an "F" record ends it.
	partial bool
	tty     bool // drop the "\r" of "\r\n"
}

// Write turns the bytes into records: complete lines as "F", a line longer
// than maxLogLine in "P" pieces; an unfinished line waits for the rest.
func (s *criLogStream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.pending = append(s.pending, p...)
			break
		}
		line := p[:i]
		if len(s.pending) > 0 {
			line = append(s.pending, line...)
			s.pending = s.pending[:0]
		}
		if err := s.emit(line); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	for len(s.pending) >= maxLogLine {
		if s.tty && len(s.pending) == maxLogLine && s.pending[maxLogLine-1] == '\r' {
			// The "\r" may begin a "\r\n" whose "\n" has not come yet:
			// keep it back until the next byte says.
			break
		}
		if err := s.file.record(s.name, 'P', s.pending[:maxLogLine]); err != nil {
			return 0, err
		}
		s.partial = true
		s.pending = append(s.pending[:0], s.pending[maxLogLine:]...)
	}
	return n, nil
}

// emit writes a complete line, in pieces if it is long.
func (s *criLogStream) emit(line []byte) error {
	if s.tty && len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return s.finish(line)
}

// finish writes the rest of a line: "P" pieces while it is long, then "F".
func (s *criLogStream) finish(line []byte) error {
	for len(line) > maxLogLine {
		if err := s.file.record(s.name, 'P', line[:maxLogLine]); err != nil {
			return err
		}
		line = line[maxLogLine:]
	}
	s.partial = false
	return s.file.record(s.name, 'F', line)
}

// Close writes what is left of an unfinished line as a full record, so the
// last words of a process that did not end its line are not lost. A line
// whose pieces all went out as "P" records gets an empty "F" to end it:
// a reader joins "P" records until an "F", and would otherwise wait for
// the rest of the line forever.
func (s *criLogStream) Close() error {
	if len(s.pending) > 0 || s.partial {
		// Not emit: without its "\n", a last "\r" is the process's own.
		s.finish(s.pending)
		s.pending = nil
	}
	return s.file.release()
}
