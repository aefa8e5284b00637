package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Issue 7's streaming acceptance: exec, attach and port-forward through
// corrald's streaming server, driven by crictl as a user runs it (SPDY,
// what the kubelet proxies) and over WebSocket (crictl --transport
// websocket: remote command v5, and SPDY tunnelled in a WebSocket for
// port-forward, what kubectl speaks to an API server), and by a WebSocket
// client of the channel protocol v4.

// transports are crictl's stream transports: SPDY, and WebSocket (remote
// command v5 for exec and attach, SPDY tunnelled in a WebSocket for
// port-forward).
var transports = []string{"spdy", "websocket"}

// crictlIn runs crictl with stdin and returns stdout, stderr (without
// crictl's own warnings) and its exit code.
func (e *podEnv) crictlIn(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ep := "unix://" + e.d.socket
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, crictlBinary(t), append([]string{"--runtime-endpoint", ep, "--timeout", "30s"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("crictl %v still running after a minute\nstdout %q\nstderr %q", args, out.String(), errOut.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("crictl %v: %v", args, err)
	}
	return out.String(), dropCrictlWarnings(errOut.String()), code
}

// crictlTTY runs a crictl command line in a pseudo-terminal made by
// script(1), with stdin typed into it, and returns what the terminal
// showed.
func (e *podEnv) crictlTTY(t *testing.T, stdin, setup string, args ...string) string {
	t.Helper()
	ep := "unix://" + e.d.socket
	line := []string{crictlBinary(t), "--runtime-endpoint", ep, "--timeout", "30s"}
	for _, a := range args {
		line = append(line, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-qefc", setup+strings.Join(line, " "), "/dev/null")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("crictl %v in a terminal still running after a minute:\n%s", args, out)
	}
	if err != nil {
		t.Fatalf("crictl %v in a terminal: %v\n%s", args, err, out)
	}
	return strings.ReplaceAll(string(out), "\r\n", "\n")
}

func TestStreamingExec(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("exec-stream")
	podID := e.runPod(t, pod)
	cid, _ := e.runContainer(t, podID, pod, e.containerConfig("app", "sleep", "1000"))

	// crictl over both transports: SPDY (what the kubelet speaks) and
	// WebSocket (remote command v5, what kubectl speaks to an API server).
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			exec := []string{"exec", "--transport", tr}
			out, errOut, code := e.crictlIn(t, "hello\n", append(exec, "-i", cid,
				"sh", "-c", `read x; echo "got $x"; echo oops >&2; exit 3`)...)
			if out != "got hello\n" || !strings.HasPrefix(errOut, "oops\n") || !strings.Contains(errOut, "exit code 3") || code == 0 {
				t.Errorf("exec -i: stdout %q stderr %q exit %d; want %q, %q and exit code 3", out, errOut, code, "got hello\n", "oops\n")
			}
			// Input to its end: cat sees EOF when the client's stdin ends.
			out, _, code = e.crictlIn(t, "a\nb\n", append(exec, "-i", cid, "cat")...)
			if out != "a\nb\n" || code != 0 {
				t.Errorf("exec -i cat: %q exit %d", out, code)
			}
			out, _, code = e.crictlIn(t, "", append(exec, cid, "echo", "plain")...)
			if out != "plain\n" || code != 0 {
				t.Errorf("exec echo: %q exit %d", out, code)
			}

			// A terminal: the command sees a tty of the client's size, and
			// what is typed.
			shown := e.crictlTTY(t, "typed\n", "stty rows 45 cols 123; ", append(exec, "-it", cid, "sh", "-c",
				`tty; i=0; until s=$(stty size) && [ -n "$s" ] && [ "$s" != "0 0" ] || [ $i -gt 100 ]; do sleep 0.05; i=$((i+1)); done; echo "size $s"; read x; echo "got $x"`)...)
			for _, want := range []string{"/dev/pts/", "size 45 123\n", "got typed\n"} {
				if !strings.Contains(shown, want) {
					t.Errorf("exec -it showed %q, which lacks %q", shown, want)
				}
			}
		})
	}

	// WebSocket: stdin, both outputs, the exit code in the status.
	resp, err := e.rt.Exec(e.ctx(), &runtimeapi.ExecRequest{ContainerId: cid, Stdin: true, Stdout: true, Stderr: true,
		Cmd: []string{"sh", "-c", `read x; echo "got $x"; echo oops >&2; exit 3`}})
	if err != nil {
		t.Fatal(err)
	}
	ws := dialChannels(t, resp.Url, "v4.channel.k8s.io")
	ws.send(t, 0, "over websocket\n")
	got := ws.readAll(t)
	if got[1] != "got over websocket\n" || got[2] != "oops\n" || !strings.Contains(got[3], `"ExitCode","message":"3"`) {
		t.Errorf("websocket exec: stdout %q stderr %q status %q", got[1], got[2], got[3])
	}
	// A URL serves once.
	if c, err := wsDial(resp.Url, "v4.channel.k8s.io"); err == nil {
		c.Close()
		t.Error("a used exec URL served again")
	}

	// A command that does not exist, and a container that does not run.
	_, errOut, code := e.crictlIn(t, "", "exec", cid, "no-such-command")
	if code == 0 || !strings.Contains(errOut, "no-such-command") {
		t.Errorf("exec of a missing command: exit %d, stderr %q", code, errOut)
	}
	if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: cid, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = e.rt.Exec(e.ctx(), &runtimeapi.ExecRequest{ContainerId: cid, Cmd: []string{"true"}, Stdout: true})
	if code, msg := grpcCode(err); code.String() != "FailedPrecondition" {
		t.Errorf("Exec in a stopped container: %v (%s), want FailedPrecondition", code, msg)
	}
	e.removePod(t, podID)
}

