// Package streaming serves the CRI streaming endpoint: the HTTP server
// behind Exec, Attach and PortForward. A CRI call answers a URL with a
// single-use token (it expires after a minute); the client (the kubelet,
// crictl) then upgrades a request to that URL to a stream protocol and the
// streams go straight to the runtime.
//
// The protocols are Kubernetes' own, from k8s.io/cri-streaming and
// k8s.io/streaming: SPDY (what the kubelet speaks) and the WebSocket
// channel protocols v1 to v4 through cri-streaming's handlers. Two more
// that client-go's WebSocket clients ask for, and that cri-streaming's
// server does not offer, are served here on the same building blocks:
//   - remote command v5 over WebSocket (v5.channel.k8s.io: v4 plus the
//     client's half-close of stdin), for exec and attach; client-go's
//     WebSocket executor asks for it alone (crictl --transport websocket);
//   - SPDY tunnelled in a WebSocket (SPDY/3.1+portforward.k8s.io), for
//     port-forward (crictl port-forward --transport websocket).
//
// This package keeps the tokens itself, binds the configured address, and
// runs the server for as long as corrald serves.
package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/wsstream"
)

const (
	// idleTimeout closes a stream that carried nothing for that long,
	// the kubelet's default.
	idleTimeout = 4 * time.Hour
	// creationTimeout bounds how long a SPDY client takes to open its
	// streams after the upgrade.
	creationTimeout = remotecommand.DefaultStreamCreationTimeout
)

