package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// fakeRuntime is a stand-in for runc that starts nothing: it records each
// call in DIR/calls, writes the pid file on create and exec, answers ps and events
// --stats, and fails command CMD, logging the content of DIR/fail-CMD the
// way runc does, while that file exists.
type fakeRuntime struct {
	dir, path string
}

const fakeRuntimeScript = `#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
log=/dev/null
while [ $# -gt 0 ]; do
	case "$1" in
	--root|--log-format) shift 2 ;;
	--log) log=$2; shift 2 ;;
	--systemd-cgroup|--debug) shift ;;
	*) break ;;
	esac
done
cmd=$1; shift
if [ -f "$dir/fail-$cmd" ]; then
	printf '{"level":"error","msg":"%%s"}\n' "$(cat "$dir/fail-$cmd")" >> "$log"
	exit 1
fi
case "$cmd" in
create|run)
	while [ $# -gt 0 ]; do
		case "$1" in
		--pid-file) echo %[1]d > "$2"; shift 2 ;;
		*) shift ;;
		esac
	done ;;
exec)
	while [ $# -gt 0 ]; do
		case "$1" in
		--pid-file) echo %[2]d > "$2"; shift 2 ;;
		*) shift ;;
		esac
	done ;;
ps) echo '[%[1]d,5]' ;;
events) echo '{"type":"stats","id":"c1","data":{"cpu":{"usage":{"total":5000,"kernel":2000,"user":3000}},"pids":{"current":2,"limit":10}}}' ;;
update) cat > "$dir/update.json" ;;
esac
exit 0
`

// execPid is the pid the fake runtime reports for an exec.
const execPid = noSuchPid + 1

func newFakeRuntime(t *testing.T) *fakeRuntime {
	t.Helper()
	dir := t.TempDir()
	f := &fakeRuntime{dir: dir, path: filepath.Join(dir, "fake-runc")}
	if err := os.WriteFile(f.path, fmt.Appendf(nil, fakeRuntimeScript, noSuchPid, execPid), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeRuntime) fail(t *testing.T, cmd, msg string) {
	t.Helper()
	writeFile(t, filepath.Join(f.dir, "fail-"+cmd), msg)
}

func (f *fakeRuntime) succeed(t *testing.T, cmd string) {
	t.Helper()
	if err := os.Remove(filepath.Join(f.dir, "fail-"+cmd)); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeRuntime) calls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func (f *fakeRuntime) options(t *testing.T) *anypb.Any {
	return runcOptionsAny(t, "containerd.runc.v1.Options", &options.Options{BinaryName: f.path})
}

func newBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config.json"), goodConfig)
	return dir
}

