package streaming

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/net/websocket"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/streaming/pkg/httpstream/spdy"
	utilexec "k8s.io/utils/exec"
)

type nopRuntime struct{}

func (nopRuntime) Exec(context.Context, string, []string, io.Reader, io.WriteCloser, io.WriteCloser, bool, <-chan remotecommand.TerminalSize) error {
	return nil
}

func (nopRuntime) Attach(context.Context, string, io.Reader, io.WriteCloser, io.WriteCloser, bool, <-chan remotecommand.TerminalSize) error {
	return nil
}

func (nopRuntime) PortForward(context.Context, string, int32, io.ReadWriteCloser) error { return nil }

func TestServer(t *testing.T) {
	s, err := Listen("127.0.0.1:0", nopRuntime{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(s.Addr())
	if port == "0" || port == "" {
		t.Fatalf("Addr %q names no bound port", s.Addr())
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()

	resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"true"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(resp.Url)
	if err != nil || u.Host != s.Addr() || !strings.HasPrefix(u.Path, "/exec/") {
		t.Fatalf("exec URL %q (%v): want http://%s/exec/TOKEN", resp.Url, err, s.Addr())
	}
	if _, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c"}); err == nil {
		t.Error("attach with no stream accepted")
	}
	if _, err := s.GetPortForward(&runtimeapi.PortForwardRequest{}); err == nil {
		t.Error("port-forward without a pod accepted")
	}
	// A plain GET is no stream upgrade: refused, and the server goes on.
	c := http.Client{Timeout: 5 * time.Second}
	if r, err := c.Get(resp.Url); err != nil {
		t.Fatal(err)
	} else if r.Body.Close(); r.StatusCode < 400 {
		t.Errorf("plain GET of an exec URL: %s", r.Status)
	}
	if r, err := c.Get("http://" + s.Addr() + "/exec/no-such-token"); err != nil {
		t.Fatal(err)
	} else if r.Body.Close(); r.StatusCode != http.StatusNotFound {
		t.Errorf("unknown token: %s, want 404", r.Status)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("still listening after Serve returned")
	}
}

func TestListenError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Listen(l.Addr().String(), nopRuntime{}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "[streaming] address") {
		t.Errorf("Listen on a taken port: %v, want an error naming the config key", err)
	}
}

// echoRuntime copies stdin to stdout in upper case, says "err" on stderr,
// records terminal sizes, and exits with the code named by an exec's
// second word; its port-forward echoes the stream.
type echoRuntime struct {
	sizes chan remotecommand.TerminalSize
	ended chan error // each exec's or attach's ctx error when it returns
}

func newEchoRuntime() *echoRuntime {
	return &echoRuntime{sizes: make(chan remotecommand.TerminalSize, 10), ended: make(chan error, 10)}
}

func (e *echoRuntime) run(ctx context.Context, in io.Reader, out, errOut io.WriteCloser, resize <-chan remotecommand.TerminalSize) {
	if resize != nil {
		go func() {
			for s := range resize {
				e.sizes <- s
			}
		}()
	}
	if errOut != nil {
		io.WriteString(errOut, "err")
	}
	if in != nil && out != nil {
		b, _ := io.ReadAll(in)
		out.Write(bytes.ToUpper(b))
	} else if in != nil {
		io.Copy(io.Discard, in)
	}
}

func (e *echoRuntime) Exec(ctx context.Context, _ string, cmd []string, in io.Reader, out, errOut io.WriteCloser, _ bool, resize <-chan remotecommand.TerminalSize) error {
	e.run(ctx, in, out, errOut, resize)
	if cmd[0] == "wait" {
		<-ctx.Done()
	}
	e.ended <- ctx.Err()
	if len(cmd) > 1 && cmd[1] != "0" {
		code, _ := strconv.Atoi(cmd[1])
		return utilexec.CodeExitError{Err: errors.New("exited"), Code: code}
	}
	if cmd[0] == "broken" {
		return errors.New("the runtime broke")
	}
	return nil
}

func (e *echoRuntime) Attach(ctx context.Context, _ string, in io.Reader, out, errOut io.WriteCloser, _ bool, resize <-chan remotecommand.TerminalSize) error {
	e.run(ctx, in, out, errOut, resize)
	e.ended <- ctx.Err()
	return nil
}

func (e *echoRuntime) PortForward(_ context.Context, _ string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	b, _ := io.ReadAll(stream)
	fmt.Fprintf(stream, "%d:%s", port, b)
	return nil
}

func serve(t *testing.T, rt Runtime) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", rt, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func dialWS(t *testing.T, httpURL string, protocols ...string) (*websocket.Conn, error) {
	t.Helper()
	cfg, err := websocket.NewConfig("ws"+strings.TrimPrefix(httpURL, "http"), "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Protocol = protocols
	c, err := websocket.DialConfig(cfg)
	if err == nil {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// readChannels reads messages until the server closes the connection and
// returns what each channel carried.
func readChannels(t *testing.T, c *websocket.Conn) map[byte]string {
	t.Helper()
	got := map[byte]string{}
	for {
		var msg []byte
		if err := websocket.Message.Receive(c, &msg); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("read: %v", err)
			}
			return got
		}
		if len(msg) > 0 {
			got[msg[0]] += string(msg[1:])
		}
	}
}

// TestV5 drives exec and attach with the remote command protocol v5 over
// WebSocket, as client-go's WebSocket executor does: stdin ends with the
// client's half-close, the status is JSON on channel 3, terminal sizes go
// in on channel 4.
func TestV5(t *testing.T) {
	rt := newEchoRuntime()
	s := serve(t, rt)
	send := func(c *websocket.Conn, msg ...byte) {
		t.Helper()
		if err := websocket.Message.Send(c, msg); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name       string
		cmd        []string
		attach     bool
		tty        bool
		wantStatus string
		wantErr    string
	}{
		{name: "exec", cmd: []string{"echo", "0"}, wantStatus: `{"status":"Success"}`, wantErr: "err"},
		{name: "exit code", cmd: []string{"echo", "7"}, wantStatus: `"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}`, wantErr: "err"},
		{name: "runtime error", cmd: []string{"broken"}, wantStatus: `"reason":"InternalError"`, wantErr: "err"},
		{name: "terminal", cmd: []string{"echo", "0"}, tty: true, wantStatus: `{"status":"Success"}`},
		{name: "attach", attach: true, wantStatus: `{"status":"Success"}`, wantErr: "err"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var link string
			if tc.attach {
				resp, err := s.GetAttach(&runtimeapi.AttachRequest{ContainerId: "c", Stdin: true, Stdout: true, Stderr: true})
				if err != nil {
					t.Fatal(err)
				}
				link = resp.Url
			} else {
				resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: tc.cmd, Stdin: true, Stdout: true, Stderr: !tc.tty, Tty: tc.tty})
				if err != nil {
					t.Fatal(err)
				}
				link = resp.Url
			}
			c, err := dialWS(t, link, "v5.channel.k8s.io")
			if err != nil {
				t.Fatal(err)
			}
			if p := c.Config().Protocol; len(p) != 1 || p[0] != "v5.channel.k8s.io" {
				t.Errorf("negotiated %q", p)
			}
			if tc.tty {
				send(c, append([]byte{4}, `{"Width":120,"Height":40}`...)...)
				select {
				case size := <-rt.sizes:
					if size.Width != 120 || size.Height != 40 {
						t.Errorf("size %+v", size)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("no terminal size reached the runtime")
				}
			}
			send(c, append([]byte{0}, "hello "...)...)
			send(c, append([]byte{0}, "there"...)...)
			send(c, 255, 0) // stdin ends: without it the echo never would
			got := readChannels(t, c)
			if got[1] != "HELLO THERE" || got[2] != tc.wantErr || !strings.Contains(got[3], tc.wantStatus) {
				t.Errorf("stdout %q stderr %q status %q; want %q, %q, %s", got[1], got[2], got[3], "HELLO THERE", tc.wantErr, tc.wantStatus)
			}
			<-rt.ended
		})
	}

	// The client going away ends the call's context.
	resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"wait"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialWS(t, resp.Url, "v5.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	websocket.Message.Receive(c, &first) // the streams are up
	c.Close()
	select {
	case err := <-rt.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("exec ended with ctx error %v, want canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the exec of a client gone did not end")
	}

	// v4 is still cri-streaming's, and a URL serves once whatever asked.
	resp, err = s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"echo", "0"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err = dialWS(t, resp.Url, "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	if got := readChannels(t, c); !strings.Contains(got[3], `"status":"Success"`) {
		t.Errorf("v4 exec status %q", got[3])
	}
	<-rt.ended
	if _, err := dialWS(t, resp.Url, "v5.channel.k8s.io"); err == nil {
		t.Error("a used URL served again over v5")
	}
	// A protocol nobody serves is refused before the token is of use.
	resp, err = s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"echo"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialWS(t, resp.Url, "v9.channel.k8s.io"); err == nil {
		t.Error("an unknown subprotocol was accepted")
	}
}

