package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// noSuchPid is above the kernel's PID_MAX_LIMIT (4M): no process ever has
// it, so signalling it is safe and fails with ESRCH.
const noSuchPid = 1<<22 + 7

func TestCheckID(t *testing.T) {
	cases := []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"abc123", true},
		{"Ab9_x.y+z-1", true},
		{"7c1f0e2d-pod", true},
		{"a..b", true},
		{strings.Repeat("a", 128), true},
		{"", false},
		{strings.Repeat("a", 129), false},
		{"../x", false},
		{"..", false},
		{".hidden", false},
		{"-flag", false},
		{"_x", false},
		{"a/b", false},
		{"a b", false},
		{"a\n", false},
		{"é", false},
		{"a:b", false},
	}
	for _, tc := range cases {
		err := checkID("container ID", tc.id)
		if tc.ok && err != nil {
			t.Errorf("checkID(%q) = %v, want ok", tc.id, err)
		}
		if !tc.ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("checkID(%q) = %v, want InvalidArgument", tc.id, err)
		}
	}
}

func runcOptionsAny(t testing.TB, typeURL string, o *options.Options) *anypb.Any {
	t.Helper()
	b, err := proto.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: typeURL, Value: b}
}

func TestParseOptions(t *testing.T) {
	want := &options.Options{BinaryName: "crun", Root: "/r", SystemdCgroup: true, IoUid: 1000, NoPivotRoot: true}
	cases := []struct {
		name string
		in   *anypb.Any
		want *options.Options
		kind func(error) bool // nil: no error
	}{
		{"nil", nil, &options.Options{}, nil},
		{"empty", &anypb.Any{}, &options.Options{}, nil},
		{"empty value of any type", &anypb.Any{TypeUrl: "x.Y"}, &options.Options{}, nil},
		{"runc options", runcOptionsAny(t, "containerd.runc.v1.Options", want), want, nil},
		{"with type.googleapis.com", runcOptionsAny(t, "type.googleapis.com/containerd.runc.v1.Options", want), want, nil},
		{"wrong type", runcOptionsAny(t, "containerd.runhcs.v1.Options", want), nil, errdefs.IsInvalidArgument},
		{"other host prefix", runcOptionsAny(t, "example.com/containerd.runc.v1.Options", want), nil, errdefs.IsInvalidArgument},
		// Field 31, wire type 7: no such wire type.
		{"garbage", &anypb.Any{TypeUrl: "containerd.runc.v1.Options", Value: []byte{0xff, 0xff}}, nil, errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseOptions(tc.in)
			if tc.kind != nil {
				if !tc.kind(err) {
					t.Errorf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("options = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOptionsRoundTrip(t *testing.T) {
	cases := []*options.Options{
		{},
		{BinaryName: "/usr/bin/crun"},
		{BinaryName: "runc", Root: "/run/x", SystemdCgroup: true},
	}
	for _, in := range cases {
		bundle := t.TempDir()
		if err := writeOptions(bundle, in); err != nil {
			t.Fatal(err)
		}
		got := readOptions(bundle)
		want := &options.Options{BinaryName: in.BinaryName, Root: in.Root, SystemdCgroup: in.SystemdCgroup}
		if !proto.Equal(got, want) {
			t.Errorf("round trip of %v = %v", in, got)
		}
	}
	// Only what delete needs is kept.
	bundle := t.TempDir()
	if err := writeOptions(bundle, &options.Options{BinaryName: "runc", IoUid: 5, ShimCgroup: "/shim"}); err != nil {
		t.Fatal(err)
	}
	if got := readOptions(bundle); got.IoUid != 0 || got.ShimCgroup != "" || got.BinaryName != "runc" {
		t.Errorf("readOptions = %v", got)
	}
	// Missing or bad: defaults.
	for name, content := range map[string]*string{"missing": nil, "bad json": ptr("{")} {
		bundle := t.TempDir()
		if content != nil {
			writeFile(t, filepath.Join(bundle, optionsFile), *content)
		}
		if got := readOptions(bundle); !proto.Equal(got, &options.Options{}) {
			t.Errorf("%s: readOptions = %v, want defaults", name, got)
		}
	}
}

const goodConfig = `{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}`

func TestReadBundle(t *testing.T) {
	cases := []struct {
		name   string
		setup  func(t *testing.T) string // returns the bundle path
		wantOK bool
	}{
		{"good", func(t *testing.T) string {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), goodConfig)
			return dir
		}, true},
		{"empty", func(t *testing.T) string { return "" }, false},
		{"relative", func(t *testing.T) string { return "bundle" }, false},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") }, false},
		{"not a directory", func(t *testing.T) string {
			return writeFile(t, filepath.Join(t.TempDir(), "file"), "x")
		}, false},
		{"no config.json", func(t *testing.T) string { return t.TempDir() }, false},
		{"bad json", func(t *testing.T) string {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), `{"process":`)
			return dir
		}, false},
		{"no process", func(t *testing.T) string {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), `{"root":{"path":"rootfs"}}`)
			return dir
		}, false},
		{"no args", func(t *testing.T) string {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), `{"process":{"args":[]},"root":{"path":"rootfs"}}`)
			return dir
		}, false},
		{"no root", func(t *testing.T) string {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), `{"process":{"args":["sh"]}}`)
			return dir
		}, false},
		{"empty root path", func(t *testing.T) string {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "config.json"), `{"process":{"args":["sh"]},"root":{"path":""}}`)
			return dir
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := readBundle(tc.setup(t))
			if !tc.wantOK {
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("err = %v, want InvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if spec.Process.Args[0] != "sh" || spec.Root.Path != "rootfs" {
				t.Errorf("spec = %+v", spec)
			}
		})
	}
}

