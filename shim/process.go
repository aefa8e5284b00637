package shim

import (
	"fmt"
	"sync"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

type processState int

const (
	stateCreated processState = iota
	stateRunning
	statePaused
	stateStopped
)

func (s processState) status() task.Status {
	switch s {
	case stateCreated:
		return task.Status_CREATED
	case stateRunning:
		return task.Status_RUNNING
	case statePaused:
		return task.Status_PAUSED
	case stateStopped:
		return task.Status_STOPPED
	}
	return task.Status_UNKNOWN
}

// exitFlushTimeout bounds how long an exit waits for the process's output to
// drain: a background child holding stdout open must not hide the exit.
const exitFlushTimeout = 2 * time.Second

// process is a container's init process (id "") or one of its execs.
type process struct {
	id    string // exec ID, "" for init
	cid   string // container ID
	stdio stdio
	spec  *specs.Process // execs only

	mu         sync.Mutex
	state      processState
	pid        int
	exitStatus int
	exitedAt   time.Time
	io         *processIO
	// startedOnCreate is set when Create also started the process.
	startedOnCreate bool
	// unmade is set while the runtime has no container for this init
	// process yet (CreateAtStartAnnotation): Start makes and starts it.
	unmade bool

	// exited is closed once the exit is recorded and the output drained.
	exited     chan struct{}
	exitedOnce sync.Once
}

func (p *process) closeExited() { p.exitedOnce.Do(func() { close(p.exited) }) }

func newProcess(cid, id string, s stdio, spec *specs.Process) *process {
	return &process{id: id, cid: cid, stdio: s, spec: spec, exited: make(chan struct{})}
}

// eventID is the process's ID in events: the container ID for init.
func (p *process) eventID() string {
	if p.id == "" {
		return p.cid
	}
	return p.id
}

func (p *process) String() string {
	if p.id == "" {
		return fmt.Sprintf("container %s", p.cid)
	}
	return fmt.Sprintf("exec %s in container %s", p.id, p.cid)
}

// setExited records the exit once; it reports false for a second report.
func (p *process) setExited(status int, at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == stateStopped {
		return false
	}
	p.state = stateStopped
	p.exitStatus = status
	p.exitedAt = at
	return true
}

// isUnmade reports whether the runtime has yet to make the container
// (CreateAtStartAnnotation).
func (p *process) isUnmade() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unmade
}

// streams returns the process's stdio, nil before it started.
func (p *process) streams() *processIO {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.io
}

func (p *process) snapshot() (state processState, pid, status int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.pid, p.exitStatus, p.exitedAt
}

// container is one OCI container: its bundle, its runtime and its processes.
type container struct {
	id      string
	bundle  string
	rootfs  string // where the shim mounted the rootfs; "" when the bundle brings its own
	runtime *runc.Runc
	ioUID   int
	ioGID   int
	init    *process
	cgroup  string // memory cgroup dir, for OOM notification and stats; set with init.unmade cleared
	opts    *options.Options
	ownPID  bool // init is PID 1 of a PID namespace of the container's own

	mu    sync.Mutex
	execs map[string]*process
}

func (c *container) process(execID string) (*process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %q in container %q: %w", execID, c.id, errdefs.ErrNotFound)
	}
	return p, nil
}
