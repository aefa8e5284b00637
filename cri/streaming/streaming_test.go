package streaming

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
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
	s, err := Listen("127.0.0.1:0", nopRuntime{})
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
	_, err = Listen(l.Addr().String(), nopRuntime{})
	if err == nil || !strings.Contains(err.Error(), "[streaming] address") {
		t.Errorf("Listen on a taken port: %v, want an error naming the config key", err)
	}
}
