package shim

import (
	"errors"
	"os/exec"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// Exit is the end of one child process as the reaper saw it.
type Exit struct {
	Pid    int
	Status int // exit code, or 128+signal
	At     time.Time
}

// Reaper collects the exit of every child of the shim. The shim is a child
// subreaper, so container processes (whose parent, runc, exits right after
// creating them) are re-parented to it; reaping them all in one place is the
// only way to learn their exit status. The runtime commands the shim runs
// itself are children too, so Reaper also implements go-runc's
// ProcessMonitor: a command's exit goes back to the go-runc call that started
// it, every other exit goes to the handler.
type Reaper struct {
	// reaping is held from each wait4 until its exit is handed on, so a
	// caller of Hold sees every pid either alive (or a zombie) or already
	// reported: never reaped and about to be reused unannounced.
	reaping  sync.Mutex
	mu       sync.Mutex
	commands map[int]chan runc.Exit
	handler  func(Exit)
}

// NewReaper returns a reaper that passes exits of processes it did not start
// itself to handler. handler runs on the reaping goroutine and must not block.
func NewReaper(handler func(Exit)) *Reaper {
	return &Reaper{commands: make(map[int]chan runc.Exit), handler: handler}
}

// Start starts c and registers it before any SIGCHLD can be processed, so its
// exit is never mistaken for a container's.
func (r *Reaper) Start(c *exec.Cmd) (chan runc.Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := c.Start(); err != nil {
		return nil, err
	}
	ch := make(chan runc.Exit, 1)
	r.commands[c.Process.Pid] = ch
	return ch, nil
}

// StartLocked is Start; the shim never sets PdeathSignal, so go-runc only
// calls it if a caller asks for a locked OS thread, which a reaped child does
// not need.
func (r *Reaper) StartLocked(c *exec.Cmd) (chan runc.Exit, error) {
	return r.Start(c)
}

// Wait waits for the exit of a command started by Start.
func (r *Reaper) Wait(c *exec.Cmd, ch chan runc.Exit) (int, error) {
	e := <-ch
	// The process is already reaped, so this only waits for exec's copying
	// goroutines to flush the command's output; its ECHILD error is expected.
	_ = c.Wait()
	return e.Status, nil
}

// Hold runs fn while no child is reaped: a pid fn finds still registered
// as a running process cannot be reaped and handed to another process
// meanwhile, so fn may signal it.
func (r *Reaper) Hold(fn func()) {
	r.reaping.Lock()
	defer r.reaping.Unlock()
	fn()
}

// Reap collects every child that has exited. Call it on each SIGCHLD; one
// signal may stand for several exits.
func (r *Reaper) Reap() {
	for r.reapOne() {
	}
}

// reapOne reaps one exited child and hands its exit on; false when there
// was none.
func (r *Reaper) reapOne() bool {
	r.reaping.Lock()
	defer r.reaping.Unlock()
	for {
		var ws unix.WaitStatus
		var ru unix.Rusage
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, &ru)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return false
		}
		e := Exit{Pid: pid, Status: exitStatus(ws), At: time.Now()}
		r.mu.Lock()
		ch, ok := r.commands[pid]
		if ok {
			delete(r.commands, pid)
		}
		r.mu.Unlock()
		if ok {
			ch <- runc.Exit{Pid: pid, Status: e.Status, Timestamp: e.At}
			close(ch)
			return true
		}
		if r.handler != nil {
			r.handler(e)
		}
		return true
	}
}

// exitStatus folds a wait status into the shell's convention: the exit code,
// or 128+signal for a process killed by a signal.
func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
