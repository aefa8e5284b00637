package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestExecSync runs commands in a running container: output, exit code, a
// timeout that kills the command, the container's own user and env, bad
// input, and crictl exec --sync as a user runs it.
func TestExecSync(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("exec")
	podID := e.runPod(t, pod)
	cfg := e.containerConfig("app", "sleep", "1000")
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("hello")}}
	cid, _ := e.runContainer(t, podID, pod, cfg)

	resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid,
		Cmd: []string{"sh", "-c", "echo out $GREETING; echo err >&2; exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "out hello\n" || string(resp.Stderr) != "err\n" || resp.ExitCode != 3 {
		t.Errorf("ExecSync: stdout %q stderr %q exit %d; want %q %q 3", resp.Stdout, resp.Stderr, resp.ExitCode, "out hello\n", "err\n")
	}

	start := time.Now()
	_, err = e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sleep", "10"}, Timeout: 1})
	if code, _ := grpcCode(err); code != codes.DeadlineExceeded {
		t.Errorf("ExecSync past its timeout: %v, want DeadlineExceeded", err)
	}
	// About a second: the timeout, then the kill and its report.
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("a 1 s timeout took %s", d)
	}
	// The timed-out command does not linger.
	ps, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"ps"}})
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(strings.Split(string(ps.Stdout), "\n"), func(l string) bool { return strings.HasSuffix(l, " sleep 10") }) {
		t.Errorf("the timed-out command still runs:\n%s", ps.Stdout)
	}

	for _, tc := range []struct {
		name string
		req  *runtimeapi.ExecSyncRequest
		code codes.Code
	}{
		{"empty cmd", &runtimeapi.ExecSyncRequest{ContainerId: cid}, codes.InvalidArgument},
		{"unknown container", &runtimeapi.ExecSyncRequest{ContainerId: strings.Repeat("0", 64), Cmd: []string{"true"}}, codes.NotFound},
		{"command not in the image", &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"no-such-command"}}, codes.InvalidArgument},
	} {
		_, err := e.rt.ExecSync(e.ctx(), tc.req)
		if code, msg := grpcCode(err); code != tc.code {
			t.Errorf("%s: %v (%s), want %s", tc.name, code, msg, tc.code)
		}
	}

	out := e.mustCrictl(t, "exec", "--sync", cid, "echo", "via-crictl")
	if strings.TrimSpace(out) != "via-crictl" {
		t.Errorf("crictl exec --sync printed %q", out)
	}

	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: cid}); err != nil {
		t.Fatal(err)
	}
	_, err = e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"true"}})
	if code, _ := grpcCode(err); code != codes.FailedPrecondition {
		t.Errorf("ExecSync in a stopped container: %v, want FailedPrecondition", err)
	}
	e.removePod(t, podID)
}
