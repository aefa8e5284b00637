package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Version is reported by Connect; set at build time.
var Version = "0.1.0-dev"

// orphanTTL is how long the exit of a pid nobody has claimed yet is kept: an
// exec can exit before the shim has read its pid file, but a pid is not
// reused that fast.
const orphanTTL = time.Minute

// Service implements containerd.task.v2.Task for every container of one pod.
type Service struct {
	ctx       context.Context // ends with the shim
	cfg       Config
	log       *slog.Logger
	publisher *Publisher
	shutdown  func()
	// reaper, when set, lets Kill signal an init process itself (see
	// signalInit); without it every kill goes through the runtime.
	reaper *Reaper

	mu         sync.Mutex
	containers map[string]*container
	creating   map[string]struct{}
	pids       map[int]*process
	orphans    map[int]Exit
}

var _ taskapi.TTRPCTaskService = (*Service)(nil)

// NewService returns the Task service. shutdown is called when the last
// container is gone and the client asks the shim to end.
func NewService(ctx context.Context, cfg Config, log *slog.Logger, publisher *Publisher, shutdown func()) *Service {
	return &Service{
		ctx:        ctx,
		cfg:        cfg,
		log:        log,
		publisher:  publisher,
		shutdown:   shutdown,
		containers: make(map[string]*container),
		creating:   make(map[string]struct{}),
		pids:       make(map[int]*process),
		orphans:    make(map[int]Exit),
	}
}

// checkID accepts what runc and containerd accept,
// ^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$, so a bad ID fails here with a clear
// message instead of deep in the runtime. Written out rather than as a
// regexp: compiled, that bounded repetition stays on the heap of every
// shim as 120 KB.
func checkID(kind, id string) error {
	ok := len(id) > 0 && len(id) <= 128 && isAlnum(id[0])
	for i := 1; ok && i < len(id); i++ {
		c := id[i]
		ok = isAlnum(c) || c == '_' || c == '.' || c == '+' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%s %q: must be 1-128 characters of [A-Za-z0-9_.+-], not starting with a symbol: %w", kind, id, errdefs.ErrInvalidArgument)
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func (s *Service) container(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

func (s *Service) lookup(id, execID string) (*container, *process, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := c.process(execID)
	if err != nil {
		return nil, nil, err
	}
	return c, p, nil
}

// Create creates a container from an OCI bundle; it is not started yet.
func (s *Service) Create(ctx context.Context, r *taskapi.CreateTaskRequest) (_ *taskapi.CreateTaskResponse, retErr error) {
	if err := checkID("container ID", r.ID); err != nil {
		return nil, err
	}
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("restore from checkpoint: %w", errdefs.ErrNotImplemented)
	}
	// A Create is finished whole even if its caller leaves (corrald
	// killed, its connection closed): a runtime killed half-way leaves a
	// container that neither the shim nor corrald knows of.
	ctx = context.WithoutCancel(ctx)
	spec, err := readBundle(r.Bundle)
	if err != nil {
		return nil, err
	}
	opts, err := parseOptions(r.Options)
	if err != nil {
		return nil, err
	}

	s.mu.Lock()
	_, exists := s.containers[r.ID]
	_, busy := s.creating[r.ID]
	if exists || busy {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %q: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	s.creating[r.ID] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.creating, r.ID)
		s.mu.Unlock()
	}()

	log := s.log.With("container", r.ID)
	// The runtime must finish what it started even if the caller goes away
	// mid-call; a half-created container is worse than a late answer.
	ctx = context.WithoutCancel(ctx)

	if err := writeOptions(r.Bundle, opts); err != nil {
		return nil, err
	}
	c := &container{
		id:      r.ID,
		bundle:  r.Bundle,
		runtime: s.newRuntime(r.Bundle, opts),
		ioUID:   int(opts.IoUid),
		ioGID:   int(opts.IoGid),
		execs:   make(map[string]*process),
		ownPID:  spec.ownPIDNamespace(),
		opts:    opts,
	}
	if len(r.Rootfs) > 0 {
		c.rootfs = filepath.Join(r.Bundle, "rootfs")
		if err := mountRootfs(r.Rootfs, c.rootfs); err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				unmountAll(c.rootfs)
			}
		}()
	}

	st := stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	if err := st.validate(); err != nil {
		return nil, err
	}
	if st.Terminal != spec.Process.Terminal {
		return nil, fmt.Errorf("request terminal=%v but config.json process.terminal=%v: %w", st.Terminal, spec.Process.Terminal, errdefs.ErrInvalidArgument)
	}
	p := newProcess(r.ID, "", st, nil)
	c.init = p
	startNow := spec.Annotations[StartOnCreateAnnotation] == "true"
	if !startNow && spec.Annotations[CreateAtStartAnnotation] == "true" {
		// The runtime makes it at Start (runAtStart); until then it is
		// the rootfs and the record.
		p.unmade = true
		s.mu.Lock()
		s.containers[r.ID] = c
		s.mu.Unlock()
		log.Info("created; the runtime makes it at start", "bundle", r.Bundle)
		s.publisher.Publish(TopicCreate, createEvent(r, 0))
		return &taskapi.CreateTaskResponse{}, nil
	}
	pio, err := newProcessIO(st, c.ioUID, c.ioGID)
	if err != nil {
		return nil, err
	}
	p.io = pio
	defer func() {
		if retErr != nil {
			pio.close()
		}
	}()

	pidFile := filepath.Join(r.Bundle, "init.pid")
	op := "create"
	if startNow {
		op = "run"
	}
	err = c.call(op, func() error {
		if startNow {
			_, err := c.runtime.Run(ctx, r.ID, r.Bundle, c.runtimeOpts(pio, pidFile, true))
			closeAfterStart(pio)
			return err
		}
		return c.runtime.Create(ctx, r.ID, r.Bundle, c.runtimeOpts(pio, pidFile, false))
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			c.runtime.Delete(ctx, r.ID, &runc.DeleteOpts{Force: true})
		}
	}()
	pid, err := readPidFile(pidFile)
	if err != nil {
		return nil, err
	}
	if err := pio.start(ctx); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.pid = pid
	if startNow {
		p.state = stateRunning
		p.startedOnCreate = true
	}
	p.mu.Unlock()
	c.cgroup = memoryCgroup(pid)

	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()
	s.registerPid(pid, p)

	log.Info("created", "pid", pid, "bundle", r.Bundle, "runtime", c.runtime.Command)
	s.publisher.Publish(TopicCreate, createEvent(r, pid))
	if startNow {
		s.startOOMWatch(ctx, c)
		log.Info("started", "pid", pid)
		s.publisher.Publish(TopicStart, &eventstypes.TaskStart{ContainerID: r.ID, Pid: uint32(pid)})
	}
	return &taskapi.CreateTaskResponse{Pid: uint32(pid)}, nil
}

