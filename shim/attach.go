package shim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// attachQueue is how many chunks of output an attacher may fall behind
// before it is cut off: the container and its log never wait for a reader.
const attachQueue = 64

// attachPoll is how often an idle attacher checks whether its reader left,
// so an attach to a quiet container does not hold its FIFO forever.
const attachPoll = 2 * time.Second

// fanout hands one output stream to the attachers of the moment (corrald's
// attach sessions) beside its log. Write never blocks.
type fanout struct {
	mu     sync.Mutex
	subs   map[*attacher]struct{}
	closed bool
}

// Write offers p to every attacher; one whose queue is full is dropped.
func (f *fanout) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for a := range f.subs {
		if a.dead.Load() {
			delete(f.subs, a)
			close(a.ch)
			continue
		}
		select {
		case a.ch <- append([]byte(nil), p...):
		default:
			delete(f.subs, a)
			close(a.ch)
		}
	}
	return len(p), nil
}

// add starts copying to w, which the fanout closes when the stream or the
// reader ends.
func (f *fanout) add(w *os.File) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		w.Close()
		return fmt.Errorf("the process has exited: %w", errdefs.ErrFailedPrecondition)
	}
	if f.subs == nil {
		f.subs = make(map[*attacher]struct{})
	}
	a := &attacher{ch: make(chan []byte, attachQueue), w: w}
	f.subs[a] = struct{}{}
	go a.run()
	return nil
}

// close ends every attacher once it has written what it was handed.
func (f *fanout) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for a := range f.subs {
		close(a.ch)
	}
	f.subs = nil
}

type attacher struct {
	ch   chan []byte
	w    *os.File
	dead atomic.Bool
}

func (a *attacher) run() {
	defer a.w.Close()
	tick := time.NewTicker(attachPoll)
	defer tick.Stop()
	for {
		select {
		case b, ok := <-a.ch:
			if !ok {
				return
			}
			if _, err := a.w.Write(b); err != nil {
				a.leave()
				return
			}
		case <-tick.C:
			if readerGone(a.w) {
				a.leave()
				return
			}
		}
	}
}

// leave marks the attacher for removal and keeps draining its queue until
// the fanout closes it, so a Write never sends to a reader-less channel
// that fills up.
func (a *attacher) leave() {
	a.dead.Store(true)
	go func() {
		for range a.ch {
		}
	}()
}

// readerGone reports a FIFO whose reader closed: poll flags POLLERR on
// the write end then.
func readerGone(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		if n, err := unix.Poll(fds, 0); err == nil && n > 0 {
			gone = fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
		}
	})
	return gone
}

// openAttachFifo opens the write end of a FIFO the caller already reads
// from; without a reader it fails at once instead of waiting for one.
func openAttachFifo(path string) (*os.File, error) {
	if _, err := fifoPath(path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ENXIO) {
		return nil, fmt.Errorf("attach fifo %q has no reader: open it for reading first: %w", path, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, fmt.Errorf("attach fifo %q: %w", path, err)
	}
	return f, nil
}

// teeWriter writes to the log first, then offers the bytes to attachers.
// A log that fails (a full disk) must not stop the copy: the container
// would then block on a full pipe. So a failed write is dropped, and the
// next one tries again.
type teeWriter struct {
	log io.WriteCloser
	fan *fanout
}

func (t *teeWriter) Write(p []byte) (int, error) {
	_, _ = t.log.Write(p)
	t.fan.Write(p)
	return len(p), nil
}

func (t *teeWriter) Close() error {
	t.fan.close()
	return t.log.Close()
}
