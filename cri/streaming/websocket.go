package streaming

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"golang.org/x/net/websocket"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// The channels of the remote command protocol over WebSocket: each binary
// message starts with its channel's number.
const (
	chanStdin = iota
	chanStdout
	chanStderr
	chanError
	chanResize
)

// serveV5 serves an exec or an attach whose client asked for the remote
// command protocol v5 over WebSocket: the channels of v4 (stdout, stderr,
// the final status as JSON on the error channel, terminal sizes as JSON on
// the resize channel), plus the client's half-close of a channel (the byte
// 255, then the channel's number), which is how it says stdin ended. The
// framing and the half-close are k8s.io/streaming's wsstream, which serves
// v5 for the API server already; run is the exec or the attach, and status
// turns its result into the final status.
func (s *Server) serveV5(w http.ResponseWriter, r *http.Request, opts *remotecommand.Options, run func(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, resize <-chan remotecommand.TerminalSize) error, status func(error) streamStatus) {
	channels := []wsstream.ChannelType{
		chanStdin:  ignoreUnless(opts.Stdin, wsstream.ReadChannel),
		chanStdout: ignoreUnless(opts.Stdout, wsstream.WriteChannel),
		chanStderr: ignoreUnless(opts.Stderr, wsstream.WriteChannel),
		chanError:  wsstream.WriteChannel,
		chanResize: ignoreUnless(opts.TTY, wsstream.ReadChannel),
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		remotecommand.StreamProtocolV5Name: {Binary: true, Channels: channels},
	})
	conn.SetIdleTimeout(idleTimeout)
	_, streams, err := conn.Open(w, r)
	if err != nil {
		// The WebSocket server has answered the client already.
		s.log.Warn("streaming: WebSocket upgrade failed", "path", r.URL.Path, "error", err)
		return
	}
	defer conn.Close()

	// An empty message on the first channel the client reads tells it the
	// streams are up, as cri-streaming's WebSocket server does.
	switch {
	case opts.Stdout:
		streams[chanStdout].Write(nil)
	case opts.Stderr:
		streams[chanStderr].Write(nil)
	default:
		streams[chanError].Write(nil)
	}
	// The runtime gets only the streams asked for: nil is "none".
	var in io.Reader
	var out, errOut io.WriteCloser
	if opts.Stdin {
		in = streams[chanStdin]
	}
	if opts.Stdout {
		out = streams[chanStdout]
	}
	if opts.Stderr {
		errOut = streams[chanStderr]
	}
	var resize chan remotecommand.TerminalSize
	if opts.TTY {
		resize = make(chan remotecommand.TerminalSize)
		go readSizes(r.Context(), streams[chanResize], resize)
	}
	res := status(run(r.Context(), in, out, errOut, resize))
	b, err := json.Marshal(res)
	if err == nil {
		_, err = streams[chanError].Write(b)
	}
	if err != nil {
		s.log.Debug("streaming: status not sent", "path", r.URL.Path, "error", err)
	}
}

func ignoreUnless(want bool, t wsstream.ChannelType) wsstream.ChannelType {
	if want {
		return t
	}
	return wsstream.IgnoreChannel
}

// readSizes passes on the terminal sizes the client sends, one JSON object
// each, until its channel or the stream ends.
func readSizes(ctx context.Context, r io.Reader, sizes chan<- remotecommand.TerminalSize) {
	defer close(sizes)
	dec := json.NewDecoder(r)
	for {
		var size remotecommand.TerminalSize
		if err := dec.Decode(&size); err != nil {
			return
		}
		select {
		case sizes <- size:
		case <-ctx.Done():
			return
		}
	}
}

// streamStatus is the final status on the error channel: a Kubernetes
// metav1.Status, the fields clients read (client-go turns a Failure with
// reason NonZeroExitCode into the command's exit code).
type streamStatus struct {
	Status  string         `json:"status,omitempty"`
	Message string         `json:"message,omitempty"`
	Reason  string         `json:"reason,omitempty"`
	Details *statusDetails `json:"details,omitempty"`
	Code    int32          `json:"code,omitempty"`
}