// Start starts a created container or exec.
func (s *Service) Start(ctx context.Context, r *taskapi.StartRequest) (*taskapi.StartResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	ctx = context.WithoutCancel(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != stateCreated {
		if p.startedOnCreate {
			// Started by Create (StartOnCreateAnnotation): the caller's
			// Start is the one it was going to make anyway.
			return &taskapi.StartResponse{Pid: uint32(p.pid)}, nil
		}
		return nil, fmt.Errorf("%s is %s, not created: %w", p, p.state.status(), errdefs.ErrFailedPrecondition)
	}
	if p.id == "" {
		if p.unmade {
			return s.runAtStart(ctx, c, p)
		}
		if err := c.call("start", func() error { return c.runtime.Start(ctx, c.id) }); err != nil {
			return nil, err
		}
		p.state = stateRunning
		s.startOOMWatch(ctx, c)
		s.log.Info("started", "container", c.id, "pid", p.pid)
		s.publisher.Publish(TopicStart, &eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(p.pid)})
		return &taskapi.StartResponse{Pid: uint32(p.pid)}, nil
	}

	if st, _, _, _ := c.init.snapshot(); st != stateRunning && st != statePaused {
		return nil, fmt.Errorf("container %q is %s: cannot start %s: %w", c.id, st.status(), p, errdefs.ErrFailedPrecondition)
	}
	pio, err := newProcessIO(p.stdio, c.ioUID, c.ioGID)
	if err != nil {
		return nil, err
	}
	pidFile := filepath.Join(c.bundle, "exec-"+p.id+".pid")
	defer os.Remove(pidFile)
	err = c.call("exec", func() error {
		return c.runtime.Exec(ctx, c.id, *p.spec, &runc.ExecOpts{
			IO:            pio.runtimeIO(),
			PidFile:       pidFile,
			ConsoleSocket: pio.consoleSocket(),
			Detach:        true,
		})
	})
	if err != nil {
		pio.close()
		return nil, err
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		pio.close()
		return nil, err
	}
	p.io = pio
	p.pid = pid
	p.state = stateRunning
	s.registerPid(pid, p)
	if err := pio.start(ctx); err != nil {
		// The process runs but its streams are lost: stop it rather than
		// leave it running unseen.
		unix.Kill(pid, unix.SIGKILL)
		return nil, err
	}
	s.log.Info("exec started", "container", c.id, "exec", p.id, "pid", pid)
	s.publisher.Publish(TopicExecStarted, &eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: p.id, Pid: uint32(pid)})
	return &taskapi.StartResponse{Pid: uint32(pid)}, nil
}

