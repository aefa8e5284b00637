package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/fifo"
	"github.com/corral-runtime/corral/cri/shimclient"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

func runShim(e *env, args []string) error {
	if len(args) < 2 {
		return usageError{"shim needs a pod and an action: shim POD state|pids|stats|kill|exec"}
	}
	podArg, action, rest := args[0], args[1], args[2:]
	p, err := findPod(e.state, podArg)
	if err != nil {
		return err
	}
	switch action {
	case "state", "pids", "stats":
		return shimQuery(e, p, action, rest)
	case "kill":
		return shimKill(e, p, rest)
	case "exec":
		return shimExec(e, p, rest)
	}
	return usageError{fmt.Sprintf("shim: unknown action %q: use state, pids, stats, kill or exec", action)}
}

// shimQuery is state, pids and stats: one call per container of the pod,
// or of the one container named.
func shimQuery(e *env, p *pod, action string, args []string) error {
	fs := e.subFlags("shim " + action)
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	targets := p.Containers
	switch len(rest) {
	case 0:
	case 1:
		c, err := p.findContainer(rest[0])
		if err != nil {
			return err
		}
		targets = []container{c}
	default:
		return usageError{fmt.Sprintf("shim %s takes at most one container, got %q", action, rest)}
	}
	ctx, cancel := e.context()
	defer cancel()
	sh, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer sh.Close()
	switch action {
	case "state":
		return printStates(ctx, e, sh, targets)
	case "pids":
		return printPids(ctx, e, sh, targets)
	default:
		return printStats(ctx, e, sh, targets)
	}
}

type taskState struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Status     string `json:"status"`
	PID        uint32 `json:"pid,omitempty"`
	ExitStatus uint32 `json:"exit_status"`
	ExitedAt   string `json:"exited_at,omitempty"`
	Bundle     string `json:"bundle,omitempty"`
	Error      string `json:"error,omitempty"`
}

func printStates(ctx context.Context, e *env, sh *shimclient.Shim, targets []container) error {
	var out []taskState
	for _, c := range targets {
		st := taskState{ID: c.ID, Name: c.Name}
		resp, err := sh.Task.State(ctx, &taskapi.StateRequest{ID: c.ID})
		if err != nil {
			st.Status, st.Error = "unknown", errgrpc.ToNative(err).Error()
		} else {
			st.Status = strings.ToLower(resp.Status.String())
			st.PID, st.ExitStatus, st.Bundle = resp.Pid, resp.ExitStatus, resp.Bundle
			if resp.ExitedAt != nil && resp.ExitedAt.AsTime().Year() > 1970 {
				st.ExitedAt = resp.ExitedAt.AsTime().Format(time.RFC3339Nano)
			}
		}
		out = append(out, st)
	}
	if e.output == "json" {
		return e.writeJSON(out)
	}
	t := e.table("CONTAINER", "NAME", "STATUS", "PID", "EXIT", "EXITED")
	for _, st := range out {
		status := st.Status
		if st.Error != "" {
			status += ": " + st.Error
		}
		exit := "-"
		if st.Status == "stopped" {
			exit = strconv.Itoa(int(st.ExitStatus))
		}
		t.row(short(st.ID), st.Name, status, pidString(int(st.PID)), exit, st.ExitedAt)
	}
	return t.flush()
}

type taskPid struct {
	Container string `json:"container"`
	PID       uint32 `json:"pid"`
	ExecID    string `json:"exec_id,omitempty"`
}

func printPids(ctx context.Context, e *env, sh *shimclient.Shim, targets []container) error {
	var out []taskPid
	for _, c := range targets {
		resp, err := sh.Task.Pids(ctx, &taskapi.PidsRequest{ID: c.ID})
		if err != nil {
			return fmt.Errorf("pids of %s: %w", c.ID, errgrpc.ToNative(err))
		}
		for _, pi := range resp.Processes {
			out = append(out, taskPid{Container: c.ID, PID: pi.Pid, ExecID: execIDOf(pi.Info)})
		}
	}
	if e.output == "json" {
		if out == nil {
			out = []taskPid{}
		}
		return e.writeJSON(out)
	}
	t := e.table("CONTAINER", "PID", "EXEC")
	for _, pi := range out {
		t.row(short(pi.Container), strconv.Itoa(int(pi.PID)), pi.ExecID)
	}
	return t.flush()
}