// TestStreamingClientGone: a client that goes away mid-exec (killed, its
// connection dropped) takes its command with it, whichever transport it
// used: nothing is left running in the container for nobody.
func TestStreamingClientGone(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("exec-gone")
	podID := e.runPod(t, pod)
	cid, _ := e.runContainer(t, podID, pod, e.containerConfig("app", "sleep", "1000"))
	for i, tr := range transports {
		// A distinct argument finds the command among the host's processes.
		arg := strconv.Itoa(7300 + i)
		ep := "unix://" + e.d.socket
		cmd := exec.Command(crictlBinary(t), "--runtime-endpoint", ep, "exec", "--transport", tr, cid, "sh", "-c", "echo started; exec sleep "+arg)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, "the exec over "+tr+" runs sleep "+arg, func() (bool, string) {
			return strings.Contains(out.String(), "started") && len(hostProcesses(t, "sleep", arg)) == 1, out.String()
		})
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		waitUntil(t, 30*time.Second, "the command of a client gone over "+tr+" ends", func() (bool, string) {
			pids := hostProcesses(t, "sleep", arg)
			return len(pids) == 0, fmt.Sprintf("sleep %s still runs as %v", arg, pids)
		})
	}
	e.removePod(t, podID)
}

// hostProcesses returns the pids whose command line is exactly args.
func hostProcesses(t *testing.T, args ...string) []int {
	t.Helper()
	want := strings.Join(args, "\x00") + "\x00"
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline"); err == nil && string(b) == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestStreamingAttach(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("attach")
	podID := e.runPod(t, pod)
	for _, tr := range transports {
		cfg := e.containerConfig("echo-"+tr, "sh", "-c", `while read line; do echo "echo: $line"; echo "err: $line" >&2; done; echo bye`)
		cfg.Stdin, cfg.StdinOnce = true, true
		cid, _ := e.runContainer(t, podID, pod, cfg)
		out, errOut, code := e.crictlIn(t, "hello\nworld\n", "attach", "--transport", tr, "-i", cid)
		if code != 0 || out != "echo: hello\necho: world\nbye\n" || errOut != "err: hello\nerr: world\n" {
			t.Errorf("attach over %s: exit %d stdout %q stderr %q", tr, code, out, errOut)
		}
		// The log has every line too: attach takes none away.
		st := e.waitContainer(t, cid, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
		texts := map[string]string{}
		for _, r := range readCRILog(t, st.LogPath) {
			texts[r.stream] += r.text + "|"
		}
		if texts["stdout"] != "echo: hello|echo: world|bye|" || texts["stderr"] != "err: hello|err: world|" {
			t.Errorf("log after attach over %s: stdout %q stderr %q", tr, texts["stdout"], texts["stderr"])
		}
	}

	// WebSocket, twice to one container: stdin stays open between attaches.
	cfg := e.containerConfig("echo-ws", "sh", "-c", `while read line; do echo "echo: $line"; done`)
	cfg.Stdin = true
	wid, _ := e.runContainer(t, podID, pod, cfg)
	for _, word := range []string{"first", "second"} {
		resp, err := e.rt.Attach(e.ctx(), &runtimeapi.AttachRequest{ContainerId: wid, Stdin: true, Stdout: true})
		if err != nil {
			t.Fatal(err)
		}
		ws := dialChannels(t, resp.Url, "v4.channel.k8s.io")
		ws.send(t, 0, word+"\n")
		if got := ws.readUntil(t, 1, "echo: "+word+"\n"); got != "echo: "+word+"\n" {
			t.Errorf("websocket attach %s: %q", word, got)
		}
		ws.Close()
	}

	// A TTY container: the attach gets the terminal's output, and input
	// reaches the process.
	for _, tr := range transports {
		cfg = e.containerConfig("tty-"+tr, "sh", "-c", `read x; echo "got $x"`)
		cfg.Stdin, cfg.StdinOnce, cfg.Tty = true, true, true
		cid, _ := e.runContainer(t, podID, pod, cfg)
		shown := e.crictlTTY(t, "typed\n", "", "attach", "--transport", tr, "-it", cid)
		if !strings.Contains(shown, "got typed") {
			t.Errorf("attach -it over %s showed %q", tr, shown)
		}
	}

	// Attach with stdin to a container made without: InvalidArgument.
	plain, _ := e.runContainer(t, podID, pod, e.containerConfig("plain", "sleep", "1000"))
	_, err := e.rt.Attach(e.ctx(), &runtimeapi.AttachRequest{ContainerId: plain, Stdin: true, Stdout: true})
	if code, msg := grpcCode(err); code.String() != "InvalidArgument" {
		t.Errorf("Attach with stdin to a container without: %v (%s)", code, msg)
	}
	e.removePod(t, podID)
}

// portForward runs crictl port-forward to pod's port on a free local port
// and returns that port once it accepts connections.
func (e *podEnv) portForward(t *testing.T, transport, podID string, port int) int {
	t.Helper()
	local := freePort(t)
	ep := "unix://" + e.d.socket
	cmd := exec.Command(crictlBinary(t), "--runtime-endpoint", ep, "port-forward", "--transport", transport, podID, fmt.Sprintf("%d:%d", local, port))
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	waitUntil(t, 30*time.Second, "crictl port-forward listens", func() (bool, string) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(local)), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, out.String()
	})
	return local
}