// runAtStart makes and starts, with one runtime process, a container
// created with CreateAtStartAnnotation. The caller holds p.mu.
func (s *Service) runAtStart(ctx context.Context, c *container, p *process) (*taskapi.StartResponse, error) {
	pio, err := newProcessIO(p.stdio, c.ioUID, c.ioGID)
	if err != nil {
		return nil, err
	}
	pidFile := filepath.Join(c.bundle, "init.pid")
	err = c.call("run", func() error {
		_, err := c.runtime.Run(ctx, c.id, c.bundle, c.runtimeOpts(pio, pidFile, true))
		closeAfterStart(pio)
		return err
	})
	var pid int
	if err == nil {
		if pid, err = readPidFile(pidFile); err == nil {
			err = pio.start(ctx)
		}
	}
	if err != nil {
		// A failed run removes what it made; a run that worked but whose
		// pid or streams are lost must not leave its process running
		// unseen. Either way the container is as it was: unmade.
		c.runtime.Delete(ctx, c.id, &runc.DeleteOpts{Force: true})
		pio.close()
		return nil, err
	}
	p.io = pio
	p.pid = pid
	p.unmade = false
	p.state = stateRunning
	c.cgroup = memoryCgroup(pid)
	s.registerPid(pid, p)
	s.startOOMWatch(ctx, c)
	s.log.Info("started", "container", c.id, "pid", pid)
	s.publisher.Publish(TopicStart, &eventstypes.TaskStart{ContainerID: c.id, Pid: uint32(pid)})
	return &taskapi.StartResponse{Pid: uint32(pid)}, nil
}

// runtimeOpts is what runc create and runc run get for the init process.
func (c *container) runtimeOpts(pio *processIO, pidFile string, detach bool) *runc.CreateOpts {
	return &runc.CreateOpts{
		IO:            pio.runtimeIO(),
		PidFile:       pidFile,
		ConsoleSocket: pio.consoleSocket(),
		NoPivot:       c.opts.NoPivotRoot,
		NoNewKeyring:  c.opts.NoNewKeyring,
		Detach:        detach,
	}
}

// createEvent is the TaskCreate event of r; pid 0 for a container the
// runtime makes only at Start.
func createEvent(r *taskapi.CreateTaskRequest, pid int) *eventstypes.TaskCreate {
	return &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Pid:         uint32(pid),
	}
}

// closeAfterStart closes the shim's copies of the ends of the stdio pipes
// the container got: go-runc does it in Create, not in Run, and while the
// shim holds them the container's output never reaches EOF.
func closeAfterStart(pio *processIO) {
	if c, ok := pio.runtimeIO().(runc.StartCloser); ok {
		c.CloseAfterStart()
	}
}

// endUnmade ends the init process of a container the runtime has not made
// as the runtime's blocked init would end on sig: exited with 128+sig,
// reported like any exit. Signals whose default is to be ignored change
// nothing. It reports whether the process was unmade and created.
func (s *Service) endUnmade(p *process, sig unix.Signal) bool {
	p.mu.Lock()
	if !p.unmade || p.state != stateCreated {
		p.mu.Unlock()
		return false
	}
	switch sig {
	case unix.SIGCHLD, unix.SIGCONT, unix.SIGURG, unix.SIGWINCH:
		p.mu.Unlock()
		return true
	}
	p.state, p.exitStatus, p.exitedAt = stateStopped, 128+int(sig), time.Now()
	status, at := p.exitStatus, p.exitedAt
	p.mu.Unlock()
	s.log.Info("exited before the runtime made it", "container", p.cid, "status", status)
	s.publisher.Publish(TopicExit, &eventstypes.TaskExit{
		ContainerID: p.cid,
		ID:          p.eventID(),
		ExitStatus:  uint32(status),
		ExitedAt:    timestamppb.New(at),
	})
	p.closeExited()
	return true
}

// registerPid ties a pid to its process, or settles the process at once if
// it already exited before the shim learned its pid.
func (s *Service) registerPid(pid int, p *process) {
	s.mu.Lock()
	e, ok := s.orphans[pid]
	if ok {
		delete(s.orphans, pid)
	} else {
		s.pids[pid] = p
	}
	s.mu.Unlock()
	if ok {
		s.processExited(p, e)
	}
}