// execIDOf reads the exec_id of a process's info (runc shims send
// containerd.runc.v1.ProcessDetails for exec'd processes).
func execIDOf(info *anypb.Any) string {
	if info == nil {
		return ""
	}
	m, err := info.UnmarshalNew()
	if err != nil {
		return ""
	}
	f := m.ProtoReflect().Descriptor().Fields().ByName("exec_id")
	if f == nil {
		return ""
	}
	return m.ProtoReflect().Get(f).String()
}

type taskStats struct {
	Container string          `json:"container"`
	Name      string          `json:"name,omitempty"`
	Type      string          `json:"type,omitempty"`
	Stats     json.RawMessage `json:"stats,omitempty"`
	Error     string          `json:"error,omitempty"`

	cpu, memory, pids uint64
}

func printStats(ctx context.Context, e *env, sh *shimclient.Shim, targets []container) error {
	var out []taskStats
	for _, c := range targets {
		st := taskStats{Container: c.ID, Name: c.Name}
		resp, err := sh.Task.Stats(ctx, &taskapi.StatsRequest{ID: c.ID})
		if err != nil {
			st.Error = errgrpc.ToNative(err).Error()
			out = append(out, st)
			continue
		}
		st.Type = resp.Stats.GetTypeUrl()
		m, err := decodeAny(resp.Stats)
		if err != nil {
			st.Error = err.Error()
		} else {
			st.Stats, _ = protojson.Marshal(m)
			switch m := m.(type) {
			case *v1.Metrics:
				st.cpu, st.memory, st.pids = m.GetCPU().GetUsage().GetTotal(), m.GetMemory().GetUsage().GetUsage(), m.GetPids().GetCurrent()
			case *v2.Metrics:
				st.cpu, st.memory, st.pids = m.GetCPU().GetUsageUsec()*1000, m.GetMemory().GetUsage(), m.GetPids().GetCurrent()
			}
		}
		out = append(out, st)
	}
	if e.output == "json" {
		return e.writeJSON(out)
	}
	t := e.table("CONTAINER", "NAME", "CPU", "MEMORY", "PIDS")
	for _, st := range out {
		if st.Error != "" {
			t.row(short(st.Container), st.Name, "error: "+st.Error, "", "")
			continue
		}
		t.row(short(st.Container), st.Name, time.Duration(st.cpu).String(), bytesString(st.memory), strconv.FormatUint(st.pids, 10))
	}
	return t.flush()
}

