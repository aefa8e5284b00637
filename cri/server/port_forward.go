package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/netns"
	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// portForwardDialTimeout bounds the connection to the pod's port.
const portForwardDialTimeout = 10 * time.Second

// PortForward checks the pod and answers the streaming URL of a
// port-forward into it (streamRuntime.PortForward).
func (s *Server) PortForward(ctx context.Context, r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if r.GetPodSandboxId() == "" {
		return nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	for _, p := range r.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("port %d is not a TCP port (1-65535): %w", p, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := s.readySandbox(r.GetPodSandboxId()); err != nil {
		return nil, err
	}
	st, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	return st.GetPortForward(r)
}

func (s *Server) readySandbox(id string) (metadata.Sandbox, error) {
	sb, err := s.store.GetSandbox(id)
	if err != nil {
		return sb, err
	}
	if sb.State != metadata.SandboxReady {
		return sb, fmt.Errorf("pod sandbox %s is not ready: %w", id, errdefs.ErrFailedPrecondition)
	}
	return sb, nil
}

// PortForward connects the stream to port on the pod's loopback: inside
// the pod's network namespace, or the host's for a hostNetwork pod. It
// ends when the pod's side closes, or when the client's side closes and
// the pod's has answered.
func (rt streamRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	sb, err := rt.s.readySandbox(podID)
	if err != nil {
		return err
	}
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port %d is not a TCP port: %w", port, errdefs.ErrInvalidArgument)
	}
	conn, err := dialPod(ctx, sb.NetNSPath, int(port))
	if err != nil {
		return fmt.Errorf("port-forward to pod %s port %d: %w", podID, port, err)
	}
	defer conn.Close()

	fromPod := make(chan error, 1)
	go func() {
		_, err := io.Copy(stream, conn)
		fromPod <- err
	}()
	toPod := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stream)
		// The client is done sending: tell the pod, keep reading its answer.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		toPod <- err
	}()
	select {
	case err = <-fromPod:
	case <-ctx.Done():
		return ctx.Err()
	}
	return err
}

// dialPod connects to 127.0.0.1:port in the network namespace at nsPath,
// or on the host when nsPath is empty (hostNetwork). The socket is made
// inside the namespace and stays there after the thread leaves it.
func dialPod(ctx context.Context, nsPath string, port int) (net.Conn, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	d := net.Dialer{Timeout: portForwardDialTimeout}
	if nsPath == "" {
		return d.DialContext(ctx, "tcp", addr)
	}
	var conn net.Conn
	err := netns.Do(nsPath, func() error {
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}