func TestServiceLifecycleFakeRuntime(t *testing.T) {
	ctx := context.Background()
	s, shutdowns := newTestService(t)
	rt := newFakeRuntime(t)
	bundle := newBundle(t)
	req := &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle, Options: rt.options(t)}
	rootfs := filepath.Join(bundle, "rootfs")
	if os.Geteuid() == 0 {
		req.Rootfs = []*types.Mount{{Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}}}
		t.Cleanup(func() { unmountAll(rootfs) })
	}

	state := func(t *testing.T, want task.Status) *taskapi.StateResponse {
		t.Helper()
		st, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		if st.Status != want {
			t.Fatalf("status = %v, want %v", st.Status, want)
		}
		return st
	}

	t.Run("Create", func(t *testing.T) {
		resp, err := s.Create(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Pid != noSuchPid {
			t.Errorf("pid = %d, want %d", resp.Pid, noSuchPid)
		}
		if st := state(t, task.Status_CREATED); st.Pid != noSuchPid || st.Bundle != bundle || st.ID != "c1" {
			t.Errorf("State = %v", st)
		}
		if got := readOptions(bundle); got.BinaryName != rt.path {
			t.Errorf("options.json names %q, want %q", got.BinaryName, rt.path)
		}
		if req.Rootfs != nil && !isMountpoint(t, rootfs) {
			t.Error("rootfs not mounted")
		}
		root := runtimeRoot(s.cfg.Address, s.cfg.Namespace, "")
		want := fmt.Sprintf("--root %s --log %s --log-format json create --bundle %s --pid-file %s c1",
			root, filepath.Join(bundle, "log.json"), bundle, filepath.Join(bundle, "init.pid"))
		if calls := rt.calls(t); calls[len(calls)-1] != want {
			t.Errorf("runtime called with\n%s\nwant\n%s", calls[len(calls)-1], want)
		}
		if _, err := s.Create(ctx, req); !errdefs.IsAlreadyExists(err) {
			t.Errorf("second Create: %v, want AlreadyExists", err)
		}
	})

	t.Run("Create fails", func(t *testing.T) {
		rt.fail(t, "create", "rootfs is not a directory")
		defer rt.succeed(t, "create")
		bundle2 := newBundle(t)
		req2 := &taskapi.CreateTaskRequest{ID: "c2", Bundle: bundle2, Options: rt.options(t), Rootfs: req.Rootfs}
		_, err := s.Create(ctx, req2)
		if want := rt.path + " create: rootfs is not a directory"; err == nil || err.Error() != want {
			t.Errorf("Create = %v, want %q", err, want)
		}
		if req2.Rootfs != nil && isMountpoint(t, filepath.Join(bundle2, "rootfs")) {
			unmountAll(filepath.Join(bundle2, "rootfs"))
			t.Error("rootfs left mounted after a failed Create")
		}
		if _, err := s.State(ctx, &taskapi.StateRequest{ID: "c2"}); !errdefs.IsNotFound(err) {
			t.Errorf("failed container registered: %v", err)
		}
		s.mu.Lock()
		_, busy := s.creating["c2"]
		s.mu.Unlock()
		if busy {
			t.Error("failed Create left its ID reserved")
		}
	})

	t.Run("Start", func(t *testing.T) {
		resp, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"})
		if err != nil || resp.Pid != noSuchPid {
			t.Fatalf("Start = %v, %v", resp, err)
		}
		state(t, task.Status_RUNNING)
		if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("second Start: %v, want FailedPrecondition", err)
		}
		if c, err := s.Connect(ctx, &taskapi.ConnectRequest{ID: "c1"}); err != nil || c.TaskPid != noSuchPid {
			t.Errorf("Connect = %v, %v", c, err)
		}
	})

	t.Run("Pids names execs", func(t *testing.T) {
		_, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1",
			Spec: execSpec(t, &specs.Process{Args: []string{"sh"}, Cwd: "/"})})
		if err != nil {
			t.Fatal(err)
		}
		c, _ := s.container("c1")
		e, _ := c.process("e1")
		e.mu.Lock()
		e.pid = 5
		e.mu.Unlock()

		resp, err := s.Pids(ctx, &taskapi.PidsRequest{ID: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Processes) != 2 || resp.Processes[0].Pid != noSuchPid || resp.Processes[0].Info != nil {
			t.Fatalf("processes = %v", resp.Processes)
		}
		info := resp.Processes[1].Info
		var details options.ProcessDetails
		if info.GetTypeUrl() != "containerd.runc.v1.ProcessDetails" || proto.Unmarshal(info.GetValue(), &details) != nil || details.ExecID != "e1" {
			t.Errorf("process 5 info = %v", info)
		}
		if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: "e1"}); err != nil {
			t.Errorf("Delete of a created exec: %v", err)
		}
	})

	t.Run("exec Start", func(t *testing.T) {
		spec := execSpec(t, &specs.Process{Args: []string{"sh"}, Cwd: "/"})
		for _, id := range []string{"e2", "e3"} {
			if _, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: id, Spec: spec}); err != nil {
				t.Fatal(err)
			}
		}
		rt.fail(t, "exec", "exec failed: sh: not found")
		_, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: "e3"})
		if want := rt.path + " exec: exec failed: sh: not found"; err == nil || err.Error() != want {
			t.Errorf("failed exec Start = %v, want %q", err, want)
		}
		if st, _ := s.State(ctx, &taskapi.StateRequest{ID: "c1", ExecID: "e3"}); st.GetStatus() != task.Status_CREATED {
			t.Errorf("failed exec is %v, want still created", st.GetStatus())
		}
		rt.succeed(t, "exec")

		resp, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: "e2"})
		if err != nil || resp.Pid != execPid {
			t.Fatalf("exec Start = %v, %v", resp, err)
		}
		if _, err := os.Stat(filepath.Join(bundle, "exec-e2.pid")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("exec pid file left in the bundle: %v", err)
		}
		if st, _ := s.State(ctx, &taskapi.StateRequest{ID: "c1", ExecID: "e2"}); st.GetStatus() != task.Status_RUNNING || st.GetPid() != execPid {
			t.Errorf("exec State = %v", st)
		}
		if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1", ExecID: "e2"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("second exec Start: %v", err)
		}
		s.HandleExit(Exit{Pid: execPid, Status: 0, At: time.Now()})
		if w, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "c1", ExecID: "e2"}); err != nil || w.ExitStatus != 0 {
			t.Errorf("exec Wait = %v, %v", w, err)
		}
		for _, id := range []string{"e2", "e3"} {
			if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: id}); err != nil {
				t.Errorf("Delete exec %s: %v", id, err)
			}
		}
		state(t, task.Status_RUNNING)
	})

	t.Run("Pause and Resume", func(t *testing.T) {
		rt.fail(t, "pause", "freezer busy")
		_, err := s.Pause(ctx, &taskapi.PauseRequest{ID: "c1"})
		if err == nil || !strings.HasSuffix(err.Error(), "pause: freezer busy") {
			t.Errorf("failed Pause = %v", err)
		}
		state(t, task.Status_RUNNING)
		rt.succeed(t, "pause")

		if _, err := s.Pause(ctx, &taskapi.PauseRequest{ID: "c1"}); err != nil {
			t.Fatal(err)
		}
		state(t, task.Status_PAUSED)
		if _, err := s.Pause(ctx, &taskapi.PauseRequest{ID: "c1"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("second Pause: %v", err)
		}
		if _, err := s.Resume(ctx, &taskapi.ResumeRequest{ID: "c1"}); err != nil {
			t.Fatal(err)
		}
		state(t, task.Status_RUNNING)
	})

	t.Run("Update", func(t *testing.T) {
		shares := uint64(512)
		b, _ := jsonAny(&specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}})
		if _, err := s.Update(ctx, &taskapi.UpdateTaskRequest{ID: "c1", Resources: b}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(rt.dir, "update.json"))
		if err != nil || !strings.Contains(string(got), `"shares":512`) {
			t.Errorf("runtime got resources %s, %v", got, err)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		resp, err := s.Stats(ctx, &taskapi.StatsRequest{ID: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		var pids uint64
		if unifiedCgroups() {
			var m v2.Metrics
			if err := proto.Unmarshal(resp.Stats.GetValue(), &m); err != nil {
				t.Fatal(err)
			}
			pids = m.Pids.GetCurrent()
		} else {
			var m v1.Metrics
			if err := proto.Unmarshal(resp.Stats.GetValue(), &m); err != nil {
				t.Fatal(err)
			}
			pids = m.Pids.GetCurrent()
		}
		if pids != 2 {
			t.Errorf("stats %s: pids.current = %d, want 2", resp.Stats.GetTypeUrl(), pids)
		}
	})

	t.Run("Kill", func(t *testing.T) {
		for _, tc := range []struct {
			req  *taskapi.KillRequest
			call string
		}{
			{&taskapi.KillRequest{ID: "c1", Signal: 15}, "kill c1 15"},
			{&taskapi.KillRequest{ID: "c1", Signal: 9, All: true}, "kill --all c1 9"},
		} {
			if _, err := s.Kill(ctx, tc.req); err != nil {
				t.Fatal(err)
			}
			if calls := rt.calls(t); !strings.HasSuffix(calls[len(calls)-1], tc.call) {
				t.Errorf("runtime called with %q, want ...%q", calls[len(calls)-1], tc.call)
			}
		}
		rt.fail(t, "kill", "container not running")
		if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: 9}); !errdefs.IsNotFound(err) {
			t.Errorf("Kill of a finished container: %v, want NotFound", err)
		}
		rt.fail(t, "kill", "permission denied")
		if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: 9}); err == nil || errdefs.IsNotFound(err) {
			t.Errorf("Kill refused by the runtime: %v, want a plain error", err)
		}
		rt.succeed(t, "kill")
	})

	t.Run("exit, Wait and Delete", func(t *testing.T) {
		if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Delete of a running container: %v", err)
		}
		s.HandleExit(Exit{Pid: noSuchPid, Status: 143, At: time.Now()})
		w, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "c1"})
		if err != nil || w.ExitStatus != 143 {
			t.Fatalf("Wait = %v, %v", w, err)
		}
		if st := state(t, task.Status_STOPPED); st.ExitStatus != 143 || st.ExitedAt == nil {
			t.Errorf("State = %v", st)
		}
		if _, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e2",
			Spec: execSpec(t, &specs.Process{Args: []string{"sh"}})}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Exec in a stopped container: %v", err)
		}

		resp, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ExitStatus != 143 || resp.Pid != noSuchPid {
			t.Errorf("Delete = %v", resp)
		}
		if calls := rt.calls(t); calls[len(calls)-1] != fmt.Sprintf("--root %s --log %s --log-format json delete c1",
			runtimeRoot(s.cfg.Address, s.cfg.Namespace, ""), filepath.Join(bundle, "log.json")) {
			t.Errorf("runtime called with %q", calls[len(calls)-1])
		}
		if req.Rootfs != nil && isMountpoint(t, rootfs) {
			t.Error("rootfs still mounted after Delete")
		}
		if _, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"}); !errdefs.IsNotFound(err) {
			t.Errorf("State after Delete: %v", err)
		}
		if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil || *shutdowns != 1 {
			t.Errorf("Shutdown: %v, %d shutdowns", err, *shutdowns)
		}
	})
}

