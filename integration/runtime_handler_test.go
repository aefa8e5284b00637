package integration

// Issue 9's acceptance tests: pods on three runtime handlers at once
// (corral's shim driving runc, the same shim driving crun, and containerd's
// own containerd-shim-runc-v2), what a kill -9 of corrald does to them,
// corralctl talking to their shims with corrald stopped, and the handler
// errors RunPodSandbox reports.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerdRuncShim is Debian's containerd-shim-runc-v2 (containerd 1.6).
const containerdRuncShim = "/usr/bin/containerd-shim-runc-v2"

// crunHybridRefusal is how crun 1.8 refuses this host's hybrid cgroup
// layout; a crun pod failing with it is skipped, naming it.
const crunHybridRefusal = "cgroups in hybrid mode not supported"

// handlerCase is one handler a test runs a pod on, with the exit code its
// containers use so a mix-up between pods shows.
type handlerCase struct {
	name   string
	shim   string // the binary its shims must run
	code   int
	podID  string
	pod    *runtimeapi.PodSandboxConfig
	err    error  // RunPodSandbox's error
	skip   string // why the handler cannot run here, if it cannot
	mainID string // a container that runs until stopped
}

// handlerEnv is a podEnv whose corrald has the runc, crun and
// runc-containerd handlers.
func newHandlerEnv(t *testing.T, extra func(dir string) string) *podEnv {
	t.Helper()
	if _, err := os.Stat(containerdRuncShim); err != nil {
		t.Skipf("containerd is not installed (hack/install-deps.sh): %v", err)
	}
	// Registered before the env: cleanups run last-first, so this one runs
	// after the env has removed what it could through CRI.
	var state string
	t.Cleanup(func() { killForeignShims(t, state) })
	e := newPodEnvWithConfig(t, loopbackConflist, func(dir string) string {
		cfg := `
[runtimes.crun]
shim = "containerd-shim-corral-v2"
runtime = "/usr/bin/crun"

[runtimes.runc-containerd]
shim = "io.containerd.runc.v2"
runtime = "/usr/sbin/runc"
`
		if extra != nil {
			cfg += extra(dir)
		}
		return cfg
	})
	state = e.state
	return e
}

func handlerCases() []*handlerCase {
	return []*handlerCase{
		{name: "runc", shim: filepath.Join(binDir, corralShim), code: 41},
		{name: "crun", shim: filepath.Join(binDir, corralShim), code: 42},
		{name: "runc-containerd", shim: containerdRuncShim, code: 43},
	}
}

// runHandlerPods runs one pod per handler, all at once, each with a
// container "main" that runs until stopped. A crun pod refused for this
// host's hybrid cgroups is marked skipped with crun's own words.
func (e *podEnv) runHandlerPods(t *testing.T, cases []*handlerCase, mounts func(h *handlerCase) []*runtimeapi.Mount) {
	t.Helper()
	var wg sync.WaitGroup
	for _, h := range cases {
		h.pod = e.podConfig("pod-" + h.name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: h.pod, RuntimeHandler: h.name})
			if err != nil {
				h.err = err
				return
			}
			h.podID = resp.PodSandboxId
			e.watch.trackID(h.podID)
		}()
	}
	wg.Wait()
	for _, h := range cases {
		switch {
		case h.err != nil && h.name == "crun" && strings.Contains(h.err.Error(), crunHybridRefusal):
			h.skip = fmt.Sprintf("crun refuses this host's cgroups: RunPodSandbox on handler crun answered: %v", h.err)
			t.Logf("handler crun: tried, and skipped: %s", h.skip)
		case h.err != nil:
			t.Fatalf("RunPodSandbox on handler %s: %v", h.name, h.err)
		default:
			cfg := e.containerConfig("main", "sh", "-c", "echo started; exec sleep 3600")
			if mounts != nil {
				cfg.Mounts = mounts(h)
			}
			h.mainID, _ = e.runContainer(t, h.podID, h.pod, cfg)
		}
	}
}

