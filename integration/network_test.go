package integration

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestPodNetworkCNI runs a pod on a bridge network of the test's own
// (Debian's CNI plugins): the pod gets an address in the subnet, the host
// reaches a server in it directly and through a hostPort on 127.0.0.1, and
// stopping the pod releases the address and the port. Traffic stays on the
// test's bridge and loopback.
func TestPodNetworkCNI(t *testing.T) {
	bridge := fmt.Sprintf("crt%06x", rand.IntN(1<<24))
	subnet := fmt.Sprintf("10.199.%d", 100+rand.IntN(100))
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "corral-test-net", "plugins": [
		{"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
		 "ipam": {"type": "host-local", "ranges": [[{"subnet": "%s.0/24"}]]}},
		{"type": "portmap", "capabilities": {"portMappings": true}}]}`, bridge, subnet)
	e := newPodEnvWithCNI(t, conflist)

	st, err := e.rt.Status(e.ctx(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady && !c.Status {
			t.Fatalf("NetworkReady false with a valid config: %s", c.Message)
		}
	}

	hostPort := freePort(t)
	pod := e.podConfig("web")
	pod.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: int32(hostPort), HostIp: "127.0.0.1"}}
	podID := e.runPod(t, pod)
	ps, _ := e.podStatus(t, podID)
	ip := ps.GetNetwork().GetIp()
	if !strings.HasPrefix(ip, subnet+".") {
		t.Fatalf("pod IP %q is not in %s.0/24", ip, subnet)
	}
	e.runContainer(t, podID, pod, e.containerConfig("server", "sh", "-c", "while true; do echo hello-from-pod | nc -l -p 8080; done"))

	for _, addr := range []string{net.JoinHostPort(ip, "8080"), fmt.Sprintf("127.0.0.1:%d", hostPort)} {
		waitUntil(t, 15*time.Second, "a reply from "+addr, func() (bool, string) {
			got, err := dialRead(addr)
			return strings.Contains(got, "hello-from-pod"), fmt.Sprintf("%q %v", got, err)
		})
	}

	e.removePod(t, podID)
	if _, err := dialRead(fmt.Sprintf("127.0.0.1:%d", hostPort)); err == nil {
		t.Error("the hostPort still answers after the pod was removed")
	}
	if out, _ := exec.Command("ip", "-o", "addr").Output(); strings.Contains(string(out), ip+"/") {
		t.Errorf("the pod's address %s is still on the host", ip)
	}
}

func dialRead(addr string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(conn)
	return string(b), err
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestPodNetworkBrokenConfig: a CNI config naming a plugin that is not
// installed makes RunPodSandbox fail with a message naming the file and
// the plugin, leaves no namespace behind, and Status says why the network
// is not ready.
func TestPodNetworkBrokenConfig(t *testing.T) {
	e := newPodEnvWithCNI(t, `{"cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "no-such-plugin"}]}`)
	_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("broken")})
	if err == nil || !strings.Contains(err.Error(), "no-such-plugin") || !strings.Contains(err.Error(), "10-test.conflist") {
		t.Fatalf("RunPodSandbox with a broken CNI config: %v; want an error naming the file and the plugin", err)
	}
	if pods := e.listPods(t, nil); len(pods) != 0 {
		t.Errorf("%d pods left after a failed RunPodSandbox", len(pods))
	}
	if entries, _ := os.ReadDir(filepath.Join(e.state, "netns")); len(entries) != 0 {
		t.Errorf("the failed pod's network namespace was not rolled back: %d left", len(entries))
	}
	st, err := e.rt.Status(e.ctx(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady && (c.Status || !strings.Contains(c.Message, "no-such-plugin")) {
			t.Errorf("NetworkReady %v %q; want false naming the plugin", c.Status, c.Message)
		}
	}
}

// TestPodNetworkRollbackKeepsPodWhenDELFails: when RunPodSandbox fails
// after a plugin reserved an address, and the rollback's CNI DEL fails as
// well, the pod stays listed NotReady (the address is named by a record,
// not leaked), the error says so, and StopPodSandbox and RemovePodSandbox
// free the address once the plugin works again.
func TestPodNetworkRollbackKeepsPodWhenDELFails(t *testing.T) {
	bridge := fmt.Sprintf("crt%06x", rand.IntN(1<<24))
	subnet := fmt.Sprintf("10.199.%d", 100+rand.IntN(100))
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	ipam, marker := t.TempDir(), filepath.Join(t.TempDir(), "fail")
	var portmap string
	for _, d := range []string{"/opt/cni/bin", "/usr/lib/cni"} {
		if _, err := os.Stat(filepath.Join(d, "portmap")); err == nil {
			portmap = filepath.Join(d, "portmap")
			break
		}
	}
	if portmap == "" {
		t.Fatal("no portmap plugin in /opt/cni/bin or /usr/lib/cni (containernetworking-plugins)")
	}
	// portmap passes the previous result on; while the marker exists it
	// fails ADD and DEL alike, after bridge has reserved an address.
	plugin := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"corral test: injected failure\"}'; exit 1; fi\nexec %s \"$@\"\n", marker, portmap)
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "corral-test-flaky", "plugins": [
		{"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
		 "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": "%s.0/24"}]]}},
		{"type": "corral-test-flaky"}]}`, bridge, ipam, subnet)
	e := newPodEnvWithConfig(t, conflist, func(dir string) string {
		// podConfigTOML has made cni-bin, first in bin_dirs.
		if err := os.WriteFile(filepath.Join(dir, "cni-bin", "corral-test-flaky"), []byte(plugin), 0o755); err != nil {
			t.Fatal(err)
		}
		return ""
	})
	reserved := func() []string {
		var ips []string
		entries, _ := os.ReadDir(filepath.Join(ipam, "corral-test-flaky"))
		for _, en := range entries {
			if strings.HasPrefix(en.Name(), subnet+".") {
				ips = append(ips, en.Name())
			}
		}
		return ips
	}

	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("flaky")})
	if err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "stays listed") {
		t.Fatalf("RunPodSandbox with a plugin failing ADD and DEL: %v; want the plugin's error and word that the pod stays listed", err)
	}
	pods := e.listPods(t, nil)
	if len(pods) != 1 || pods[0].State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("after the failed RunPodSandbox: %v; want the pod listed, NotReady", pods)
	}
	if ips := reserved(); len(ips) != 1 {
		t.Fatalf("host-local reservations %v; want the one address bridge took", ips)
	}

	os.Remove(marker)
	id := pods[0].Id
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("StopPodSandbox once the plugin works: %v", err)
	}
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	if ips := reserved(); len(ips) != 0 {
		t.Errorf("addresses %v still reserved after the pod was removed", ips)
	}
	if pods := e.listPods(t, nil); len(pods) != 0 {
		t.Errorf("%d pods listed after RemovePodSandbox", len(pods))
	}
}