// TestTunnel drives a port-forward the way client-go's tunnelling dialer
// does: a WebSocket with the subprotocol SPDY/3.1+portforward.k8s.io whose
// binary messages carry a SPDY client connection, one stream pair (error,
// data) per forwarded connection.
func TestTunnel(t *testing.T) {
	s := serve(t, newEchoRuntime())
	resp, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "pod"})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := dialWS(t, resp.Url, "SPDY/3.1+portforward.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	ws.PayloadType = websocket.BinaryFrame
	conn, err := spdy.NewClientConnection(ws)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, port := range []string{"80", "8080"} {
		h := http.Header{}
		h.Set("port", port)
		h.Set("requestID", strconv.Itoa(i))
		h.Set("streamType", "error")
		errStream, err := conn.CreateStream(h)
		if err != nil {
			t.Fatal(err)
		}
		errStream.Close() // the client only reads it
		h.Set("streamType", "data")
		data, err := conn.CreateStream(h)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(data, "ping-"+port)
		data.Close()
		got, _ := io.ReadAll(data)
		if want := port + ":ping-" + port; string(got) != want {
			t.Errorf("port %s: %q, want %q", port, got, want)
		}
		if msg, _ := io.ReadAll(errStream); len(msg) > 0 {
			t.Errorf("port %s: error stream %q", port, msg)
		}
	}
}