func running(cases []*handlerCase) []*handlerCase {
	var out []*handlerCase
	for _, h := range cases {
		if h.skip == "" {
			out = append(out, h)
		}
	}
	return out
}

// corralctl runs bin/corralctl on the env's state dir.
func (e *podEnv) corralctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "corralctl"), append([]string{"--state", e.state}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("corralctl %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

func (e *podEnv) mustCorralctl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := e.corralctl(t, args...)
	if code != 0 {
		t.Fatalf("corralctl %v: exit %d: %s%s", args, code, errOut, out)
	}
	return out
}

// listedShim is one entry of `corralctl shims -o json`.
type listedShim struct {
	Pod        string `json:"pod"`
	Name       string `json:"name"`
	PID        int    `json:"pid"`
	Address    string `json:"address"`
	Binary     string `json:"binary"`
	Replaced   bool   `json:"binary_replaced"`
	Version    string `json:"version"`
	Error      string `json:"error"`
	Containers []struct {
		ID, Name, Type string
	} `json:"containers"`
}

func (e *podEnv) listedShims(t *testing.T) map[string]listedShim {
	t.Helper()
	out := e.mustCorralctl(t, "shims", "-o", "json")
	var list []listedShim
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("corralctl shims -o json: %v\n%s", err, out)
	}
	byPod := map[string]listedShim{}
	for _, s := range list {
		byPod[s.Pod] = s
	}
	return byPod
}

// checkListedShims checks `corralctl shims` against the pods: one shim per
// running pod, reachable, running the handler's binary, naming the pod's
// containers; and the table form names the same.
func (e *podEnv) checkListedShims(t *testing.T, cases []*handlerCase, containers ...string) map[string]listedShim {
	t.Helper()
	listed := e.listedShims(t)
	if len(listed) != len(running(cases)) {
		t.Errorf("corralctl shims lists %d shims, want %d (one per running pod): %v", len(listed), len(running(cases)), listed)
	}
	for _, h := range running(cases) {
		s, ok := listed[h.podID]
		if !ok {
			t.Errorf("corralctl shims does not list the %s pod %s", h.name, h.podID)
			continue
		}
		if s.Error != "" || s.PID <= 0 || !strings.HasPrefix(s.Address, "unix://") {
			t.Errorf("%s pod: shim listed as %+v", h.name, s)
		}
		if s.Binary != h.shim {
			t.Errorf("%s pod: shim binary %q, want %q", h.name, s.Binary, h.shim)
		}
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", s.PID)); exe != h.shim {
			t.Errorf("%s pod: /proc/%d/exe is %q, want %q", h.name, s.PID, exe, h.shim)
		}
		var names []string
		for _, c := range s.Containers {
			names = append(names, c.Name)
		}
		for _, want := range containers {
			if !slices.Contains(names, want) {
				t.Errorf("%s pod: shim's containers %q lack %q", h.name, names, want)
			}
		}
	}
	table := e.mustCorralctl(t, "shims")
	for _, h := range running(cases) {
		if !strings.Contains(table, h.podID[:12]) || !strings.Contains(table, h.shim) {
			t.Errorf("corralctl shims table lacks the %s pod or its binary:\n%s", h.name, table)
		}
	}
	return listed
}

