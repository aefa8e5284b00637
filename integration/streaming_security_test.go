package integration

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// tokenTTL is how long a streaming URL lives: cri/streaming keeps a token
// for a minute, as the kubelet's streaming server does.
const tokenTTL = time.Minute

// TestStreamingServerConfined: the streaming server behind Exec, Attach
// and PortForward listens on loopback only, so exec into a container is not
// one HTTP request away for anything on the network; a streaming URL's
// token serves once, a made-up one never, and an unused one expires; and
// corrald refuses a configuration that would bind it elsewhere.
func TestStreamingServerConfined(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("stream-confined")
	podID := e.runPod(t, pod)
	cid, _ := e.runContainer(t, podID, pod, e.containerConfig("app", "sleep", "1000"))

	exec := func() string {
		t.Helper()
		resp, err := e.rt.Exec(e.ctx(), &runtimeapi.ExecRequest{ContainerId: cid, Cmd: []string{"true"}, Stdout: true})
		if err != nil {
			t.Fatalf("Exec: %v", err)
		}
		return resp.Url
	}
	// Issued first, used last: it must have expired by then.
	unused, issued := exec(), time.Now()

	u, err := url.Parse(unused)
	if err != nil {
		t.Fatal(err)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Fatalf("streaming URL %s is not on a loopback address", unused)
	}
	// Every other address of the node: nothing listens on the port there.
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	tried := 0
	for _, a := range addrs {
		ip, _, _ := net.ParseCIDR(a.String())
		if ip == nil || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		tried++
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), port), 2*time.Second)
		if err == nil {
			c.Close()
			t.Errorf("the streaming server answers on %s, not only on loopback", ip)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("dial %s:%s: %v", ip, port, err)
		}
	}
	t.Logf("streaming server on %s; refused on %d other addresses", u.Host, tried)

	// A token serves once: the first request takes it, whatever it then
	// does with the stream; the second is not found.
	urls := map[string]string{"exec": exec()}
	att, err := e.rt.Attach(e.ctx(), &runtimeapi.AttachRequest{ContainerId: cid, Stdout: true})
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	urls["attach"] = att.Url
	pf, err := e.rt.PortForward(e.ctx(), &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{80}})
	if err != nil {
		t.Fatalf("PortForward: %v", err)
	}
	urls["portforward"] = pf.Url
	for what, link := range urls {
		if !strings.HasPrefix(link, "http://"+u.Host+"/") {
			t.Errorf("%s URL %s is not on the streaming server %s", what, link, u.Host)
		}
		if code := get(t, link); code == http.StatusNotFound {
			t.Errorf("%s: first use of the URL: %d", what, code)
		}
		if code := get(t, link); code != http.StatusNotFound {
			t.Errorf("%s: second use of the URL: %d, want 404", what, code)
		}
	}
	// A token nobody was given.
	forged := u.Scheme + "://" + u.Host + "/exec/" + strings.Repeat("A", 8)
	if code := get(t, forged); code != http.StatusNotFound {
		t.Errorf("made-up token: %d, want 404", code)
	}

	// corrald will not serve streams beyond loopback.
	cfg := filepath.Join(e.dir, "open-streaming.toml")
	if err := os.WriteFile(cfg, []byte("[streaming]\naddress = \"0.0.0.0:0\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(e.dir, "open")
	out, err := runCorraldToExit(t, "--config", cfg, "--root", filepath.Join(other, "root"), "--state", filepath.Join(other, "state"))
	if err == nil || !strings.Contains(out, "streaming.address") || !strings.Contains(out, "loopback") {
		t.Errorf("corrald with [streaming] address 0.0.0.0:0: %v\n%s", err, out)
	}

	if wait := time.Until(issued.Add(tokenTTL + 2*time.Second)); wait > 0 {
		t.Logf("waiting %s for the unused token to expire", wait.Round(time.Second))
		time.Sleep(wait)
	}
	if code := get(t, unused); code != http.StatusNotFound {
		t.Errorf("a URL unused for %s: %d, want 404", tokenTTL, code)
	}
	e.removePod(t, podID)
	e.checkNoLeaks(t)
}

// get requests link without upgrading it to a stream and returns the
// status code.
func get(t *testing.T, link string) int {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(link)
	if err != nil {
		t.Fatalf("GET %s: %v", link, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