// Runtime runs what the streams are for: exec, attach and port-forward.
// Each call lasts as long as its stream; ctx ends when the client's
// connection does.
type Runtime interface {
	Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, err io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error
	Attach(ctx context.Context, containerID string, in io.Reader, out, err io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error
	PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error
}

// Server is a running streaming server.
type Server struct {
	rt     Runtime
	log    *slog.Logger
	tokens *tokens
	base   url.URL
	http   *http.Server
	l      net.Listener
}

// Listen binds address (host:port; port 0 picks a free one) and prepares
// the server; Serve runs it. log gets what goes wrong with a stream.
func Listen(address string, rt Runtime, log *slog.Logger) (*Server, error) {
	l, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("streaming server ([streaming] address %q): %w", address, err)
	}
	s := &Server{
		rt:     rt,
		log:    log,
		tokens: newTokens(time.Now),
		// The URLs name the port actually bound, not the 0 of the config.
		base: url.URL{Scheme: "http", Host: l.Addr().String()},
		l:    l,
	}
	mux := http.NewServeMux()
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		mux.HandleFunc(m+" /exec/{token}", s.serveExec)
		mux.HandleFunc(m+" /attach/{token}", s.serveAttach)
		mux.HandleFunc(m+" /portforward/{token}", s.servePortForward)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	return s, nil
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

// checkStreams is what an exec or attach must ask for, whatever the
// runtime: a terminal merges stderr into stdout, and a stream with no
// streams has nothing to carry.
func checkStreams(id string, stdin, stdout, stderr, tty bool) error {
	if id == "" {
		return fmt.Errorf("container_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if tty && stderr {
		return fmt.Errorf("tty and stderr cannot both be set: a terminal has one output stream: %w", errdefs.ErrInvalidArgument)
	}
	if !stdin && !stdout && !stderr {
		return fmt.Errorf("none of stdin, stdout and stderr is set: ask for at least one: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// GetExec returns the URL of an exec stream.
func (s *Server) GetExec(r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if err := checkStreams(r.GetContainerId(), r.GetStdin(), r.GetStdout(), r.GetStderr(), r.GetTty()); err != nil {
		return nil, err
	}
	u, err := s.issue("exec", r)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecResponse{Url: u}, nil
}

// GetAttach returns the URL of an attach stream.
func (s *Server) GetAttach(r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if err := checkStreams(r.GetContainerId(), r.GetStdin(), r.GetStdout(), r.GetStderr(), r.GetTty()); err != nil {
		return nil, err
	}
	u, err := s.issue("attach", r)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.AttachResponse{Url: u}, nil
}

// GetPortForward returns the URL of a port-forward stream.
func (s *Server) GetPortForward(r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if r.GetPodSandboxId() == "" {
		return nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	u, err := s.issue("portforward", r)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PortForwardResponse{Url: u}, nil
}

func (s *Server) issue(kind string, r any) (string, error) {
	token, err := s.tokens.insert(r)
	if err != nil {
		return "", err
	}
	return s.base.JoinPath(kind, token).String(), nil
}

// consume takes the request a URL's token stands for; an unknown, used or
// expired token, or one issued for another kind of stream, is not found.
func consume[T any](s *Server, w http.ResponseWriter, r *http.Request) (T, bool) {
	req, ok := s.tokens.consume(r.PathValue("token")).(T)
	if !ok {
		http.NotFound(w, r)
	}
	return req, ok
}

func (s *Server) serveExec(w http.ResponseWriter, r *http.Request) {
	req, ok := consume[*runtimeapi.ExecRequest](s, w, r)
	if !ok {
		return
	}
	w, r, done := s.streamContext(w, r)
	defer done()
	opts := &remotecommand.Options{Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, TTY: req.Tty}
	if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
		s.serveV5(w, r, opts, func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, resize <-chan remotecommand.TerminalSize) error {
			return s.rt.Exec(ctx, req.ContainerId, req.Cmd, in, out, errOut, req.Tty, resize)
		}, execStatus)
		return
	}
	remotecommand.ServeExec(w, r, adapter{s.rt}, "", "", req.ContainerId, req.Cmd, opts,
		idleTimeout, creationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (s *Server) serveAttach(w http.ResponseWriter, r *http.Request) {
	req, ok := consume[*runtimeapi.AttachRequest](s, w, r)
	if !ok {
		return
	}
	w, r, done := s.streamContext(w, r)
	defer done()
	opts := &remotecommand.Options{Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, TTY: req.Tty}
	if wsstream.IsWebSocketRequestWithStreamCloseProtocol(r) {
		s.serveV5(w, r, opts, func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, resize <-chan remotecommand.TerminalSize) error {
			return s.rt.Attach(ctx, req.ContainerId, in, out, errOut, req.Tty, resize)
		}, attachStatus)
		return
	}
	remotecommand.ServeAttach(w, r, adapter{s.rt}, "", "", req.ContainerId, opts,
		idleTimeout, creationTimeout, remotecommand.SupportedStreamingProtocols)
}

func (s *Server) servePortForward(w http.ResponseWriter, r *http.Request) {
	req, ok := consume[*runtimeapi.PortForwardRequest](s, w, r)
	if !ok {
		return
	}
	w, r, done := s.streamContext(w, r)
	defer done()
	if wsstream.IsWebSocketRequestWithTunnelingProtocol(r) {
		s.serveTunnel(w, r, func(w http.ResponseWriter, r *http.Request) {
			portforward.ServePortForward(w, r, adapter{s.rt}, req.PodSandboxId, "", &portforward.V4Options{},
				idleTimeout, creationTimeout, portforward.SupportedProtocols)
		})
		return
	}
	opts, err := portforward.BuildV4Options(req.Port)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, adapter{s.rt}, req.PodSandboxId, "", opts,
		idleTimeout, creationTimeout, portforward.SupportedProtocols)
}

// adapter gives cri-streaming's handlers the Runtime under the names they
// call: the container ID stands in the container name, the pod sandbox ID
// in the pod name.
type adapter struct{ rt Runtime }

func (a adapter) ExecInContainer(ctx context.Context, _, _, container string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	return a.rt.Exec(ctx, container, cmd, in, out, errOut, tty, resize)
}

func (a adapter) AttachContainer(ctx context.Context, _, _, container string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return a.rt.Attach(ctx, container, in, out, errOut, tty, resize)
}

func (a adapter) PortForward(ctx context.Context, pod, _ string, port int32, stream io.ReadWriteCloser) error {
	return a.rt.PortForward(ctx, pod, port, stream)
}