func jsonAny(v any) (*anypb.Any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", Value: b}, nil
}

// TestServiceStartOnCreate: a bundle that asks for it is run at Create
// (one runtime call, runc run --detach), and Start reports the pid.
func TestServiceStartOnCreate(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestService(t)
	rt := newFakeRuntime(t)
	bundle := t.TempDir()
	writeFile(t, filepath.Join(bundle, "config.json"), `{"ociVersion":"1.0.2","process":{"args":["/pause"],"cwd":"/"},"root":{"path":"rootfs"},"annotations":{"`+StartOnCreateAnnotation+`":"true"}}`)
	resp, err := s.Create(ctx, &taskapi.CreateTaskRequest{ID: "p1", Bundle: bundle, Options: rt.options(t)})
	if err != nil {
		t.Fatal(err)
	}
	root := runtimeRoot(s.cfg.Address, s.cfg.Namespace, "")
	want := fmt.Sprintf("--root %s --log %s --log-format json run --bundle %s --pid-file %s --detach p1",
		root, filepath.Join(bundle, "log.json"), bundle, filepath.Join(bundle, "init.pid"))
	if calls := rt.calls(t); len(calls) != 1 || calls[0] != want {
		t.Errorf("runtime called with\n%s\nwant\n%s", strings.Join(calls, "\n"), want)
	}
	st, err := s.State(ctx, &taskapi.StateRequest{ID: "p1"})
	if err != nil || st.Status != task.Status_RUNNING || st.Pid != resp.Pid {
		t.Fatalf("State after Create = %v, %v; want RUNNING with pid %d", st, err, resp.Pid)
	}
	for range 2 {
		sr, err := s.Start(ctx, &taskapi.StartRequest{ID: "p1"})
		if err != nil || sr.Pid != resp.Pid {
			t.Errorf("Start = %v, %v; want pid %d", sr, err, resp.Pid)
		}
	}
	if calls := rt.calls(t); len(calls) != 1 {
		t.Errorf("Start ran the runtime: %q", calls)
	}
}

