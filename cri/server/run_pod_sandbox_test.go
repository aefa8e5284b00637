package server

import (
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
