package server

import (
	"context"
	"errors"
	"fmt"
	"path"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// unaryInterceptor wraps every unary CRI call: refuse a request that does
// not decode or validate (cri/validation) before the handler sees it,
// recover, map the error, log.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.recovered(info.FullMethod, r)
		}
		err = toStatus(info.FullMethod, err)
		s.logCall(ctx, info.FullMethod, start, err)
	}()
	if err := s.codec.check(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// streamInterceptor does for streaming calls (GetContainerEvents, the
// Stream* lists) what unaryInterceptor does for the rest.
func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			err = s.recovered(info.FullMethod, r)
		}
		err = toStatus(info.FullMethod, err)
		s.logCall(ss.Context(), info.FullMethod, start, err)
	}()
	return handler(srv, checkedStream{ss, s.codec})
}

// recovered logs a handler's panic with its stack and turns it into the
// error the client gets. grpc-go runs each call on its own goroutine, so a
// panic not caught here would end the daemon and every call in flight.
func (s *Server) recovered(method string, r any) error {
	s.log.Error("CRI call panicked; the daemon keeps serving", "method", method, "panic", r, "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s: internal error in corrald (panic: %v); its log has the stack", path.Base(method), r)
}

func (s *Server) logCall(ctx context.Context, method string, start time.Time, err error) {
	attrs := []any{"method", method, "duration", time.Since(start)}
	if err != nil {
		attrs = append(attrs, "code", status.Code(err), "error", err)
	}
	s.log.DebugContext(ctx, "CRI call", attrs...)
}

// toStatus is the one place a handler's error becomes a gRPC status: errdefs
// kinds map to their codes (NotFound, InvalidArgument, ...), an error that is
// already a status passes through, anything else is codes.Unknown. The
// generated answer of a call not built yet is reworded to name the call.
func toStatus(method string, err error) error {
	if err == nil {
		return nil
	}
	name := path.Base(method)
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.Unimplemented && st.Message() == fmt.Sprintf("method %s not implemented", name) {
			return status.Errorf(codes.Unimplemented, "%s: not implemented yet in corrald", name)
		}
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// A full disk is no mystery: the kubelet and a person can act on
		// it (free space, evict), and it passes.
		return status.Errorf(codes.ResourceExhausted, "%v (the file system is full: free space under corrald's --root or --state)", err)
	}
	err = errgrpc.ToGRPC(err)
	if _, ok := status.FromError(err); !ok {
		return status.Error(codes.Unknown, err.Error())
	}
	return err
}
