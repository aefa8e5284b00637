package shim

import (
	"bytes"
	"io"
	"sync"
	"time"
)

// maxLogLine is where a line without a newline is cut into partial ("P")
// records, as the kubelet's and containerd's log writers do, so one endless
// line cannot grow the shim's memory.
const maxLogLine = 16 << 10

// criLogFile is a container log in the CRI log format that the kubelet and
// crictl read: one record per line, "<RFC3339Nano time> <stream> <F|P> <text>".
// stdout and stderr share one file; records are written whole under a lock.
type criLogFile struct {
	mu   sync.Mutex
	w    io.WriteCloser
	refs int
	now  func() time.Time
}

// stream returns the writer for one stream ("stdout" or "stderr"); the file
// closes when every stream has.
func (f *criLogFile) stream(name string) io.WriteCloser {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
	return &criLogStream{file: f, name: []byte(name)}
}

// record writes one record. The time is taken under the lock, so the
// records of both streams are in time order in the file, as log readers
// that merge or tail by time expect.
func (f *criLogFile) record(stream []byte, tag byte, line []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
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
		if err := s.emit(line, 'F'); err != nil {
			return 0, err
		}
		p = p[i+1:]
	}
	for len(s.pending) >= maxLogLine {
		if err := s.file.record(s.name, 'P', s.pending[:maxLogLine]); err != nil {
			return 0, err
		}
		s.partial = true
		s.pending = append(s.pending[:0], s.pending[maxLogLine:]...)
	}
	return n, nil
}

func (s *criLogStream) emit(line []byte, tag byte) error {
	for len(line) > maxLogLine {
		if err := s.file.record(s.name, 'P', line[:maxLogLine]); err != nil {
			return err
		}
		line = line[maxLogLine:]
	}
	s.partial = false
	return s.file.record(s.name, tag, line)
}

// Close writes what is left of an unfinished line as a full record, so the
// last words of a process that did not end its line are not lost. A line
// whose pieces all went out as "P" records gets an empty "F" to end it:
// a reader joins "P" records until an "F", and would otherwise wait for
// the rest of the line forever.
func (s *criLogStream) Close() error {
	if len(s.pending) > 0 || s.partial {
		s.emit(s.pending, 'F')
		s.pending = nil
	}
	return s.file.release()
}