// HandleExit is the reaper's handler for exits of container processes.
func (s *Service) HandleExit(e Exit) {
	s.mu.Lock()
	p, ok := s.pids[e.Pid]
	if ok {
		delete(s.pids, e.Pid)
	} else {
		s.orphans[e.Pid] = e
		for pid, o := range s.orphans {
			if e.At.Sub(o.At) > orphanTTL {
				delete(s.orphans, pid)
			}
		}
	}
	s.mu.Unlock()
	if ok {
		s.processExited(p, e)
	}
}

// processExited settles a process's exit. It runs on its own goroutine: the
// reaper must never wait for a process lock, since a call holding that lock
// may itself be waiting for the reaper to report a runtime command's exit.
func (s *Service) processExited(p *process, e Exit) {
	go func() {
		if !p.setExited(e.Status, e.At) {
			p.closeExited()
			return
		}
		s.log.Info("exited", "container", p.cid, "exec", p.id, "pid", e.Pid, "status", e.Status)
		// Publish after the output has drained, so a reader that acts on
		// the exit has every line.
		if pio := p.streams(); pio != nil {
			pio.wait(exitFlushTimeout)
		}
		s.publisher.Publish(TopicExit, &eventstypes.TaskExit{
			ContainerID: p.cid,
			ID:          p.eventID(),
			Pid:         uint32(e.Pid),
			ExitStatus:  uint32(e.Status),
			ExitedAt:    timestamppb.New(e.At),
		})
		p.closeExited()
	}()
}

// Delete deletes a stopped (or never started) container or exec.
func (s *Service) Delete(ctx context.Context, r *taskapi.DeleteRequest) (*taskapi.DeleteResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	ctx = context.WithoutCancel(ctx)
	st, pid, _, _ := p.snapshot()
	if st == stateRunning || st == statePaused {
		return nil, fmt.Errorf("cannot delete %s: it is %s; kill it first: %w", p, st.status(), errdefs.ErrFailedPrecondition)
	}

	if p.id != "" {
		if st == stateStopped {
			<-p.exited
		} else {
			// Never started: nothing will exit, so release its waiters.
			p.closeExited()
		}
		c.mu.Lock()
		delete(c.execs, p.id)
		c.mu.Unlock()
		if pio := p.streams(); pio != nil {
			pio.close()
		}
		_, _, status, at := p.snapshot()
		return &taskapi.DeleteResponse{Pid: uint32(pid), ExitStatus: uint32(status), ExitedAt: timestamppb.New(at)}, nil
	}

	// The init process: the runtime removes the container (killing it if it
	// was only created), then the rootfs and streams go.
	if p.isUnmade() {
		// Nothing for the runtime to remove.
		s.endUnmade(p, unix.SIGKILL)
	} else {
		err = c.call("delete", func() error { return c.runtime.Delete(ctx, c.id, &runc.DeleteOpts{Force: st == stateCreated}) })
		if err != nil && !isNotExist(err) {
			return nil, err
		}
	}
	if st == stateCreated {
		select {
		case <-p.exited:
		case <-time.After(exitFlushTimeout + time.Second):
			p.setExited(128+int(unix.SIGKILL), time.Now())
			p.closeExited()
		}
	} else {
		<-p.exited
	}
	if pio := c.init.streams(); pio != nil {
		pio.close()
	}
	c.mu.Lock()
	for _, e := range c.execs {
		if pio := e.streams(); pio != nil {
			pio.close()
		}
	}
	c.execs = nil
	c.mu.Unlock()
	if c.rootfs != "" {
		if err := unmountAll(c.rootfs); err != nil {
			s.log.Warn("unmount rootfs", "container", c.id, "error", err)
		}
	}
	s.mu.Lock()
	delete(s.containers, c.id)
	delete(s.pids, pid)
	s.mu.Unlock()

	_, _, status, at := p.snapshot()
	s.log.Info("deleted", "container", c.id, "status", status)
	s.publisher.Publish(TopicDelete, &eventstypes.TaskDelete{
		ContainerID: c.id,
		ID:          c.id,
		Pid:         uint32(pid),
		ExitStatus:  uint32(status),
		ExitedAt:    timestamppb.New(at),
	})
	return &taskapi.DeleteResponse{Pid: uint32(pid), ExitStatus: uint32(status), ExitedAt: timestamppb.New(at)}, nil
}