func TestTokens(t *testing.T) {
	now := time.Unix(1000, 0)
	tk := newTokens(func() time.Time { return now })
	a, err := tk.insert("a")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tk.insert("b")
	if a == b || len(a) < 32 {
		t.Errorf("tokens %q and %q: want distinct, of 32 characters at least", a, b)
	}
	if got := tk.consume(a); got != "a" {
		t.Errorf("consume = %v", got)
	}
	if got := tk.consume(a); got != nil {
		t.Errorf("second consume = %v, want nothing", got)
	}
	if got := tk.consume("made-up"); got != nil {
		t.Errorf("made-up token = %v", got)
	}
	now = now.Add(tokenTTL + time.Second)
	if got := tk.consume(b); got != nil {
		t.Errorf("expired token = %v", got)
	}
	// Unused tokens are bounded; expired ones make room.
	for range maxTokens {
		if _, err := tk.insert("x"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tk.insert("x"); !errdefs.IsResourceExhausted(err) {
		t.Errorf("insert beyond %d: %v, want ResourceExhausted", maxTokens, err)
	}
	now = now.Add(tokenTTL + time.Second)
	if _, err := tk.insert("x"); err != nil {
		t.Errorf("insert once the others expired: %v", err)
	}
}

// TestWrongKind: a token serves only the kind of stream it was issued for.
func TestWrongKind(t *testing.T) {
	s := serve(t, newEchoRuntime())
	resp, err := s.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: "pod"})
	if err != nil {
		t.Fatal(err)
	}
	link := strings.Replace(resp.Url, "/portforward/", "/exec/", 1)
	r, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNotFound {
		t.Errorf("a port-forward token on /exec/: %s", r.Status)
	}
}