// httpGet fetches http://127.0.0.1:port/ and returns the body.
func httpGet(t *testing.T, port int) string {
	t.Helper()
	c := http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatalf("GET through the forward: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestStreamingPortForward(t *testing.T) {
	e := newPodEnv(t)
	httpd := func(port int, page string) []string {
		return []string{"sh", "-c", fmt.Sprintf(`mkdir -p /www && echo %s > /www/index.html && exec httpd -f -p 127.0.0.1:%d -h /www`, page, port)}
	}

	pod := e.podConfig("pf")
	podID := e.runPod(t, pod)
	e.runContainer(t, podID, pod, e.containerConfig("httpd", httpd(8080, "hello-from-the-pod")...))
	for _, tr := range transports {
		local := e.portForward(t, tr, podID, 8080)
		// Several requests, each its own stream.
		for range 3 {
			if got := httpGet(t, local); got != "hello-from-the-pod\n" {
				t.Errorf("page over %s: %q", tr, got)
			}
		}
	}
	// WebSocket: channel 0 carries the data, 1 the errors; each starts
	// with the port number.
	resp, err := e.rt.PortForward(e.ctx(), &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{8080}})
	if err != nil {
		t.Fatal(err)
	}
	ws := dialChannels(t, resp.Url+"?port=8080", "v4.channel.k8s.io")
	ws.send(t, 0, "GET / HTTP/1.0\r\n\r\n")
	if got := ws.readUntil(t, 0, "hello-from-the-pod\n"); !strings.HasSuffix(got, "hello-from-the-pod\n") {
		t.Errorf("websocket port-forward read %q", got)
	}
	ws.Close()

	// hostNetwork: the pod's loopback is the host's.
	hostPort := freePort(t)
	hpod := e.podConfig("pf-host")
	hpod.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	hpodID := e.runPod(t, hpod)
	hcfg := e.containerConfig("httpd", httpd(hostPort, "hello-from-the-host-network")...)
	hcfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	e.runContainer(t, hpodID, hpod, hcfg)
	local := e.portForward(t, "spdy", hpodID, hostPort)
	if got := httpGet(t, local); got != "hello-from-the-host-network\n" {
		t.Errorf("hostNetwork page %q", got)
	}

	for _, tc := range []struct {
		name string
		req  *runtimeapi.PortForwardRequest
		code string
	}{
		{"no pod", &runtimeapi.PortForwardRequest{}, "InvalidArgument"},
		{"unknown pod", &runtimeapi.PortForwardRequest{PodSandboxId: strings.Repeat("0", 64)}, "NotFound"},
		{"bad port", &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{70000}}, "InvalidArgument"},
	} {
		_, err := e.rt.PortForward(e.ctx(), tc.req)
		if code, msg := grpcCode(err); code.String() != tc.code {
			t.Errorf("%s: %v (%s), want %s", tc.name, code, msg, tc.code)
		}
	}
	e.removePod(t, hpodID)
	e.removePod(t, podID)
}