// Exec adds an exec process to a running container; Start runs it.
func (s *Service) Exec(ctx context.Context, r *taskapi.ExecProcessRequest) (*emptypb.Empty, error) {
	if err := checkID("exec ID", r.ExecID); err != nil {
		return nil, err
	}
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if st, _, _, _ := c.init.snapshot(); st == stateStopped {
		return nil, fmt.Errorf("container %q has stopped: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if r.Spec == nil || len(r.Spec.Value) == 0 {
		return nil, fmt.Errorf("exec %q: no process spec: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	var spec specs.Process
	if err := json.Unmarshal(r.Spec.Value, &spec); err != nil {
		return nil, fmt.Errorf("exec %q: process spec: %w: %w", r.ExecID, errdefs.ErrInvalidArgument, err)
	}
	if len(spec.Args) == 0 {
		return nil, fmt.Errorf("exec %q: process spec has no args: %w", r.ExecID, errdefs.ErrInvalidArgument)
	}
	spec.Terminal = r.Terminal
	st := stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	if err := st.validate(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.execs[r.ExecID]; ok || c.execs == nil {
		return nil, fmt.Errorf("exec %q in container %q: %w", r.ExecID, c.id, errdefs.ErrAlreadyExists)
	}
	c.execs[r.ExecID] = newProcess(c.id, r.ExecID, st, &spec)
	s.publisher.Publish(TopicExecAdded, &eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

// State reports a process's state, with its exit once it has exited.
func (s *Service) State(ctx context.Context, r *taskapi.StateRequest) (*taskapi.StateResponse, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st, pid, status, at := p.snapshot()
	resp := &taskapi.StateResponse{
		ID:       p.eventID(),
		Bundle:   c.bundle,
		Pid:      uint32(pid),
		Status:   st.status(),
		Stdin:    p.stdio.Stdin,
		Stdout:   p.stdio.Stdout,
		Stderr:   p.stdio.Stderr,
		Terminal: p.stdio.Terminal,
		ExecID:   p.id,
	}
	if st == stateStopped {
		resp.ExitStatus = uint32(status)
		resp.ExitedAt = timestamppb.New(at)
	}
	return resp, nil
}

// Wait blocks until the process has exited and its output has drained.
func (s *Service) Wait(ctx context.Context, r *taskapi.WaitRequest) (*taskapi.WaitResponse, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.exited:
	}
	_, _, status, at := p.snapshot()
	return &taskapi.WaitResponse{ExitStatus: uint32(status), ExitedAt: timestamppb.New(at)}, nil
}

// Kill signals a process, or with All every process of the container.
func (s *Service) Kill(ctx context.Context, r *taskapi.KillRequest) (*emptypb.Empty, error) {
	c, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Signal == 0 || r.Signal > 64 {
		return nil, fmt.Errorf("signal %d: %w", r.Signal, errdefs.ErrInvalidArgument)
	}
	// Before the snapshot: a Start that holds the process makes it first.
	if p.id == "" && s.endUnmade(p, unix.Signal(r.Signal)) {
		return &emptypb.Empty{}, nil
	}
	st, pid, _, _ := p.snapshot()
	if st == stateStopped && !r.All {
		return nil, fmt.Errorf("%s: process already finished: %w", p, errdefs.ErrNotFound)
	}
	if p.id == "" && s.reaper != nil && (st == stateRunning || st == stateCreated) &&
		(!r.All || (r.Signal == uint32(unix.SIGKILL) && c.ownPID)) {
		return s.signalInit(c, p, pid, unix.Signal(r.Signal))
	}
	if p.id != "" {
		if st == stateCreated {
			return nil, fmt.Errorf("%s has not started: %w", p, errdefs.ErrFailedPrecondition)
		}
		if err := unix.Kill(pid, unix.Signal(r.Signal)); err != nil {
			if errors.Is(err, unix.ESRCH) {
				return nil, fmt.Errorf("%s: process already finished: %w", p, errdefs.ErrNotFound)
			}
			return nil, fmt.Errorf("kill %s: %w", p, err)
		}
		return &emptypb.Empty{}, nil
	}
	err = c.call("kill", func() error {
		return c.runtime.Kill(context.WithoutCancel(ctx), c.id, int(r.Signal), &runc.KillOpts{All: r.All})
	})
	if isNotExist(err) || isNotRunning(err) {
		return nil, fmt.Errorf("%s: process already finished: %w", p, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// signalInit sends sig to a container's init process without running the
// runtime: what runc kill does for one process, minus a runc process of
// its own (tens of milliseconds, twice per pod on every stop). It is used
// for a signal to the init process alone, and for SIGKILL to all of a
// container whose init is PID 1 of its own namespace, which the kernel
// then empties. The reaper is held so the pid, still registered as this
// process, cannot be reaped and reused before the signal lands. A paused
// container goes through the runtime, which knows its cgroup is frozen.
func (s *Service) signalInit(c *container, p *process, pid int, sig unix.Signal) (*emptypb.Empty, error) {
	var alive bool
	var err error
	s.reaper.Hold(func() {
		s.mu.Lock()
		alive = s.pids[pid] == p
		s.mu.Unlock()
		if alive {
			err = unix.Kill(pid, sig)
		}
	})
	if !alive || errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("%s: process already finished: %w", p, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("kill %s in container %s: %w", p, c.id, err)
	}
	return &emptypb.Empty{}, nil
}

// Pids lists the processes of a container, naming the exec each belongs to.
func (s *Service) Pids(ctx context.Context, r *taskapi.PidsRequest) (*taskapi.PidsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if c.init.isUnmade() {
		return &taskapi.PidsResponse{}, nil
	}
	var pids []int
	err = c.call("ps", func() (err error) { pids, err = c.runtime.Ps(ctx, c.id); return err })
	if err != nil {
		return nil, err
	}
	execOf := map[int]string{}
	c.mu.Lock()
	for id, e := range c.execs {
		if _, pid, _, _ := e.snapshot(); pid > 0 {
			execOf[pid] = id
		}
	}
	c.mu.Unlock()
	resp := &taskapi.PidsResponse{}
	for _, pid := range pids {
		info := &task.ProcessInfo{Pid: uint32(pid)}
		if id, ok := execOf[pid]; ok {
			if a, err := marshalAny(&options.ProcessDetails{ExecID: id}); err == nil {
				info.Info = a
			}
		}
		resp.Processes = append(resp.Processes, info)
	}
	return resp, nil
}

// Pause freezes every process of the container.
func (s *Service) Pause(ctx context.Context, r *taskapi.PauseRequest) (*emptypb.Empty, error) {
	return s.setPaused(ctx, r.ID, true)
}

// Resume thaws a paused container.
func (s *Service) Resume(ctx context.Context, r *taskapi.ResumeRequest) (*emptypb.Empty, error) {
	return s.setPaused(ctx, r.ID, false)
}

func (s *Service) setPaused(ctx context.Context, id string, pause bool) (*emptypb.Empty, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, err
	}
	p := c.init
	p.mu.Lock()
	defer p.mu.Unlock()
	want, from := statePaused, stateRunning
	if !pause {
		want, from = stateRunning, statePaused
	}
	if p.state != from {
		return nil, fmt.Errorf("%s is %s: %w", p, p.state.status(), errdefs.ErrFailedPrecondition)
	}
	ctx = context.WithoutCancel(ctx)
	if pause {
		err = c.call("pause", func() error { return c.runtime.Pause(ctx, id) })
	} else {
		err = c.call("resume", func() error { return c.runtime.Resume(ctx, id) })
	}
	if err != nil {
		return nil, err
	}
	p.state = want
	if pause {
		s.publisher.Publish(TopicPaused, &eventstypes.TaskPaused{ContainerID: id})
	} else {
		s.publisher.Publish(TopicResumed, &eventstypes.TaskResumed{ContainerID: id})
	}
	return &emptypb.Empty{}, nil
}

// Checkpoint is not supported: corral does not ship CRIU.
func (s *Service) Checkpoint(ctx context.Context, r *taskapi.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, fmt.Errorf("checkpoint: %w", errdefs.ErrNotImplemented)
}

// ResizePty resizes a process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskapi.ResizePtyRequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	pio := p.streams()
	if pio == nil {
		return nil, fmt.Errorf("%s has not started: %w", p, errdefs.ErrFailedPrecondition)
	}
	if err := pio.resize(r.Width, r.Height); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// CloseIO closes a process's stdin, so it reads EOF.
func (s *Service) CloseIO(ctx context.Context, r *taskapi.CloseIORequest) (*emptypb.Empty, error) {
	_, p, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if pio := p.streams(); r.Stdin && pio != nil {
		pio.closeStdin()
	}
	return &emptypb.Empty{}, nil
}

// Update changes a running container's resources.
func (s *Service) Update(ctx context.Context, r *taskapi.UpdateTaskRequest) (*emptypb.Empty, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return nil, fmt.Errorf("update %q: no resources: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.Resources.Value, &res); err != nil {
		return nil, fmt.Errorf("update %q: resources: %w: %w", r.ID, errdefs.ErrInvalidArgument, err)
	}
	if c.init.isUnmade() {
		// run applies the bundle's config.json, where the caller records
		// the update (CreateAtStartAnnotation).
		return &emptypb.Empty{}, nil
	}
	if err := c.call("update", func() error { return c.runtime.Update(context.WithoutCancel(ctx), c.id, &res) }); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Stats reports the container's cgroup statistics.
func (s *Service) Stats(ctx context.Context, r *taskapi.StatsRequest) (*taskapi.StatsResponse, error) {
	c, err := s.container(r.ID)
	if err != nil {
		return nil, err
	}
	if c.init.isUnmade() {
		return nil, fmt.Errorf("container %q has not started: it has no cgroup yet: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	var st *runc.Stats
	err = c.call("stats", func() (err error) { st, err = c.runtime.Stats(ctx, c.id); return err })
	if err != nil {
		return nil, err
	}
	a, err := statsToAny(st, c.cgroup)
	if err != nil {
		return nil, err
	}
	return &taskapi.StatsResponse{Stats: a}, nil
}

// Connect reports the shim's pid and the container's.
func (s *Service) Connect(ctx context.Context, r *taskapi.ConnectRequest) (*taskapi.ConnectResponse, error) {
	resp := &taskapi.ConnectResponse{ShimPid: uint32(os.Getpid()), Version: Version}
	if c, err := s.container(r.ID); err == nil {
		_, pid, _, _ := c.init.snapshot()
		resp.TaskPid = uint32(pid)
	}
	return resp, nil
}

// Shutdown ends the shim once it serves no container; while it still does,
// the call is a no-op, because other containers of the pod rely on it.
func (s *Service) Shutdown(ctx context.Context, r *taskapi.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.containers) + len(s.creating)
	s.mu.Unlock()
	if n > 0 {
		return &emptypb.Empty{}, nil
	}
	s.log.Info("shutdown requested, no containers left")
	s.shutdown()
	return &emptypb.Empty{}, nil
}

// newRuntime configures the OCI runtime for one container. Its log goes to
// the bundle so a failure can be reported with the runtime's own words.
func (s *Service) newRuntime(bundle string, opts *options.Options) *runc.Runc {
	binary := opts.BinaryName
	if binary == "" {
		binary = "runc"
	}
	return &runc.Runc{
		Command:       binary,
		Root:          runtimeRoot(s.cfg.Address, s.cfg.Namespace, opts.Root),
		Log:           filepath.Join(bundle, "log.json"),
		LogFormat:     runc.JSON,
		SystemdCgroup: opts.SystemdCgroup,
	}
}

// runtimeRoot is where the OCI runtime keeps its state: next to the daemon's
// socket unless the options name a root, always per namespace, as containerd
// does.
func runtimeRoot(address, namespace, root string) string {
	if root == "" {
		root = filepath.Join(filepath.Dir(strings.TrimPrefix(address, "unix://")), "runc")
	}
	return filepath.Join(root, namespace)
}

// bundleSpec is the part of config.json the shim reads; runc reads the
// rest. Decoding into the whole specs.Spec would leave encoding/json's
// cache of field lists for every type of the spec (150 KB) in each shim.
type bundleSpec struct {
	Process *struct {
		Terminal bool     `json:"terminal"`
		Args     []string `json:"args"`
	} `json:"process"`
	Root *struct {
		Path string `json:"path"`
	} `json:"root"`
	Annotations map[string]string `json:"annotations"`
	Linux       *struct {
		Namespaces []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"namespaces"`
	} `json:"linux"`
}

// ownPIDNamespace reports whether the container gets a PID namespace of its
// own, in which its init process is PID 1: killing that process with
// SIGKILL then ends every process of the container.
func (b *bundleSpec) ownPIDNamespace() bool {
	if b.Linux == nil {
		return false
	}
	for _, ns := range b.Linux.Namespaces {
		if ns.Type == "pid" {
			return ns.Path == ""
		}
	}
	return false
}

// readBundle checks the bundle and its config.json before anything is made.
func readBundle(bundle string) (*bundleSpec, error) {
	if bundle == "" || !filepath.IsAbs(bundle) {
		return nil, fmt.Errorf("bundle %q must be an absolute path: %w", bundle, errdefs.ErrInvalidArgument)
	}
	fi, err := os.Stat(bundle)
	if err != nil {
		return nil, fmt.Errorf("bundle %q: %w: %w", bundle, errdefs.ErrInvalidArgument, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("bundle %q is not a directory: %w", bundle, errdefs.ErrInvalidArgument)
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("bundle %q: config.json: %w: %w", bundle, errdefs.ErrInvalidArgument, err)
	}
	var spec bundleSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("bundle %q: config.json is not a valid OCI spec: %w: %w", bundle, errdefs.ErrInvalidArgument, err)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, fmt.Errorf("bundle %q: config.json has no process args: %w", bundle, errdefs.ErrInvalidArgument)
	}
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, fmt.Errorf("bundle %q: config.json has no root path: %w", bundle, errdefs.ErrInvalidArgument)
	}
	return &spec, nil
}

const runcOptionsType = "containerd.runc.v1.Options"

// parseOptions reads the runtime options containerd's runc shim takes, so a
// containerd runtime configuration works unchanged.
func parseOptions(a *anypb.Any) (*options.Options, error) {
	opts := &options.Options{}
	if a == nil || len(a.Value) == 0 {
		return opts, nil
	}
	if strings.TrimPrefix(a.TypeUrl, "type.googleapis.com/") != runcOptionsType {
		return nil, fmt.Errorf("runtime options of type %q: want %s: %w", a.TypeUrl, runcOptionsType, errdefs.ErrInvalidArgument)
	}
	if err := proto.Unmarshal(a.Value, opts); err != nil {
		return nil, fmt.Errorf("runtime options: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	return opts, nil
}

// optionsFile keeps a container's runtime options in its bundle, so the
// delete subcommand can clean up with the right runtime after the shim died.
const optionsFile = "options.json"

func writeOptions(bundle string, opts *options.Options) error {
	b, err := json.Marshal(struct {
		BinaryName    string `json:"binary_name,omitempty"`
		Root          string `json:"root,omitempty"`
		SystemdCgroup bool   `json:"systemd_cgroup,omitempty"`
	}{opts.BinaryName, opts.Root, opts.SystemdCgroup})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, optionsFile), b, 0o600)
}

func readOptions(bundle string) *options.Options {
	var o struct {
		BinaryName    string `json:"binary_name"`
		Root          string `json:"root"`
		SystemdCgroup bool   `json:"systemd_cgroup"`
	}
	b, err := os.ReadFile(filepath.Join(bundle, optionsFile))
	if err == nil {
		_ = json.Unmarshal(b, &o)
	}
	return &options.Options{BinaryName: o.BinaryName, Root: o.Root, SystemdCgroup: o.SystemdCgroup}
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, b)
	}
	return pid, nil
}

// call runs one runtime command for the container. On failure the error
// carries the runtime's own last words from what this call added to its JSON
// log: they say what went wrong (a binary missing from the image, a bad
// mount) far better than an exit status.
func (c *container) call(op string, fn func() error) error {
	logPath := c.runtime.Log
	var offset int64
	if fi, err := os.Stat(logPath); err == nil {
		offset = fi.Size()
	}
	err := fn()
	if err == nil {
		return nil
	}
	if msg := lastRuntimeError(logPath, offset); msg != "" {
		if clientFault(msg) {
			return fmt.Errorf("%s %s: %s: %w", c.runtime.Command, op, msg, errdefs.ErrInvalidArgument)
		}
		return fmt.Errorf("%s %s: %s", c.runtime.Command, op, msg)
	}
	return fmt.Errorf("%s %s: %w", c.runtime.Command, op, err)
}

// clientFault reports runtime errors that come from what the client asked
// for rather than from the node: a command that is not in the image.
func clientFault(msg string) bool {
	return strings.Contains(msg, "executable file not found") ||
		(strings.Contains(msg, "exec: ") && strings.Contains(msg, "no such file or directory"))
}

// lastRuntimeError returns the last error-level message written to the
// runtime's JSON log after offset.
func lastRuntimeError(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal([]byte(lines[i]), &entry) == nil && entry.Level == "error" {
			return entry.Msg
		}
	}
	return ""
}

// isNotExist reports the runtime saying it has no such container (runc:
// "container does not exist"; crun: no state dir or file). A runtime binary that
// is missing is not that: cleanup must not report success then.
func isNotExist(err error) bool {
	if err == nil || errors.Is(err, exec.ErrNotFound) {
		return false
	}
	msg := err.Error()
	if strings.Contains(msg, "does not exist") {
		return true
	}
	// crun: "cannot open directory '<root>/<id>': No such file or directory"
	// or "error opening file `<root>/<id>/status`: No such file or directory".
	return strings.Contains(msg, "No such file or directory") &&
		(strings.Contains(msg, "cannot open directory") || strings.Contains(msg, "/status`"))
}

func isNotRunning(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "not running") || strings.Contains(err.Error(), "process already finished"))
}