// TestRuntimeHandlers is acceptance 1: three pods at once on handlers runc,
// crun and runc-containerd (containerd's containerd-shim-runc-v2): each
// runs a container, exec works, exit codes are reported, corralctl shims
// shows one shim per pod with the handler's binary, corralctl events sees
// the exits and corralctl debug dump the records. crun refuses this host's
// hybrid cgroups: its pod is tried, and its subtest is skipped with crun's
// own words.
func TestRuntimeHandlers(t *testing.T) {
	e := newHandlerEnv(t, nil)
	cases := handlerCases()

	// Status lists every handler, the default one as "" too.
	st, err := e.rt.Status(e.ctx(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var handlers []string
	for _, h := range st.RuntimeHandlers {
		handlers = append(handlers, h.Name)
	}
	for _, want := range []string{"", "runc", "crun", "runc-containerd"} {
		if !slices.Contains(handlers, want) {
			t.Errorf("Status lists handlers %q, lacking %q", handlers, want)
		}
	}

	events := e.followEvents(t, "/tasks/")
	e.runHandlerPods(t, cases, nil)
	for _, h := range cases {
		t.Run(h.name, func(t *testing.T) {
			if h.skip != "" {
				t.Skip(h.skip)
			}
			// Execs until one's exit comes through: then the follower is
			// surely subscribed, and the exiter's exit cannot be missed.
			events.waitFor(t, fmt.Sprintf("an exec's exit in the %s pod", h.name), func(ev eventLine) bool {
				return ev.Pod == h.podID
			}, func() {
				e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: h.mainID, Cmd: []string{"true"}, Timeout: 30})
			})
			resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: h.mainID, Cmd: []string{"sh", "-c", "echo exec-on-" + h.name + "; exit 7"}, Timeout: 30})
			if err != nil {
				t.Fatalf("ExecSync: %v", err)
			}
			if string(resp.Stdout) != "exec-on-"+h.name+"\n" || resp.ExitCode != 7 {
				t.Errorf("ExecSync: stdout %q stderr %q exit %d; want %q and 7", resp.Stdout, resp.Stderr, resp.ExitCode, "exec-on-"+h.name+"\n")
			}
			exiter := e.createContainer(t, h.podID, h.pod, e.containerConfig("exiter", "sh", "-c", fmt.Sprintf("exit %d", h.code)))
			e.startContainer(t, exiter)
			if st := e.waitContainer(t, exiter, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second); st.ExitCode != int32(h.code) || st.Reason != "Error" {
				t.Errorf("exiter: exit code %d reason %q, want %d Error", st.ExitCode, st.Reason, h.code)
			}
			events.waitFor(t, fmt.Sprintf("the exit of %s's exiter", h.name), func(ev eventLine) bool {
				return ev.Topic == "/tasks/exit" && ev.Pod == h.podID && ev.Container == exiter && strings.Contains(string(ev.Event), fmt.Sprintf(`"exitStatus":%d`, h.code))
			}, nil)
		})
	}

	e.checkListedShims(t, cases, "main", "exiter")

	// corrald publish, the -publish-binary of shims from containerd 1.4
	// and older, hands an event to the running corrald.
	runcPod := cases[0]
	paused, _ := proto.Marshal(&eventstypes.TaskPaused{ContainerID: runcPod.mainID})
	payload, _ := proto.Marshal(&anypb.Any{TypeUrl: "containerd.events.TaskPaused", Value: paused})
	publish := exec.Command(filepath.Join(binDir, "corrald"), "--address", filepath.Join(e.state, "corral.sock"), "publish", "--topic", "/tasks/paused", "--namespace", "k8s.io")
	publish.Stdin = bytes.NewReader(payload)
	if out, err := publish.CombinedOutput(); err != nil {
		t.Fatalf("corrald publish: %v: %s", err, out)
	}
	events.waitFor(t, "the event corrald publish forwarded", func(ev eventLine) bool {
		return ev.Topic == "/tasks/paused" && ev.Pod == runcPod.podID && ev.Container == runcPod.mainID
	}, nil)

	// The records, as stored, name each pod's handler and shim.
	out := e.mustCorralctl(t, "debug", "dump", "--bucket", "v1/sandboxes", "-o", "json")
	var records []struct {
		Bucket string
		Key    string
		Value  struct {
			RuntimeHandler string            `json:"runtime_handler"`
			Extra          map[string]string `json:"extra"`
		}
	}
	if err := json.Unmarshal([]byte(out), &records); err != nil {
		t.Fatalf("debug dump: %v\n%s", err, out)
	}
	for _, h := range running(cases) {
		found := false
		for _, r := range records {
			if r.Key == h.podID {
				found = true
				if r.Bucket != "v1/sandboxes" || r.Value.RuntimeHandler != h.name || r.Value.Extra["shim.binary"] != h.shim {
					t.Errorf("%s pod's record: %+v", h.name, r)
				}
			}
		}
		if !found {
			t.Errorf("debug dump lacks the %s pod %s:\n%s", h.name, h.podID, out)
		}
	}

	for _, h := range running(cases) {
		e.removePod(t, h.podID)
	}
	e.checkNoLeaks(t)
	if shims := foreignShims(e.state); len(shims) > 0 {
		t.Errorf("containerd shims left after removing their pods: %v", shims)
	}
}

