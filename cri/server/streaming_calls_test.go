package server

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/corral-runtime/corral/metadata"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStreamingCalls checks the input of Exec, Attach, PortForward and
// ReopenContainerLog against records in the store, and that the URLs
// point at the streaming server Serve started.
func TestStreamingCalls(t *testing.T) {
	env := newTestEnv(t, testConfig(t))
	st := env.srv.store
	now := time.Now()
	for _, sb := range []metadata.Sandbox{
		{ID: "ready", Name: "ready", Namespace: "ns", UID: "u1", State: metadata.SandboxReady, CreatedAt: now},
		{ID: "gone", Name: "gone", Namespace: "ns", UID: "u2", State: metadata.SandboxNotReady, CreatedAt: now},
	} {
		if err := st.CreateSandbox(sb); err != nil {
			t.Fatal(err)
		}
	}
	withStdin, _ := proto.Marshal(&runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "in"}, Stdin: true})
	for _, c := range []metadata.Container{
		{ID: "running", SandboxID: "ready", Name: "running", State: metadata.ContainerRunning, CreatedAt: now, LogPath: "/x/running.log"},
		{ID: "stdin", SandboxID: "ready", Name: "stdin", State: metadata.ContainerRunning, CreatedAt: now, Config: withStdin},
		{ID: "exited", SandboxID: "ready", Name: "exited", State: metadata.ContainerExited, CreatedAt: now},
	} {
		if err := st.CreateContainer(c); err != nil {
			t.Fatal(err)
		}
	}

	ctx := ctxTimeout(t)
	rt := env.runtime
	check := func(name string, err error, want codes.Code) {
		t.Helper()
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %s", name, err, want)
		}
	}
	_, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "running", Stdout: true})
	check("exec without cmd", err, codes.InvalidArgument)
	_, err = rt.Exec(ctx, &runtimeapi.ExecRequest{Cmd: []string{"sh"}, Stdout: true})
	check("exec without container", err, codes.InvalidArgument)
	_, err = rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "nope", Cmd: []string{"sh"}, Stdout: true})
	check("exec in unknown container", err, codes.NotFound)
	_, err = rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "exited", Cmd: []string{"sh"}, Stdout: true})
	check("exec in exited container", err, codes.FailedPrecondition)
	_, err = rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "running", Cmd: []string{"sh"}, Tty: true, Stderr: true})
	check("exec tty with stderr", err, codes.InvalidArgument)
	_, err = rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "running", Cmd: []string{"sh"}})
	check("exec with no stream", err, codes.InvalidArgument)
	exec, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: "running", Cmd: []string{"sh"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(exec.Url)
	if err != nil || u.Scheme != "http" || !strings.HasPrefix(u.Host, "127.0.0.1:") || strings.HasSuffix(u.Host, ":0") || !strings.HasPrefix(u.Path, "/exec/") {
		t.Errorf("exec URL %q", exec.Url)
	}

	_, err = rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: "running", Stdin: true, Stdout: true})
	check("attach stdin to a container without", err, codes.InvalidArgument)
	_, err = rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: "exited", Stdout: true})
	check("attach to exited container", err, codes.FailedPrecondition)
	if _, err := rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: "stdin", Stdin: true, Stdout: true}); err != nil {
		t.Errorf("attach with stdin: %v", err)
	}

	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{})
	check("port-forward without pod", err, codes.InvalidArgument)
	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "nope"})
	check("port-forward to unknown pod", err, codes.NotFound)
	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "gone"})
	check("port-forward to stopped pod", err, codes.FailedPrecondition)
	_, err = rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "ready", Port: []int32{0}})
	check("port-forward to port 0", err, codes.InvalidArgument)
	if _, err := rt.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: "ready", Port: []int32{80}}); err != nil {
		t.Errorf("port-forward: %v", err)
	}

	_, err = rt.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{})
	check("reopen without container", err, codes.InvalidArgument)
	_, err = rt.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: "exited"})
	check("reopen exited container", err, codes.FailedPrecondition)
	_, err = rt.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: "stdin"})
	check("reopen container without log", err, codes.FailedPrecondition)
}