// decodeAny decodes a payload whose type corralctl links in (containerd's
// events and metrics types); the error names the type otherwise.
func decodeAny(a *anypb.Any) (proto.Message, error) {
	if a == nil {
		return nil, errors.New("no payload")
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(a.TypeUrl)
	if err != nil {
		return nil, fmt.Errorf("payload of type %q, which corralctl does not know", a.TypeUrl)
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(a.Value, m); err != nil {
		return nil, fmt.Errorf("payload of type %q: %w", a.TypeUrl, err)
	}
	return m, nil
}

func bytesString(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func shimKill(e *env, p *pod, args []string) error {
	fs := e.subFlags("shim kill")
	sigName := fs.String("signal", "SIGTERM", "the `SIGNAL` to send: a name (SIGTERM, KILL) or a number")
	all := fs.Bool("all", false, "signal every process of the container, not only its init")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageError{"shim kill needs exactly one container (the pod's ID for its pause process)"}
	}
	sig, err := parseSignal(*sigName)
	if err != nil {
		return usageError{"shim kill: " + err.Error()}
	}
	c, err := p.findContainer(rest[0])
	if err != nil {
		return err
	}
	ctx, cancel := e.context()
	defer cancel()
	sh, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer sh.Close()
	if _, err := sh.Task.Kill(ctx, &taskapi.KillRequest{ID: c.ID, Signal: uint32(sig), All: *all}); err != nil {
		return fmt.Errorf("kill %s: %w", c.ID, errgrpc.ToNative(err))
	}
	return nil
}

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d is out of range", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// processSpecType is the type URL runc shims take an exec's process in.
const processSpecType = "types.containerd.io/opencontainers/runtime-spec/1/Process"

// shimExec runs a command in a container through the shim, as ExecSync
// does: the container's process settings (user, env, cwd, capabilities)
// with the command's arguments, its output copied to corralctl's.
func shimExec(e *env, p *pod, args []string) error {
	fs := e.subFlags("shim exec")
	name := fs.String("container", "", "the `CONTAINER` to run in; may be left out when the pod has one container")
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 && rest[0] == "--" {
		rest = rest[1:]
	}
	if len(rest) == 0 {
		return usageError{"shim exec needs a command: shim POD exec [--container C] -- CMD [ARG...]"}
	}
	c, err := execTarget(p, *name)
	if err != nil {
		return err
	}
	proc, err := execProcess(c.bundle, rest)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(proc)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "corralctl-exec")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	stdout, err := copyFifo(ctx, filepath.Join(dir, "stdout"), e.stdout)
	if err != nil {
		return err
	}
	stderr, err := copyFifo(ctx, filepath.Join(dir, "stderr"), e.stderr)
	if err != nil {
		return err
	}

	callCtx, cancel := e.context()
	defer cancel()
	sh, err := p.connect(callCtx)
	if err != nil {
		return err
	}
	defer sh.Close()
	execID := fmt.Sprintf("corralctl-%d", os.Getpid())
	if _, err := sh.Task.Exec(callCtx, &taskapi.ExecProcessRequest{
		ID: c.ID, ExecID: execID, Stdout: stdout.path, Stderr: stderr.path,
		Spec: &anypb.Any{TypeUrl: processSpecType, Value: raw},
	}); err != nil {
		return fmt.Errorf("exec in %s: %w", c.ID, errgrpc.ToNative(err))
	}
	defer sh.Task.Delete(context.Background(), &taskapi.DeleteRequest{ID: c.ID, ExecID: execID})
	if _, err := sh.Task.Start(callCtx, &taskapi.StartRequest{ID: c.ID, ExecID: execID}); err != nil {
		return fmt.Errorf("exec %q in %s: %w", rest[0], c.ID, errgrpc.ToNative(err))
	}
	// The command runs as long as it runs; the timeout is for the calls.
	w, err := sh.Task.Wait(ctx, &taskapi.WaitRequest{ID: c.ID, ExecID: execID})
	if err != nil {
		return fmt.Errorf("wait for %q in %s: %w", rest[0], c.ID, errgrpc.ToNative(err))
	}
	stdout.wait()
	stderr.wait()
	if w.ExitStatus != 0 {
		return exitCode(w.ExitStatus)
	}
	return nil
}

// execTarget is the container an exec runs in: the one named, or the pod's
// only app container.
func execTarget(p *pod, name string) (container, error) {
	if name != "" {
		return p.findContainer(name)
	}
	apps := p.Containers[1:]
	if len(apps) == 1 {
		return apps[0], nil
	}
	var names []string
	for _, c := range apps {
		names = append(names, c.Name)
	}
	return container{}, usageError{fmt.Sprintf("pod %s has %d containers (%s): name one with --container", short(p.ID), len(apps), strings.Join(names, ", "))}
}

func execProcess(bundle string, cmd []string) (*specs.Process, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("container spec: %w", err)
	}
	var sp specs.Spec
	if err := json.Unmarshal(b, &sp); err != nil || sp.Process == nil {
		return nil, fmt.Errorf("container spec %s has no process", bundle)
	}
	p := *sp.Process
	p.Args, p.Terminal, p.ConsoleSize = cmd, false, nil
	return &p, nil
}

// outFifo is a FIFO an exec writes one stream to, copied to w.
type outFifo struct {
	path string
	done chan struct{}
	r    io.Closer
}

func copyFifo(ctx context.Context, path string, w io.Writer) (*outFifo, error) {
	r, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, err
	}
	f := &outFifo{path: path, done: make(chan struct{}), r: r}
	go func() {
		defer close(f.done)
		io.Copy(w, r)
	}()
	return f, nil
}

// wait lets the copy finish; a child the command left behind may keep the
// FIFO open, so the wait is bounded.
func (f *outFifo) wait() {
	select {
	case <-f.done:
	case <-time.After(2 * time.Second):
		f.r.Close()
		<-f.done
	}
}
