package server

import (
	"strings"
	"testing"

	"github.com/corral-runtime/corral/cri/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// rawCodec sends bytes as they are: a Go client's own codec would refuse
// to marshal what these tests send.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return nil }
func (rawCodec) Name() string                                { return "proto" }

func field(num protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

// TestUndecodableRequests: bytes a client sends that do not decode as the
// request are refused with InvalidArgument naming the field, not
// codes.Internal, and the server keeps serving.
func TestUndecodableRequests(t *testing.T) {
	e := newTestEnv(t, config.Default())
	md := field(1, []byte("\xffname"))
	cases := []struct {
		name, method string
		body         []byte
		want         string
	}{
		{"pod name not UTF-8", "RunPodSandbox", field(1, field(1, md)), "config.metadata.name: is not valid UTF-8"},
		{"label value not UTF-8", "RunPodSandbox", field(1, field(6, append(field(1, []byte("k")), field(2, []byte("\xc3"))...))), `config.labels value: is not valid UTF-8`},
		{"container ID not UTF-8", "StartContainer", field(1, []byte("\xfe\xff")), "container_id: is not valid UTF-8"},
		{"truncated field", "StartContainer", append(protowire.AppendTag(nil, 1, protowire.BytesType), 50, 'a'), "does not decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := e.conn.Invoke(ctxTimeout(t), "/runtime.v1.RuntimeService/"+tc.method, tc.body, new([]byte), grpc.ForceCodecV2(rawCodec{}))
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
				t.Errorf("%s: %s %q, want InvalidArgument with %q", tc.method, st.Code(), st.Message(), tc.want)
			}
		})
	}
	if _, err := e.runtime.Version(ctxTimeout(t), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("Version after the bad requests: %v", err)
	}
	n := 0
	e.srv.codec.undecodable.Range(func(any, any) bool { n++; return true })
	if n != 0 {
		t.Errorf("%d undecodable requests still held after they were answered", n)
	}
}

// TestValidationAtTheEdge: a request validation refuses never reaches its
// handler, whatever the call.
func TestValidationAtTheEdge(t *testing.T) {
	e := newTestEnv(t, config.Default())
	_, err := e.runtime.StopContainer(ctxTimeout(t), &runtimeapi.StopContainerRequest{ContainerId: "../../etc", Timeout: 1})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "container_id") {
		t.Errorf("StopContainer with a path for an ID: %v", err)
	}
	_, err = e.runtime.RunPodSandbox(ctxTimeout(t), &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "n", Uid: "u"},
		LogDirectory: "/var/log/pods/../../../etc",
	}})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "log_directory") {
		t.Errorf("RunPodSandbox with .. in log_directory: %v", err)
	}
	if strings.Contains(e.logs.String(), "pod ready") {
		t.Error("the refused pod was made")
	}
}
