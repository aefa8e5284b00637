// Package streaming serves the CRI streaming endpoint: the HTTP server
// behind Exec, Attach and PortForward. A CRI call answers a URL with a
// single-use token (it expires after a minute); the client (the kubelet,
// crictl) then upgrades a request to that URL to SPDY or WebSocket and
// the streams go straight to the runtime. The protocol handling, the
// token cache and the URL scheme are Kubernetes' own
// (k8s.io/cri-streaming); this package only binds the configured address
// and runs the server for as long as corrald serves.
package streaming

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	k8s "k8s.io/cri-streaming/pkg/streaming"
)

// Runtime runs what the streams are for: exec, attach and port-forward.
type Runtime = k8s.Runtime

// Server is a running streaming server.
type Server struct {
	k8s  k8s.Server
	http *http.Server
	l    net.Listener
}

// Listen binds address (host:port; port 0 picks a free one) and prepares
// the server; Serve runs it.
func Listen(address string, rt Runtime) (*Server, error) {
	l, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("streaming server ([streaming] address %q): %w", address, err)
	}
	cfg := k8s.DefaultConfig
	cfg.Addr = l.Addr().String()
	// The URLs name the port actually bound, not the 0 of the config.
	cfg.BaseURL = &url.URL{Scheme: "http", Host: l.Addr().String()}
	srv, err := k8s.NewServer(cfg, rt)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	return &Server{
		k8s:  srv,
		http: &http.Server{Handler: srv, ReadHeaderTimeout: 30 * time.Second},
		l:    l,
	}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.l.Addr().String() }

// Serve answers streaming requests until ctx ends, then closes the
// listener and every open stream: a stream does not outlive corrald.
func (s *Server) Serve(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- s.http.Serve(s.l) }()
	select {
	case err := <-served:
		return fmt.Errorf("streaming server: %w", err)
	case <-ctx.Done():
	}
	// Hijacked connections (every stream) are not tracked by Shutdown:
	// Close ends the listener and idle connections; streams end when
	// their runtime calls see ctx or their client go.
	s.http.Close()
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("streaming server: %w", err)
	}
	return nil
}

// GetExec returns the URL of an exec stream.
func (s *Server) GetExec(r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return s.k8s.GetExec(r)
}

// GetAttach returns the URL of an attach stream.
func (s *Server) GetAttach(r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return s.k8s.GetAttach(r)
}

// GetPortForward returns the URL of a port-forward stream.
func (s *Server) GetPortForward(r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return s.k8s.GetPortForward(r)
}
