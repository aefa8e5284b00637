package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-runtime/corral/cri/config"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRunPodSandboxRefusesBadHandlers checks the handler errors a user sees,
// which come before anything is made for the pod.
func TestRunPodSandboxRefusesBadHandlers(t *testing.T) {
	cfg := testConfig(t)
	cfg.Runtimes["missing"] = config.Runtime{Shim: "/nonexistent/containerd-shim-missing-v2"}
	cfg.Runtimes["gone"] = config.Runtime{Shim: "io.containerd.surelynotinstalled.v2"}
	env := newTestEnv(t, cfg)
	pod := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"}}
	for _, tc := range []struct {
		handler string
		code    codes.Code
		want    []string
	}{
		{"kata", codes.InvalidArgument, []string{`"kata" is not configured`, "gone, missing, runc"}},
		{"missing", codes.FailedPrecondition, []string{`runtime handler "missing"`, "/nonexistent/containerd-shim-missing-v2", "not installed"}},
		{"gone", codes.FailedPrecondition, []string{`runtime handler "gone"`, "io.containerd.surelynotinstalled.v2", "not installed"}},
	} {
		_, err := env.runtime.RunPodSandbox(ctxTimeout(t), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: tc.handler})
		st := status.Convert(err)
		if st.Code() != tc.code {
			t.Errorf("handler %q: %v, want %s", tc.handler, err, tc.code)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(st.Message(), w) {
				t.Errorf("handler %q: message %q lacks %q", tc.handler, st.Message(), w)
			}
		}
	}
	list, err := env.runtime.ListPodSandbox(ctxTimeout(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("pods after refused RunPodSandbox: %v, %v", list, err)
	}
}

// TestRunPodSandboxUsernsNeedsTheFeature: a pod asking for a user
// namespace of its own on a handler whose runtime cannot make one is
// FailedPrecondition naming the handler, before anything is made.
func TestRunPodSandboxUsernsNeedsTheFeature(t *testing.T) {
	dir := t.TempDir()
	runtime := filepath.Join(dir, "nouserns-runtime")
	script := "#!/bin/sh\necho '{\"ociVersionMin\": \"1.0.0\", \"ociVersionMax\": \"1.1.0\", \"linux\": {\"namespaces\": [\"mount\", \"network\", \"pid\"]}}'\n"
	if err := os.WriteFile(runtime, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Runtimes["nouserns"] = config.Runtime{Shim: config.DefaultShim, Runtime: runtime}
	env := newTestEnv(t, cfg)
	ids := []*runtimeapi.IDMapping{{HostId: 100000, ContainerId: 0, Length: 65536}}
	pod := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: ids, Gids: ids}},
		}},
	}
	_, err := env.runtime.RunPodSandbox(ctxTimeout(t), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "nouserns"})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), `runtime handler "nouserns"`) || !strings.Contains(st.Message(), "user namespace") {
		t.Errorf("a user namespace on a handler without them: %v", err)
	}
	list, err := env.runtime.ListPodSandbox(ctxTimeout(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("pods after a refused RunPodSandbox: %v, %v", list, err)
	}
}