func TestLastRuntimeError(t *testing.T) {
	earlier := `{"level":"error","msg":"from an earlier call"}` + "\n"
	cases := []struct {
		name   string
		log    *string // nil: no log file
		offset int64
		want   string
	}{
		{"no log", nil, 0, ""},
		{"empty", ptr(""), 0, ""},
		{"no error", ptr(`{"level":"info","msg":"a"}` + "\n" + `{"level":"warning","msg":"b"}` + "\n"), 0, ""},
		{"last error wins", ptr(strings.Join([]string{
			`{"level":"error","msg":"first"}`,
			`{"level":"info","msg":"x"}`,
			`{"level":"error","msg":"second","time":"2024-01-01T00:00:00Z"}`,
			`{"level":"warning","msg":"later warning"}`,
			`not json at all`,
			"", "",
		}, "\n")), 0, "second"},
		{"only error", ptr(`{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH"}`), 0,
			`exec: "nope": executable file not found in $PATH`},
		{"error before offset ignored", ptr(earlier + `{"level":"info","msg":"this call"}` + "\n"), int64(len(earlier)), ""},
		{"error after offset", ptr(earlier + `{"level":"error","msg":"this call"}` + "\n"), int64(len(earlier)), "this call"},
		{"offset past the end", ptr(earlier), 1 << 20, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.json")
			if tc.log != nil {
				writeFile(t, path, *tc.log)
			}
			if got := lastRuntimeError(path, tc.offset); got != tc.want {
				t.Errorf("lastRuntimeError = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestContainerCall: a failed runtime call reports what the runtime logged
// during that call, and only that.
func TestContainerCall(t *testing.T) {
	cause := errors.New("exit status 1")
	logLine := func(msg string) string { return `{"level":"error","msg":"` + msg + `"}` + "\n" }
	cases := []struct {
		name    string
		before  string // in the log before the call
		during  string // appended by the call
		fail    bool
		want    string // "" for success
		wrapped bool   // the call's own error is kept
	}{
		{"success", logLine("old"), logLine("ignored on success"), false, "", false},
		{"no log", "", "", true, "runc kill: exit status 1", true},
		{"message of this call", logLine("old"), logLine("container not running"), true, "runc kill: container not running", false},
		{"stale message not reported", logLine("old"), "", true, "runc kill: exit status 1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "log.json")
			if tc.before != "" {
				writeFile(t, logPath, tc.before)
			}
			c := &container{id: "c1", runtime: &runc.Runc{Command: "runc", Log: logPath}}
			err := c.call("kill", func() error {
				if tc.during != "" {
					f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
					if err != nil {
						return err
					}
					f.WriteString(tc.during)
					f.Close()
				}
				if tc.fail {
					return cause
				}
				return nil
			})
			if tc.want == "" {
				if err != nil {
					t.Errorf("call = %v, want success", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("call = %v, want %q", err, tc.want)
			}
			if errors.Is(err, cause) != tc.wrapped {
				t.Errorf("errors.Is(call error, cause) = %v, want %v", !tc.wrapped, tc.wrapped)
			}
		})
	}
}

func TestRuntimeRoot(t *testing.T) {
	cases := []struct{ address, namespace, root, want string }{
		{"/run/corral/corral.sock", "k8s.io", "", "/run/corral/runc/k8s.io"},
		{"unix:///run/corral/corral.sock", "k8s.io", "", "/run/corral/runc/k8s.io"},
		{"/run/containerd/containerd.sock", "default", "", "/run/containerd/runc/default"},
		{"/run/corral/corral.sock", "k8s.io", "/custom/root", "/custom/root/k8s.io"},
	}
	for _, tc := range cases {
		if got := runtimeRoot(tc.address, tc.namespace, tc.root); got != tc.want {
			t.Errorf("runtimeRoot(%q, %q, %q) = %q, want %q", tc.address, tc.namespace, tc.root, got, tc.want)
		}
	}
}

func TestReadPidFile(t *testing.T) {
	cases := []struct {
		content *string
		want    int // 0: error
	}{
		{ptr("1234"), 1234},
		{ptr("1234\n"), 1234},
		{ptr(" 42 \n"), 42},
		{ptr(""), 0},
		{ptr("0"), 0},
		{ptr("-5"), 0},
		{ptr("abc"), 0},
		{nil, 0},
	}
	for _, tc := range cases {
		path := filepath.Join(t.TempDir(), "pid")
		if tc.content != nil {
			writeFile(t, path, *tc.content)
		}
		got, err := readPidFile(path)
		if tc.want == 0 && err == nil {
			t.Errorf("readPidFile(%v) = %d, want an error", tc.content, got)
		}
		if tc.want != 0 && (err != nil || got != tc.want) {
			t.Errorf("readPidFile(%q) = %d, %v; want %d", *tc.content, got, err, tc.want)
		}
	}
}

func TestRuntimeErrorClassification(t *testing.T) {
	cases := []struct {
		err                  error
		notExist, notRunning bool
	}{
		{nil, false, false},
		{errors.New("container does not exist"), true, false},
		{errors.New("cannot open directory '/run/crun/x': No such file or directory"), true, false},
		{errors.New("error opening file `/run/crun/x/status`: No such file or directory"), true, false},
		{fmt.Errorf("runc delete: %w", exec.ErrNotFound), false, false},
		{errors.New(`exec: "runc": executable file not found in $PATH`), false, false},
		{errors.New("cannot kill: container not running"), false, true},
		{errors.New("process already finished"), false, true},
		{errors.New("exit status 1: permission denied"), false, false},
	}
	for _, tc := range cases {
		if got := isNotExist(tc.err); got != tc.notExist {
			t.Errorf("isNotExist(%v) = %v", tc.err, got)
		}
		if got := isNotRunning(tc.err); got != tc.notRunning {
			t.Errorf("isNotRunning(%v) = %v", tc.err, got)
		}
	}
}

func TestProcessStateStatus(t *testing.T) {
	cases := []struct {
		state processState
		want  task.Status
	}{
		{stateCreated, task.Status_CREATED},
		{stateRunning, task.Status_RUNNING},
		{statePaused, task.Status_PAUSED},
		{stateStopped, task.Status_STOPPED},
		{processState(42), task.Status_UNKNOWN},
	}
	for _, tc := range cases {
		if got := tc.state.status(); got != tc.want {
			t.Errorf("%d.status() = %v, want %v", tc.state, got, tc.want)
		}
	}
}

func TestProcess(t *testing.T) {
	init := newProcess("c1", "", stdio{}, nil)
	exec := newProcess("c1", "e1", stdio{}, &specs.Process{Args: []string{"sh"}})
	if init.eventID() != "c1" || exec.eventID() != "e1" {
		t.Errorf("eventIDs = %q, %q", init.eventID(), exec.eventID())
	}
	if init.String() != "container c1" || exec.String() != "exec e1 in container c1" {
		t.Errorf("names = %q, %q", init.String(), exec.String())
	}

	at := time.Unix(100, 0)
	if !exec.setExited(3, at) {
		t.Fatal("first exit not recorded")
	}
	if exec.setExited(9, time.Unix(200, 0)) {
		t.Error("second exit recorded")
	}
	if st, _, status, when := exec.snapshot(); st != stateStopped || status != 3 || !when.Equal(at) {
		t.Errorf("after exit: state %v status %d at %v", st, status, when)
	}
	exec.closeExited()
	exec.closeExited() // idempotent
	select {
	case <-exec.exited:
	default:
		t.Error("exited not closed")
	}

	c := &container{id: "c1", init: init, execs: map[string]*process{"e1": exec}}
	for _, tc := range []struct {
		execID string
		want   *process
	}{{"", init}, {"e1", exec}, {"e2", nil}} {
		p, err := c.process(tc.execID)
		if p != tc.want || (tc.want == nil) != errdefs.IsNotFound(err) {
			t.Errorf("process(%q) = %v, %v", tc.execID, p, err)
		}
	}
}

// newTestService is a Service whose publisher forwards nowhere; shutdowns
// counts the calls of its shutdown func.
func newTestService(t *testing.T) (s *Service, shutdowns *int) {
	t.Helper()
	n := 0
	cfg := Config{Namespace: testNS, Address: filepath.Join(shortTempDir(t), "corral.sock")}
	s = NewService(context.Background(), cfg, discardLog(), NewPublisher("", testNS, discardLog()), func() { n++ })
	return s, &n
}

// addContainer puts a container whose init is in state st straight into s,
// as a successful Create would have; its runtime is /bin/true unless rt is
// given.
func addContainer(t *testing.T, s *Service, id string, st processState, rt *runc.Runc) *container {
	t.Helper()
	if rt == nil {
		rt = &runc.Runc{Command: "/bin/true"}
	}
	c := &container{id: id, bundle: t.TempDir(), runtime: rt, execs: map[string]*process{}}
	c.init = newProcess(id, "", stdio{}, nil)
	c.init.state = st
	c.init.pid = noSuchPid
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	return c
}

func execSpec(t testing.TB, p *specs.Process) *anypb.Any {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: b}
}

func TestServiceUnknownContainer(t *testing.T) {
	s, _ := newTestService(t)
	ctx := context.Background()
	const id = "missing"
	calls := map[string]func() error{
		"State":     func() error { _, err := s.State(ctx, &taskapi.StateRequest{ID: id}); return err },
		"Kill":      func() error { _, err := s.Kill(ctx, &taskapi.KillRequest{ID: id, Signal: 9}); return err },
		"Wait":      func() error { _, err := s.Wait(ctx, &taskapi.WaitRequest{ID: id}); return err },
		"Delete":    func() error { _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: id}); return err },
		"Pids":      func() error { _, err := s.Pids(ctx, &taskapi.PidsRequest{ID: id}); return err },
		"Start":     func() error { _, err := s.Start(ctx, &taskapi.StartRequest{ID: id}); return err },
		"Pause":     func() error { _, err := s.Pause(ctx, &taskapi.PauseRequest{ID: id}); return err },
		"Resume":    func() error { _, err := s.Resume(ctx, &taskapi.ResumeRequest{ID: id}); return err },
		"ResizePty": func() error { _, err := s.ResizePty(ctx, &taskapi.ResizePtyRequest{ID: id}); return err },
		"CloseIO":   func() error { _, err := s.CloseIO(ctx, &taskapi.CloseIORequest{ID: id}); return err },
		"Update":    func() error { _, err := s.Update(ctx, &taskapi.UpdateTaskRequest{ID: id}); return err },
		"Stats":     func() error { _, err := s.Stats(ctx, &taskapi.StatsRequest{ID: id}); return err },
		"Exec": func() error {
			_, err := s.Exec(ctx, &taskapi.ExecProcessRequest{ID: id, ExecID: "e1"})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			if err := call(); !errdefs.IsNotFound(err) {
				t.Errorf("err = %v, want NotFound", err)
			}
		})
	}

	// An unknown exec of a known container is NotFound too.
	addContainer(t, s, "c1", stateRunning, nil)
	if _, err := s.State(ctx, &taskapi.StateRequest{ID: "c1", ExecID: "nope"}); !errdefs.IsNotFound(err) {
		t.Errorf("State of an unknown exec: %v, want NotFound", err)
	}

	// Connect does not fail without a container.
	resp, err := s.Connect(ctx, &taskapi.ConnectRequest{ID: id})
	if err != nil || resp.ShimPid != uint32(os.Getpid()) || resp.TaskPid != 0 || resp.Version != Version {
		t.Errorf("Connect = %v, %v", resp, err)
	}
	if _, err := s.Checkpoint(ctx, &taskapi.CheckpointTaskRequest{ID: "c1"}); !errdefs.IsNotImplemented(err) {
		t.Errorf("Checkpoint: %v, want NotImplemented", err)
	}
}

func TestServiceCreateValidation(t *testing.T) {
	s, _ := newTestService(t)
	good := t.TempDir()
	writeFile(t, filepath.Join(good, "config.json"), goodConfig)
	cases := []struct {
		name string
		req  *taskapi.CreateTaskRequest
		kind func(error) bool
	}{
		{"bad id", &taskapi.CreateTaskRequest{ID: "../x", Bundle: good}, errdefs.IsInvalidArgument},
		{"checkpoint", &taskapi.CreateTaskRequest{ID: "c1", Bundle: good, Checkpoint: "/cp"}, errdefs.IsNotImplemented},
		{"bad bundle", &taskapi.CreateTaskRequest{ID: "c1", Bundle: "relative"}, errdefs.IsInvalidArgument},
		{"bad options", &taskapi.CreateTaskRequest{ID: "c1", Bundle: good,
			Options: runcOptionsAny(t, "containerd.runhcs.v1.Options", &options.Options{BinaryName: "x"})}, errdefs.IsInvalidArgument},
		{"bad stdio", &taskapi.CreateTaskRequest{ID: "c1", Bundle: good, Stdout: "relative/fifo"}, errdefs.IsInvalidArgument},
		{"terminal mismatch", &taskapi.CreateTaskRequest{ID: "c1", Bundle: good, Terminal: true}, errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Create(context.Background(), tc.req); !tc.kind(err) {
				t.Errorf("err = %v", err)
			}
		})
	}
	if len(s.containers) != 0 || len(s.creating) != 0 {
		t.Errorf("failed creates left containers %v, creating %v", s.containers, s.creating)
	}
}

func TestServiceExec(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestService(t)
	c := addContainer(t, s, "c1", stateRunning, nil)
	addContainer(t, s, "stopped", stateStopped, nil)
	proc := &specs.Process{Args: []string{"sh", "-c", "true"}, Cwd: "/"}

	cases := []struct {
		name string
		req  *taskapi.ExecProcessRequest
		kind func(error) bool // nil: success
	}{
		{"bad exec id", &taskapi.ExecProcessRequest{ID: "c1", ExecID: "", Spec: execSpec(t, proc)}, errdefs.IsInvalidArgument},
		{"no spec", &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1"}, errdefs.IsInvalidArgument},
		{"bad spec json", &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1",
			Spec: &anypb.Any{TypeUrl: "x", Value: []byte("{not json")}}, errdefs.IsInvalidArgument},
		{"no args", &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: execSpec(t, &specs.Process{Cwd: "/"})}, errdefs.IsInvalidArgument},
		{"bad stdio", &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: execSpec(t, proc), Stdout: "/nonexistent/fifo"}, errdefs.IsInvalidArgument},
		{"stopped container", &taskapi.ExecProcessRequest{ID: "stopped", ExecID: "e1", Spec: execSpec(t, proc)}, errdefs.IsFailedPrecondition},
		{"ok", &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: execSpec(t, proc), Terminal: true}, nil},
		{"duplicate", &taskapi.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: execSpec(t, proc)}, errdefs.IsAlreadyExists},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Exec(ctx, tc.req)
			if tc.kind == nil && err != nil {
				t.Fatal(err)
			}
			if tc.kind != nil && !tc.kind(err) {
				t.Errorf("err = %v", err)
			}
		})
	}

	e, err := c.process("e1")
	if err != nil {
		t.Fatal(err)
	}
	if !e.spec.Terminal || e.spec.Args[0] != "sh" {
		t.Errorf("exec spec = %+v: terminal must follow the request", e.spec)
	}
	st, err := s.State(ctx, &taskapi.StateRequest{ID: "c1", ExecID: "e1"})
	if err != nil || st.Status != task.Status_CREATED || st.ID != "e1" || st.ExecID != "e1" || !st.Terminal {
		t.Errorf("State = %v, %v", st, err)
	}

	// A created exec cannot be signalled; signals are checked first.
	if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", ExecID: "e1", Signal: 9}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Kill of a created exec: %v", err)
	}
	for _, sig := range []uint32{0, 65} {
		if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", ExecID: "e1", Signal: sig}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Kill with signal %d: %v", sig, err)
		}
	}
	if _, err := s.ResizePty(ctx, &taskapi.ResizePtyRequest{ID: "c1", ExecID: "e1"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("ResizePty before start: %v", err)
	}
	if _, err := s.CloseIO(ctx, &taskapi.CloseIORequest{ID: "c1", ExecID: "e1", Stdin: true}); err != nil {
		t.Errorf("CloseIO before start: %v", err)
	}

	// A running exec is signalled directly; a gone one is NotFound.
	e.mu.Lock()
	e.state, e.pid = stateRunning, noSuchPid
	e.mu.Unlock()
	if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", ExecID: "e1", Signal: 9}); !errdefs.IsNotFound(err) {
		t.Errorf("Kill of a vanished exec: %v, want NotFound", err)
	}
	e.mu.Lock()
	e.pid = os.Getpid() // SIGURG: the Go runtime takes it in its stride
	e.mu.Unlock()
	if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", ExecID: "e1", Signal: uint32(unix.SIGURG)}); err != nil {
		t.Errorf("Kill of a running exec: %v", err)
	}
	if _, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: "e1"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Delete of a running exec: %v, want FailedPrecondition", err)
	}

	// Its exit, then Wait, Kill and Delete of the stopped exec.
	e.mu.Lock()
	e.pid = noSuchPid
	e.mu.Unlock()
	s.registerPid(noSuchPid, e)
	s.HandleExit(Exit{Pid: noSuchPid, Status: 7, At: time.Unix(50, 0)})
	w, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "c1", ExecID: "e1"})
	if err != nil || w.ExitStatus != 7 || w.ExitedAt.AsTime().Unix() != 50 {
		t.Errorf("Wait = %v, %v", w, err)
	}
	if _, err := s.Kill(ctx, &taskapi.KillRequest{ID: "c1", ExecID: "e1", Signal: 9}); !errdefs.IsNotFound(err) {
		t.Errorf("Kill of a stopped exec: %v, want NotFound", err)
	}
	d, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1", ExecID: "e1"})
	if err != nil || d.ExitStatus != 7 || d.Pid != noSuchPid {
		t.Errorf("Delete = %v, %v", d, err)
	}
	if _, err := c.process("e1"); !errdefs.IsNotFound(err) {
		t.Errorf("exec still there after Delete: %v", err)
	}
	// The container is untouched.
	if st, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"}); err != nil || st.Status != task.Status_RUNNING {
		t.Errorf("container State = %v, %v", st, err)
	}
}