type statusDetails struct {
	Causes []statusCause `json:"causes,omitempty"`
}

type statusCause struct {
	Type    string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

func internalError(err error) streamStatus {
	return streamStatus{Status: "Failure", Reason: "InternalError", Code: http.StatusInternalServerError,
		Message: fmt.Sprintf("Internal error occurred: %v", err)}
}

// execStatus reports an exec's result: a command that exited non-zero is
// a failure carrying its exit code.
func execStatus(err error) streamStatus {
	if err == nil {
		return streamStatus{Status: "Success"}
	}
	if exit, ok := err.(utilexec.ExitError); ok && exit.Exited() {
		return streamStatus{
			Status:  "Failure",
			Reason:  remotecommand.NonZeroExitCodeReason,
			Message: fmt.Sprintf("command terminated with non-zero exit code: %v", exit),
			Details: &statusDetails{Causes: []statusCause{{Type: remotecommand.ExitCodeCauseType, Message: strconv.Itoa(exit.ExitStatus())}}},
		}
	}
	return internalError(fmt.Errorf("error executing command in container: %w", err))
}

func attachStatus(err error) streamStatus {
	if err == nil {
		return streamStatus{Status: "Success"}
	}
	return internalError(fmt.Errorf("error attaching to container: %w", err))
}

// tunnelProtocol is the WebSocket subprotocol of a port-forward whose SPDY
// connection travels inside the WebSocket, one or more binary messages
// carrying its bytes in order (client-go's tunnelling dialer).
const tunnelProtocol = portforward.WebsocketsSPDYTunnelingPortForwardV1

// serveTunnel accepts the WebSocket of a tunnelled port-forward and runs
// serve, the SPDY port-forward server, over it as if on a connection an
// HTTP upgrade to SPDY had handed over. Inside the tunnel there is no such
// upgrade exchange: the client starts with SPDY frames at once, so the
// upgrade's response goes nowhere.
func (s *Server) serveTunnel(w http.ResponseWriter, r *http.Request, serve func(http.ResponseWriter, *http.Request)) {
	ws := websocket.Server{
		Handshake: func(cfg *websocket.Config, _ *http.Request) error {
			for _, p := range cfg.Protocol {
				if p == tunnelProtocol {
					cfg.Protocol = []string{p}
					return nil
				}
			}
			return fmt.Errorf("port-forward over WebSocket: subprotocols %q asked for, %q served", cfg.Protocol, tunnelProtocol)
		},
		Handler: func(c *websocket.Conn) {
			c.PayloadType = websocket.BinaryFrame
			inner := r.Clone(r.Context())
			inner.Header = http.Header{}
			inner.Header.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
			inner.Header.Set(httpstream.HeaderUpgrade, "SPDY/3.1")
			inner.Header.Set(httpstream.HeaderProtocolVersion, portforward.ProtocolV1Name)
			tw := &tunnelWriter{conn: c, header: http.Header{}}
			serve(tw, inner)
			if tw.status >= http.StatusBadRequest {
				s.log.Warn("streaming: port-forward over WebSocket refused", "path", r.URL.Path, "status", tw.status, "reason", tw.refusal)
			}
		},
	}
	ws.ServeHTTP(w, r)
}

// tunnelWriter is the http.ResponseWriter the SPDY server answers its
// upgrade on: the headers and status go nowhere (the WebSocket is already
// up), and Hijack hands over the WebSocket as the connection.
type tunnelWriter struct {
	conn    *websocket.Conn
	header  http.Header
	status  int
	refusal string
}

func (t *tunnelWriter) Header() http.Header { return t.header }

func (t *tunnelWriter) WriteHeader(code int) { t.status = code }

// Write takes the body of a refusal, kept for the log.
func (t *tunnelWriter) Write(b []byte) (int, error) {
	if len(t.refusal) < 512 {
		t.refusal += string(b[:min(len(b), 512-len(t.refusal))])
	}
	return len(b), nil
}

func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return t.conn, bufio.NewReadWriter(bufio.NewReader(t.conn), bufio.NewWriter(t.conn)), nil
}