// TestExecSyncConcurrent: 50 ExecSync calls at once on one container each
// get their own output and exit code.
func TestExecSyncConcurrent(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("exec50")
	podID := e.runPod(t, pod)
	cid, _ := e.runContainer(t, podID, pod, e.containerConfig("app", "sleep", "1000"))
	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid,
				Cmd: []string{"sh", "-c", fmt.Sprintf("echo out-%d; echo err-%d >&2; exit %d", i, i, i%7)}})
			switch {
			case err != nil:
				errs <- fmt.Sprintf("exec %d: %v", i, err)
			case string(resp.Stdout) != fmt.Sprintf("out-%d\n", i) || string(resp.Stderr) != fmt.Sprintf("err-%d\n", i) || resp.ExitCode != int32(i%7):
				errs <- fmt.Sprintf("exec %d: stdout %q stderr %q exit %d", i, resp.Stdout, resp.Stderr, resp.ExitCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	e.removePod(t, podID)
}

// channelConn is a client of Kubernetes' WebSocket channel protocol: each
// message is a channel number byte and that channel's data.
type channelConn struct{ *websocket.Conn }

func wsDial(httpURL, protocol string) (*websocket.Conn, error) {
	cfg, err := websocket.NewConfig("ws"+strings.TrimPrefix(httpURL, "http"), "http://localhost/")
	if err != nil {
		return nil, err
	}
	cfg.Protocol = []string{protocol}
	return websocket.DialConfig(cfg)
}

func dialChannels(t *testing.T, httpURL, protocol string) channelConn {
	t.Helper()
	c, err := wsDial(httpURL, protocol)
	if err != nil {
		t.Fatalf("websocket %s: %v", httpURL, err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return channelConn{c}
}

func (c channelConn) send(t *testing.T, ch byte, data string) {
	t.Helper()
	if err := websocket.Message.Send(c.Conn, append([]byte{ch}, data...)); err != nil {
		t.Fatalf("websocket send: %v", err)
	}
}

// readAll reads every channel until the server closes the connection.
func (c channelConn) readAll(t *testing.T) map[byte]string {
	t.Helper()
	got := map[byte]string{}
	for {
		var msg []byte
		if err := websocket.Message.Receive(c.Conn, &msg); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("websocket read: %v", err)
			}
			return got
		}
		if len(msg) > 0 {
			got[msg[0]] += string(msg[1:])
		}
	}
}

// readUntil reads until channel ch has carried want (or the connection
// ends), and returns what ch carried past its first message when that is
// the port-forward's port number.
func (c channelConn) readUntil(t *testing.T, ch byte, want string) string {
	t.Helper()
	var got string
	for !strings.Contains(got, want) {
		var msg []byte
		if err := websocket.Message.Receive(c.Conn, &msg); err != nil {
			t.Errorf("websocket read: %v (channel %d so far %q)", err, ch, got)
			return got
		}
		if len(msg) > 0 && msg[0] == ch {
			got += string(msg[1:])
		}
	}
	return got
}