func TestServiceWaitCancelled(t *testing.T) {
	s, _ := newTestService(t)
	addContainer(t, s, "c1", stateRunning, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Wait(ctx, &taskapi.WaitRequest{ID: "c1"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait = %v, want the context's error", err)
	}
}

func TestServiceShutdown(t *testing.T) {
	ctx := context.Background()
	s, shutdowns := newTestService(t)

	addContainer(t, s, "c1", stateRunning, nil)
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil || *shutdowns != 0 {
		t.Errorf("Shutdown with a container: %v, %d shutdowns", err, *shutdowns)
	}

	s.mu.Lock()
	delete(s.containers, "c1")
	s.creating["c2"] = struct{}{}
	s.mu.Unlock()
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil || *shutdowns != 0 {
		t.Errorf("Shutdown during a create: %v, %d shutdowns", err, *shutdowns)
	}

	s.mu.Lock()
	delete(s.creating, "c2")
	s.mu.Unlock()
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil || *shutdowns != 1 {
		t.Errorf("Shutdown with nothing left: %v, %d shutdowns", err, *shutdowns)
	}
}

func waitExited(t *testing.T, p *process) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: exited never closed", p)
	}
}

func TestServiceExitBeforePid(t *testing.T) {
	s, _ := newTestService(t)
	at := time.Now()
	s.HandleExit(Exit{Pid: noSuchPid, Status: 3, At: at})
	s.mu.Lock()
	_, orphan := s.orphans[noSuchPid]
	s.mu.Unlock()
	if !orphan {
		t.Fatal("exit of an unknown pid not kept")
	}

	p := newProcess("c1", "e1", stdio{}, nil)
	p.state = stateRunning
	s.registerPid(noSuchPid, p)
	waitExited(t, p)
	if st, _, status, when := p.snapshot(); st != stateStopped || status != 3 || !when.Equal(at) {
		t.Errorf("process: state %v status %d at %v", st, status, when)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.orphans[noSuchPid]; ok {
		t.Error("orphan kept after it was claimed")
	}
	if _, ok := s.pids[noSuchPid]; ok {
		t.Error("pid of an exited process registered")
	}
}

func TestServiceExitAfterPid(t *testing.T) {
	s, _ := newTestService(t)
	p := newProcess("c1", "", stdio{}, nil)
	p.state = stateRunning
	s.registerPid(noSuchPid, p)
	s.HandleExit(Exit{Pid: noSuchPid, Status: 137, At: time.Now()})
	waitExited(t, p)
	if st, _, status, _ := p.snapshot(); st != stateStopped || status != 137 {
		t.Errorf("process: state %v status %d", st, status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pids) != 0 || len(s.orphans) != 0 {
		t.Errorf("pids %v orphans %v, want both empty", s.pids, s.orphans)
	}
}

func TestServiceOrphanPruning(t *testing.T) {
	s, _ := newTestService(t)
	now := time.Now()
	s.HandleExit(Exit{Pid: 100, Status: 1, At: now.Add(-orphanTTL - time.Second)})
	s.HandleExit(Exit{Pid: 101, Status: 1, At: now.Add(-orphanTTL + time.Second)})
	s.HandleExit(Exit{Pid: 102, Status: 1, At: now})
	s.mu.Lock()
	defer s.mu.Unlock()
	for pid, want := range map[int]bool{100: false, 101: true, 102: true} {
		if _, ok := s.orphans[pid]; ok != want {
			t.Errorf("orphan %d kept = %v, want %v", pid, ok, want)
		}
	}
}

// TestServiceDeleteCreated deletes a container that was created but never
// started: the runtime kills its init, whose exit the reaper reports.
func TestServiceDeleteCreated(t *testing.T) {
	ctx := context.Background()
	s, shutdowns := newTestService(t)
	c := addContainer(t, s, "c1", stateCreated, nil)
	s.registerPid(noSuchPid, c.init)
	go func() {
		time.Sleep(20 * time.Millisecond)
		s.HandleExit(Exit{Pid: noSuchPid, Status: 137, At: time.Now()})
	}()
	start := time.Now()
	resp, err := s.Delete(ctx, &taskapi.DeleteRequest{ID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ExitStatus != 137 || resp.Pid != noSuchPid {
		t.Errorf("Delete = %v", resp)
	}
	if d := time.Since(start); d > exitFlushTimeout {
		t.Errorf("Delete took %v although the exit came at once", d)
	}
	if _, err := s.State(ctx, &taskapi.StateRequest{ID: "c1"}); !errdefs.IsNotFound(err) {
		t.Errorf("State after Delete: %v, want NotFound", err)
	}
	if _, err := s.Shutdown(ctx, &taskapi.ShutdownRequest{}); err != nil || *shutdowns != 1 {
		t.Errorf("Shutdown after the last Delete: %v, %d shutdowns", err, *shutdowns)
	}
}

func TestServiceDeleteRunning(t *testing.T) {
	s, _ := newTestService(t)
	addContainer(t, s, "c1", stateRunning, nil)
	addContainer(t, s, "c2", statePaused, nil)
	for _, id := range []string{"c1", "c2"} {
		if _, err := s.Delete(context.Background(), &taskapi.DeleteRequest{ID: id}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Delete of %s: %v, want FailedPrecondition", id, err)
		}
	}
}

func TestServiceStartNotCreated(t *testing.T) {
	s, _ := newTestService(t)
	for _, st := range []processState{stateRunning, statePaused, stateStopped} {
		addContainer(t, s, "c1", st, nil)
		if _, err := s.Start(context.Background(), &taskapi.StartRequest{ID: "c1"}); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("Start of a %v container: %v, want FailedPrecondition", st.status(), err)
		}
	}
	// An exec of a container that is not running cannot start.
	c := addContainer(t, s, "c2", stateCreated, nil)
	c.execs["e1"] = newProcess("c2", "e1", stdio{}, &specs.Process{Args: []string{"true"}})
	if _, err := s.Start(context.Background(), &taskapi.StartRequest{ID: "c2", ExecID: "e1"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Start of an exec in a created container: %v, want FailedPrecondition", err)
	}
}

func TestServicePauseState(t *testing.T) {
	s, _ := newTestService(t)
	addContainer(t, s, "created", stateCreated, nil)
	addContainer(t, s, "running", stateRunning, nil)
	ctx := context.Background()
	if _, err := s.Pause(ctx, &taskapi.PauseRequest{ID: "created"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Pause of a created container: %v", err)
	}
	if _, err := s.Resume(ctx, &taskapi.ResumeRequest{ID: "running"}); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Resume of a running container: %v", err)
	}
}

func TestServiceUpdateValidation(t *testing.T) {
	s, _ := newTestService(t)
	addContainer(t, s, "c1", stateRunning, nil)
	for name, res := range map[string]*anypb.Any{
		"none":     nil,
		"bad json": {TypeUrl: "x", Value: []byte("[")},
	} {
		if _, err := s.Update(context.Background(), &taskapi.UpdateTaskRequest{ID: "c1", Resources: res}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// A runtime binary that exists nowhere gives an error naming the call.
func TestServiceRuntimeMissing(t *testing.T) {
	s, _ := newTestService(t)
	addContainer(t, s, "c1", stateRunning, &runc.Runc{Command: "/nonexistent/corral-runtime"})
	_, err := s.Pids(context.Background(), &taskapi.PidsRequest{ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/corral-runtime ps") {
		t.Errorf("Pids = %v, want the runtime's failure", err)
	}
}

// TestServiceKillInit signals a running init process directly, without the
// runtime (whose command here is /bin/false, so any use of it fails), and
// reports NotFound once the process has been reaped.
func TestServiceKillInit(t *testing.T) {
	s, _ := newTestService(t)
	reaper := NewReaper(s.HandleExit)
	s.reaper = reaper
	c := addContainer(t, s, "c1", stateRunning, &runc.Runc{Command: "/bin/false"})
	c.ownPID = true
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	c.init.pid = pid
	s.registerPid(pid, c.init)

	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{ID: "c1", Signal: uint32(unix.SIGKILL), All: true}); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	// The exit reaches the service through the reaper, as SIGCHLD would.
	deadline := time.Now().Add(10 * time.Second)
	for {
		reaper.Reap()
		if st, _, _, _ := c.init.snapshot(); st == stateStopped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed process was not reaped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, _, status, _ := c.init.snapshot(); status != 128+int(unix.SIGKILL) {
		t.Errorf("exit status %d, want %d", status, 128+int(unix.SIGKILL))
	}
	_, err := s.Kill(t.Context(), &taskapi.KillRequest{ID: "c1", Signal: uint32(unix.SIGTERM)})
	if !errdefs.IsNotFound(err) {
		t.Errorf("Kill after the exit: %v, want NotFound", err)
	}

	// SIGTERM to every process of a container sharing a PID namespace is
	// the runtime's job: here it fails, which shows it was asked.
	c2 := addContainer(t, s, "c2", stateRunning, &runc.Runc{Command: "/bin/false"})
	c2.init.pid = 1 << 22 // never signalled: the runtime is asked instead
	s.registerPid(c2.init.pid, c2.init)
	if _, err := s.Kill(t.Context(), &taskapi.KillRequest{ID: "c2", Signal: uint32(unix.SIGTERM), All: true}); err == nil {
		t.Error("Kill -a SIGTERM did not go through the runtime")
	}
}

func TestOwnPIDNamespace(t *testing.T) {
	for _, tc := range []struct {
		json string
		want bool
	}{
		{`{"linux":{"namespaces":[{"type":"network","path":"/run/netns/x"},{"type":"pid"}]}}`, true},
		{`{"linux":{"namespaces":[{"type":"pid","path":"/proc/42/ns/pid"}]}}`, false},
		{`{"linux":{"namespaces":[{"type":"ipc"}]}}`, false},
		{`{}`, false},
	} {
		var b bundleSpec
		if err := json.Unmarshal([]byte(tc.json), &b); err != nil {
			t.Fatal(err)
		}
		if got := b.ownPIDNamespace(); got != tc.want {
			t.Errorf("%s: ownPIDNamespace = %v, want %v", tc.json, got, tc.want)
		}
	}
}
