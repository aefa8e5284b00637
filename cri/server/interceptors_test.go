package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	testMethod       = "/corral.test.Test/Call"
	testStreamMethod = "/corral.test.Test/Stream"
)

// registerTestService adds a service whose calls run fn with the string the
// client sent, through the Server's interceptors like every CRI call: the
// way to make a handler panic or fail on demand.
func registerTestService(s *Server, fn func(ctx context.Context, arg string) error) {
	s.grpc.RegisterService(&grpc.ServiceDesc{
		ServiceName: "corral.test.Test",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Call",
			Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := &wrapperspb.StringValue{}
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(ctx context.Context, req any) (any, error) {
					return &emptypb.Empty{}, fn(ctx, req.(*wrapperspb.StringValue).GetValue())
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: testMethod}, h)
			},
		}},
		Streams: []grpc.StreamDesc{{
			StreamName:    "Stream",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				in := &wrapperspb.StringValue{}
				if err := ss.RecvMsg(in); err != nil {
					return err
				}
				return fn(ss.Context(), in.GetValue())
			},
		}},
	}, struct{}{})
}

// failing answers each argument with a different kind of failure.
func failing(_ context.Context, arg string) error {
	switch arg {
	case "panic":
		panic("boom")
	case "nil map":
		var m map[string]int
		m["x"] = 1
	case "notfound":
		return fmt.Errorf("sandbox %q: %w", "abc", errdefs.ErrNotFound)
	case "invalid":
		return fmt.Errorf("pod name is empty: %w", errdefs.ErrInvalidArgument)
	case "exists":
		return fmt.Errorf("pod default/web: %w", errdefs.ErrAlreadyExists)
	case "precondition":
		return fmt.Errorf("container is running: %w", errdefs.ErrFailedPrecondition)
	case "unavailable":
		return fmt.Errorf("shim gone: %w", errdefs.ErrUnavailable)
	case "deadline":
		return fmt.Errorf("waiting for the shim: %w", context.DeadlineExceeded)
	case "status":
		return status.Error(codes.ResourceExhausted, "already a status")
	case "plain":
		return errors.New("something else")
	}
	return nil
}

func callTest(ctx context.Context, conn grpc.ClientConnInterface, arg string) error {
	return conn.Invoke(ctx, testMethod, wrapperspb.String(arg), &emptypb.Empty{})
}

func TestErrdefsKindsBecomeCodes(t *testing.T) {
	srv, logs := newTestServer(t, testConfig(t))
	registerTestService(srv, failing)
	env := startEnv(t, srv, logs)
	for arg, want := range map[string]struct {
		code codes.Code
		msg  string
	}{
		"ok":           {codes.OK, ""},
		"notfound":     {codes.NotFound, `sandbox "abc": not found`},
		"invalid":      {codes.InvalidArgument, "pod name is empty"},
		"exists":       {codes.AlreadyExists, "pod default/web"},
		"precondition": {codes.FailedPrecondition, "container is running"},
		"unavailable":  {codes.Unavailable, "shim gone"},
		"deadline":     {codes.DeadlineExceeded, "waiting for the shim"},
		"status":       {codes.ResourceExhausted, "already a status"},
		"plain":        {codes.Unknown, "something else"},
	} {
		err := callTest(ctxTimeout(t), env.conn, arg)
		if status.Code(err) != want.code || !strings.Contains(status.Convert(err).Message(), want.msg) {
			t.Errorf("%s: got %v, want %v with %q", arg, err, want.code, want.msg)
		}
	}
}

func TestPanicBecomesInternalAndServingGoesOn(t *testing.T) {
	srv, logs := newTestServer(t, testConfig(t))
	registerTestService(srv, failing)
	env := startEnv(t, srv, logs)
	ctx := ctxTimeout(t)

	for _, arg := range []string{"panic", "nil map"} {
		err := callTest(ctx, env.conn, arg)
		if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "Call: internal error") {
			t.Errorf("unary %s: %v, want Internal naming the call", arg, err)
		}
	}
	stream, err := env.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, testStreamMethod)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(wrapperspb.String("panic")); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	if err := stream.RecvMsg(&emptypb.Empty{}); status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "panic: boom") {
		t.Errorf("stream panic: %v, want Internal", err)
	}

	if _, err := env.runtime.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Errorf("Version after the panics: %v", err)
	}
	log := logs.String()
	for _, want := range []string{"CRI call panicked", "panic=boom", "goroutine ", "interceptors_test.go"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestCallsAreLoggedAtDebug(t *testing.T) {
	env := newTestEnv(t, testConfig(t))
	if _, err := env.runtime.Version(ctxTimeout(t), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	env.runtime.CheckpointContainer(ctxTimeout(t), &runtimeapi.CheckpointContainerRequest{})
	log := env.logs.String()
	for _, want := range []string{
		"level=DEBUG msg=\"CRI call\" method=/runtime.v1.RuntimeService/Version duration=",
		"method=/runtime.v1.RuntimeService/CheckpointContainer duration=",
		"code=Unimplemented",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestToStatus(t *testing.T) {
	if toStatus("/x/Y", nil) != nil {
		t.Error("nil error became an error")
	}
	// Only the generated stub's exact message is reworded: a handler that
	// declines a call on purpose keeps its own words.
	own := status.Error(codes.Unimplemented, "checkpointing needs CRIU, which is not installed")
	if got := toStatus("/runtime.v1.RuntimeService/CheckpointContainer", own); got.Error() != own.Error() {
		t.Errorf("a handler's own Unimplemented message was changed to %v", got)
	}
	full := fmt.Errorf("write pod files: %w", &os.PathError{Op: "write", Path: "/var/lib/corral/x", Err: syscall.ENOSPC})
	if got := status.Convert(toStatus("/runtime.v1.RuntimeService/RunPodSandbox", full)); got.Code() != codes.ResourceExhausted || !strings.Contains(got.Message(), "full") {
		t.Errorf("a full disk became %s %q, want ResourceExhausted saying so", got.Code(), got.Message())
	}
	stub := status.Error(codes.Unimplemented, "method ExecSync not implemented")
	if got := toStatus("/runtime.v1.RuntimeService/ExecSync", stub); status.Convert(got).Message() != "ExecSync: not implemented yet in corrald" {
		t.Errorf("stub message became %v", got)
	}
}