// TestRuntimeHandlersSurviveCorraldKill is acceptance 2: with a pod on each
// handler running, corrald is killed with SIGKILL, a container of each pod
// exits (with its own code) while corrald is gone, and the restarted
// corrald reports every exit with its code and reconnects to every shim.
func TestRuntimeHandlersSurviveCorraldKill(t *testing.T) {
	e := newHandlerEnv(t, nil)
	cases := handlerCases()
	triggers := map[string]string{}
	for _, h := range cases {
		triggers[h.name] = filepath.Join(e.dir, "trigger-"+h.name)
		if err := os.MkdirAll(triggers[h.name], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.runHandlerPods(t, cases, nil)
	waiters := map[string]string{}
	waiterPids := map[string]int{}
	for _, h := range running(cases) {
		cfg := e.containerConfig("waiter", "sh", "-c", fmt.Sprintf("while [ ! -e /trigger/go ]; do sleep 0.1; done; exit %d", h.code))
		cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/trigger", HostPath: triggers[h.name]}}
		waiters[h.name], waiterPids[h.name] = e.runContainer(t, h.podID, h.pod, cfg)
	}
	before := e.listedShims(t)

	e.killDaemon(t)
	for _, h := range running(cases) {
		if err := os.WriteFile(filepath.Join(triggers[h.name], "go"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range running(cases) {
		pid := waiterPids[h.name]
		waitUntil(t, 30*time.Second, fmt.Sprintf("the %s waiter (pid %d) exits while corrald is down", h.name, pid), func() (bool, string) {
			return !processAlive(pid), "still running"
		})
	}
	e.restart(t)

	for _, h := range cases {
		t.Run(h.name, func(t *testing.T) {
			if h.skip != "" {
				t.Skip(h.skip)
			}
			st := e.waitContainer(t, waiters[h.name], runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
			if st.ExitCode != int32(h.code) {
				t.Errorf("waiter exited during the downtime: exit code %d after the restart, want %d (reason %q)", st.ExitCode, h.code, st.Reason)
			}
			if st.FinishedAt <= st.StartedAt {
				t.Errorf("finished_at %d is not after started_at %d", st.FinishedAt, st.StartedAt)
			}
			if c, _ := e.containerStatus(t, h.mainID); c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Errorf("main is %s after the restart, want running", c.State)
			}
			// The restarted corrald talks to the same shim.
			resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: h.mainID, Cmd: []string{"echo", "back"}, Timeout: 30})
			if err != nil || string(resp.Stdout) != "back\n" {
				t.Errorf("ExecSync after the restart: %v, %v", resp, err)
			}
		})
	}
	after := e.checkListedShims(t, cases, "main", "waiter")
	for pod, s := range before {
		if after[pod].PID != s.PID {
			t.Errorf("pod %s: shim pid %d after the restart, was %d", pod, after[pod].PID, s.PID)
		}
	}
}

// TestCorralctlWithCorraldStopped is acceptance 4: with corrald stopped,
// corralctl finds the pods' shims from the files under STATE and talks to
// them: state shows each container's state and exit code, pids and stats
// answer, exec runs a command and passes its exit code on, and kill
// signals a container, whose exit the restarted corrald then reports.
func TestCorralctlWithCorraldStopped(t *testing.T) {
	e := newHandlerEnv(t, nil)
	cases := handlerCases()
	e.runHandlerPods(t, cases, nil)
	exiters := map[string]string{}
	for _, h := range running(cases) {
		exiters[h.name] = e.createContainer(t, h.podID, h.pod, e.containerConfig("exiter", "sh", "-c", fmt.Sprintf("exit %d", h.code)))
		e.startContainer(t, exiters[h.name])
		e.waitContainer(t, exiters[h.name], runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	}
	if err := e.d.stop(t, 20*time.Second); err != nil {
		t.Fatalf("corrald stopped with %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.state, "debug.sock")); err == nil {
		t.Error("STATE/debug.sock is still there after corrald stopped")
	}

	for _, h := range cases {
		t.Run(h.name, func(t *testing.T) {
			if h.skip != "" {
				t.Skip(h.skip)
			}
			table := e.mustCorralctl(t, "shim", h.pod.Metadata.Namespace+"/"+h.pod.Metadata.Name, "state")
			t.Logf("corralctl shim %s state, corrald stopped:\n%s", h.name, table)
			for _, want := range []string{"CONTAINER", "(pause)", "main", "running", "exiter", "stopped", strconv.Itoa(h.code)} {
				if !strings.Contains(table, want) {
					t.Errorf("state table lacks %q", want)
				}
			}
			var states []struct {
				ID         string `json:"id"`
				Name       string `json:"name"`
				Status     string `json:"status"`
				PID        int    `json:"pid"`
				ExitStatus int    `json:"exit_status"`
			}
			out := e.mustCorralctl(t, "shim", h.podID, "state", "-o", "json")
			if err := json.Unmarshal([]byte(out), &states); err != nil {
				t.Fatalf("state -o json: %v\n%s", err, out)
			}
			got := map[string]string{}
			for _, s := range states {
				got[s.Name] = fmt.Sprintf("%s/%d", s.Status, s.ExitStatus)
				if s.Status == "running" && !processAlive(s.PID) {
					t.Errorf("%s is running with pid %d, which does not exist", s.Name, s.PID)
				}
			}
			want := map[string]string{"(pause)": "running/0", "main": "running/0", "exiter": fmt.Sprintf("stopped/%d", h.code)}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("states %v, want %v", got, want)
			}

			if out := e.mustCorralctl(t, "shim", h.podID, "pids", "main"); !strings.Contains(out, h.mainID[:12]) {
				t.Errorf("pids of main:\n%s", out)
			}
			if out := e.mustCorralctl(t, "shim", h.podID, "stats", "main", "-o", "json"); !strings.Contains(out, `"stats"`) {
				t.Errorf("stats of main:\n%s", out)
			}
			out, errOut, code := e.corralctl(t, "shim", h.podID, "exec", "--container", "main", "--", "sh", "-c", "echo via-shim; echo to-stderr >&2; exit 5")
			if code != 5 || out != "via-shim\n" || errOut != "to-stderr\n" {
				t.Errorf("exec: exit %d, stdout %q, stderr %q; want 5, %q, %q", code, out, errOut, "via-shim\n", "to-stderr\n")
			}
			e.mustCorralctl(t, "shim", h.podID, "kill", "--signal", "KILL", "main")
			waitUntil(t, 15*time.Second, "main stops after corralctl kill", func() (bool, string) {
				out, _, _ := e.corralctl(t, "shim", h.podID, "state", "main", "-o", "json")
				return strings.Contains(out, `"status": "stopped"`), out
			})
		})
	}

	// corrald, back, learns of the kill it did not see.
	e.restart(t)
	for _, h := range running(cases) {
		if st := e.waitContainer(t, h.mainID, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second); st.ExitCode != 137 {
			t.Errorf("%s: main killed through corralctl: exit code %d after the restart, want 137", h.name, st.ExitCode)
		}
	}
}

// TestRuntimeHandlerErrors is acceptance 5: an unknown handler, a handler
// whose shim binary is missing, and a shim that exits before printing its
// address each fail RunPodSandbox with a message naming the problem, and
// leave nothing behind: no record, files, mounts, namespaces or processes.
func TestRuntimeHandlerErrors(t *testing.T) {
	var script string
	e := newPodEnvWithConfig(t, loopbackConflist, func(dir string) string {
		script = filepath.Join(dir, "containerd-shim-early-exit-v2")
		os.WriteFile(script, []byte("#!/bin/sh\necho 'early-exit shim: cannot start: no hypervisor found' >&2\nexit 3\n"), 0o755)
		quiet := filepath.Join(dir, "containerd-shim-quiet-v2")
		os.WriteFile(quiet, []byte("#!/bin/sh\nexit 0\n"), 0o755)
		return fmt.Sprintf(`
[runtimes.missing]
shim = %q
[runtimes.missing-name]
shim = "io.containerd.surelynotinstalled.v2"
[runtimes.early-exit]
shim = %q
[runtimes.quiet]
shim = %q
`, filepath.Join(dir, "no-such-shim"), script, quiet)
	})
	// A pod first: STATE/netns becomes the bind mount it stays (see
	// allowedMounts), so the snapshots below compare like with like.
	goodPod := func() {
		pod := e.podConfig("good")
		id := e.runPod(t, pod)
		e.runContainer(t, id, pod, e.containerConfig("main", "sleep", "3600"))
		e.removePod(t, id)
	}
	goodPod()
	for _, tc := range []struct {
		handler string
		code    codes.Code
		want    []string
	}{
		{"kata", codes.InvalidArgument, []string{`runtime handler "kata" is not configured`, "early-exit, missing, missing-name, quiet, runc"}},
		{"missing", codes.FailedPrecondition, []string{`runtime handler "missing"`, "no-such-shim", "not installed"}},
		{"missing-name", codes.FailedPrecondition, []string{`runtime handler "missing-name"`, "io.containerd.surelynotinstalled.v2", "not installed"}},
		{"early-exit", codes.FailedPrecondition, []string{`runtime handler "early-exit"`, "before printing its address", "exit status 3", "no hypervisor found"}},
		{"quiet", codes.FailedPrecondition, []string{`runtime handler "quiet"`, "start: exited without printing its address"}},
	} {
		t.Run(tc.handler, func(t *testing.T) {
			before := e.snapshotHost()
			files := dirEntries(filepath.Join(e.state, "sandboxes"), filepath.Join(e.root, "sandboxes"), filepath.Join(e.state, "netns"))
			_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("bad-" + tc.handler), RuntimeHandler: tc.handler})
			code, msg := grpcCode(err)
			t.Logf("RunPodSandbox on handler %q: %s: %s", tc.handler, code, msg)
			if code != tc.code {
				t.Errorf("code %s, want %s", code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			e.assertRolledBack(t, before, "")
			if pods := e.listPods(t, nil); len(pods) != 0 {
				t.Errorf("a pod record is left: %v", pods)
			}
			if after := dirEntries(filepath.Join(e.state, "sandboxes"), filepath.Join(e.root, "sandboxes"), filepath.Join(e.state, "netns")); !slices.Equal(after, files) {
				t.Errorf("pod files left: %v, before %v", after, files)
			}
		})
	}
	// The node still runs pods on a good handler.
	goodPod()
	e.checkNoLeaks(t)
}

func dirEntries(dirs ...string) []string {
	var out []string
	for _, d := range dirs {
		entries, _ := os.ReadDir(d)
		for _, en := range entries {
			out = append(out, filepath.Join(d, en.Name()))
		}
	}
	return out
}

// foreignShims lists the long-running shims other than corral's serving
// the corrald on state: their -address names its socket.
func foreignShims(state string) []string {
	if state == "" {
		return nil
	}
	address := filepath.Join(state, "corral.sock")
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		base := filepath.Base(args[0])
		if base == corralShim || !strings.HasPrefix(base, "containerd-shim") {
			continue
		}
		if i := slices.Index(args, "-address"); i < 0 || i+1 >= len(args) || args[i+1] != address {
			continue
		}
		if last := args[len(args)-1]; last == "start" || last == "delete" {
			continue
		}
		out = append(out, filepath.Base(filepath.Dir(p))+": "+strings.Join(args, " "))
	}
	return out
}

// killForeignShims ends what foreignShims finds; the env's own cleanup
// knows only corral's shims.
func killForeignShims(t *testing.T, state string) {
	for _, s := range foreignShims(state) {
		pid, _ := strconv.Atoi(strings.SplitN(s, ":", 2)[0])
		t.Logf("cleanup: killing shim left running: %s", s)
		killProcess(pid)
	}
}

// eventLine is one line of `corralctl events -o json`.
type eventLine struct {
	Time      string          `json:"time"`
	Topic     string          `json:"topic"`
	Pod       string          `json:"pod"`
	Container string          `json:"container"`
	Type      string          `json:"type"`
	Event     json.RawMessage `json:"event"`
}

// eventFollower is a `corralctl events` running beside the test.
type eventFollower struct {
	mu    sync.Mutex
	lines []eventLine
	cmd   *exec.Cmd
}

// followEvents starts `corralctl events -o json --topic TOPIC` and keeps
// what it prints until the test ends.
func (e *podEnv) followEvents(t *testing.T, topic string) *eventFollower {
	t.Helper()
	f := &eventFollower{cmd: exec.Command(filepath.Join(binDir, "corralctl"), "--state", e.state, "events", "-o", "json", "--topic", topic)}
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	f.cmd.Stderr = &stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l eventLine
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				f.mu.Lock()
				f.lines = append(f.lines, l)
				f.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		killProcess(f.cmd.Process.Pid)
		<-done
		f.cmd.Wait()
		if t.Failed() {
			t.Logf("corralctl events stderr: %s", stderr.String())
		}
	})
	return f
}

// waitFor waits until an event matches; poke, if set, runs before each
// look, to cause one.
func (f *eventFollower) waitFor(t *testing.T, what string, match func(eventLine) bool, poke func()) {
	t.Helper()
	waitUntil(t, 30*time.Second, "corralctl events shows "+what, func() (bool, string) {
		if poke != nil {
			poke()
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, l := range f.lines {
			if match(l) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events: %+v", len(f.lines), f.lines)
	})
}

// TestKataHandler runs a pod on containerd-shim-kata-v2 through the same
// code path as containerd-shim-runc-v2, where Kata is installed. It is not
// installed on the machines this suite runs on (no Debian package), so the
// test says so and skips; nothing stands in for it.
func TestKataHandler(t *testing.T) {
	kata, err := exec.LookPath("containerd-shim-kata-v2")
	if err != nil {
		t.Skipf("containerd-shim-kata-v2 is not installed, so the kata handler cannot be tried: %v", err)
	}
	e := newPodEnvWithConfig(t, loopbackConflist, func(string) string {
		return "[runtimes.kata]\nshim = \"io.containerd.kata.v2\"\npod_annotations = [\"io.katacontainers.*\"]\n"
	})
	h := &handlerCase{name: "kata", shim: kata, code: 44}
	e.runHandlerPods(t, []*handlerCase{h}, nil)
	resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: h.mainID, Cmd: []string{"echo", "in-kata"}, Timeout: 60})
	if err != nil || string(resp.Stdout) != "in-kata\n" {
		t.Errorf("ExecSync on kata: %v, %v", resp, err)
	}
	e.removePod(t, h.podID)
	e.checkNoLeaks(t)
}