// TestServiceCreateAtStart: a bundle that asks for it is made by the
// runtime only at Start, with one runc run --detach; before that the
// container has no process, and Kill and Delete end it without the runtime.
func TestServiceCreateAtStart(t *testing.T) {
	ctx := context.Background()
	config := `{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"annotations":{"` + CreateAtStartAnnotation + `":"true"}}`
	setup := func(t *testing.T) (*Service, *fakeRuntime, string) {
		s, _ := newTestService(t)
		rt := newFakeRuntime(t)
		bundle := t.TempDir()
		writeFile(t, filepath.Join(bundle, "config.json"), config)
		resp, err := s.Create(ctx, &taskapi.CreateTaskRequest{ID: "c1", Bundle: bundle, Options: rt.options(t)})
		if err != nil || resp.Pid != 0 {
			t.Fatalf("Create = %v, %v; want pid 0", resp, err)
		}
		return s, rt, bundle
	}
	noCalls := func(t *testing.T, rt *fakeRuntime) {
		t.Helper()
		if b, err := os.ReadFile(filepath.Join(rt.dir, "calls")); err == nil {
			t.Errorf("the runtime ran: %q", b)
		}
	}

	t.Run("start", func(t *testing.T) {
		s, rt, bundle := setup(t)
		st, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"})
		if err != nil || st.Status != task.Status_CREATED || st.Pid != 0 {
			t.Fatalf("State after Create = %v, %v; want CREATED, pid 0", st, err)
		}
		if pids, err := s.Pids(ctx, &taskapi.PidsRequest{ID: "c1"}); err != nil || len(pids.Processes) != 0 {
			t.Errorf("Pids before start = %v, %v; want none", pids, err)
		}
		if _, err := s.Stats(ctx, &taskapi.StatsRequest{ID: "c1"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Stats before start: %v; want FailedPrecondition", err)
		}
		res, _ := jsonAny(&specs.LinuxResources{})
		if _, err := s.Update(ctx, &taskapi.UpdateTaskRequest{ID: "c1", Resources: res}); err != nil {
			t.Errorf("Update before start: %v", err)
		}
		noCalls(t, rt)
		sr, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"})
		if err != nil || sr.Pid != noSuchPid {
			t.Fatalf("Start = %v, %v; want pid %d", sr, err, noSuchPid)
		}
		root := runtimeRoot(s.cfg.Address, s.cfg.Namespace, "")
		want := fmt.Sprintf("--root %s --log %s --log-format json run --bundle %s --pid-file %s --detach c1",
			root, filepath.Join(bundle, "log.json"), bundle, filepath.Join(bundle, "init.pid"))
		if calls := rt.calls(t); len(calls) != 1 || calls[0] != want {
			t.Errorf("runtime called with\n%s\nwant\n%s", strings.Join(calls, "\n"), want)
		}
		if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("second Start: %v; want FailedPrecondition", err)
		}
	})

	t.Run("failed run stays unmade", func(t *testing.T) {
		s, rt, _ := setup(t)
		rt.fail(t, "run", "no such file: /bin/sh")
		if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"}); err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("Start with a failing run: %v; want the runtime's words", err)
		}
		if st, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"}); err != nil || st.Status != task.Status_CREATED {
			t.Errorf("State after a failed Start = %v, %v; want CREATED", st, err)
		}
		if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: 9, All: true}); err != nil {
			t.Errorf("Kill: %v", err)
		}
		if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"}); err != nil {
			t.Errorf("Delete: %v", err)
		}
	})

	t.Run("kill", func(t *testing.T) {
		s, rt, _ := setup(t)
		if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: uint32(28)}); err != nil {
			t.Errorf("Kill SIGWINCH: %v", err)
		}
		if st, _ := s.State(ctx, &taskapi.StateRequest{ID: "c1"}); st.GetStatus() != task.Status_CREATED {
			t.Errorf("State after SIGWINCH: %v; want CREATED", st)
		}
		if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", Signal: uint32(15)}); err != nil {
			t.Fatalf("Kill SIGTERM: %v", err)
		}
		w, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "c1"})
		if err != nil || w.ExitStatus != 128+uint32(15) {
			t.Errorf("Wait = %v, %v; want exit status 143", w, err)
		}
		if _, err := s.Start(ctx, &taskapi.StartRequest{ID: "c1"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Start after Kill: %v; want FailedPrecondition", err)
		}
		d, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"})
		if err != nil || d.ExitStatus != 143 {
			t.Errorf("Delete = %v, %v; want exit status 143", d, err)
		}
		noCalls(t, rt)
	})

	t.Run("delete", func(t *testing.T) {
		s, rt, _ := setup(t)
		d, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"})
		if err != nil || d.ExitStatus != 137 {
			t.Errorf("Delete of a created container = %v, %v; want exit status 137", d, err)
		}
		if _, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"}); !errdefs.IsNotFound(err) {
			t.Errorf("State after Delete: %v; want NotFound", err)
		}
		noCalls(t, rt)
	})
}
