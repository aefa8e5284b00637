package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/corral-runtime/corral/integration/testregistry"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// env is one corrald under test with everything it talks to: a registry
// behind a proxy that can cut downloads, a CNI network whose bridge plugin
// can be made to fail or hang, and a --root on a small tmpfs that can be
// filled. All of it lives under dir and is named after the run, so the
// checks can tell its leftovers from other tests' on the same node.
type env struct {
	t         *testing.T
	dir       string
	root      string // a tmpfs of rootSize
	state     string
	cniBin    string
	ipam      string // host-local's data dir
	network   string // the CNI network's name
	bridge    string
	config    string
	faultFile string // the CNI wrapper's instructions
	fillFile  string // fills root when the disk-full fault is on

	reg    *testregistry.Registry
	proxy  *proxy
	images []string // references through the proxy; images[0] runs every container

	logs *os.File // corrald's output, across restarts
	// logIDs are the pod and container IDs corrald's log has named so
	// far, read up to logRead.
	logIDs  map[string]bool
	logRead int64

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	conn   *grpc.ClientConn
	rt     runtimeapi.RuntimeServiceClient
	img    runtimeapi.ImageServiceClient
}

// rootSize is the tmpfs under --root: room for the test images and the
// containers' writable layers, small enough to fill in a moment.
const rootSize = 256 << 20

// busyboxImages are what the workload pulls; the first is what every
// container runs, so it is pulled before the rounds and never removed.
var busyboxImages = []string{testregistry.BusyboxLatest, testregistry.BusyboxGzip, testregistry.BusyboxZstd}

func newEnv(t *testing.T, seed uint64) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "chaos")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, dir: dir,
		root: filepath.Join(dir, "root"), state: filepath.Join(dir, "state"),
		cniBin: filepath.Join(dir, "cni", "bin"), ipam: filepath.Join(dir, "ipam"),
		network: fmt.Sprintf("chaos-%d-%x", seed, rand.Uint32()&0xffff), bridge: fmt.Sprintf("chs%x", rand.Uint32()&0xfffff),
		config: filepath.Join(dir, "corrald.toml"), faultFile: filepath.Join(dir, "cni-fault"),
	}
	e.fillFile = filepath.Join(e.root, "chaos-fill")
	t.Cleanup(e.cleanup)
	for _, d := range []string{e.root, e.state, e.cniBin, e.ipam, filepath.Join(dir, "cni", "net.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", e.root, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", rootSize)); err != nil {
		t.Fatalf("mount a tmpfs for --root: %v", err)
	}
	e.setupCNI(t, seed)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.reg, err = testregistry.Start(ctx, testregistry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := testregistry.Catalog()
	if err != nil {
		t.Fatal(err)
	}
	var push []testregistry.Entry
	for _, en := range entries {
		for _, name := range busyboxImages {
			if en.Name == name {
				push = append(push, en)
			}
		}
	}
	if _, err := testregistry.PushEntries(ctx, e.reg.Host, push); err != nil {
		t.Fatal(err)
	}
	e.proxy, err = startProxy(e.reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range busyboxImages {
		e.images = append(e.images, e.proxy.addr+"/"+name)
	}

	cfg := fmt.Sprintf("[network]\nconf_dir = %q\nbin_dirs = [%q]\n[image]\npull_progress_timeout = \"10s\"\n[registry]\nconfig_path = %q\n",
		filepath.Join(dir, "cni", "net.d"), e.cniBin, filepath.Join(dir, "certs.d"))
	if _, err := os.Stat(filepath.Join(binDir, "corral-pause")); err != nil {
		if p, err := filepath.Abs("../../bin/corral-pause"); err == nil {
			cfg += fmt.Sprintf("[sandbox]\npause_binary = %q\n", p)
		}
	}
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.logs, err = os.Create(filepath.Join(dir, "corrald.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.start(); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
	defer pcancel()
	if _, err := e.images0().PullImage(pctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: e.images[0]}}); err != nil {
		t.Fatalf("pull %s: %v", e.images[0], err)
	}
	return e
}

// setupCNI writes a bridge network with host-local addresses and port
// mappings, named for this run, whose bridge plugin is a wrapper that
// does what faultFile says: "fail", "hang", or nothing.
func (e *env) setupCNI(t *testing.T, seed uint64) {
	real := ""
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			real = d
			break
		}
	}
	if real == "" {
		t.Skip("the CNI plugins are not installed (hack/install-deps.sh)")
	}
	for _, p := range []string{"host-local", "portmap", "loopback"} {
		if err := os.Symlink(filepath.Join(real, p), filepath.Join(e.cniBin, p)); err != nil {
			t.Fatal(err)
		}
	}
	wrapper := fmt.Sprintf(`#!/bin/sh
# chaos: the bridge plugin, unless %[1]s says otherwise.
case "$(cat %[1]s 2>/dev/null)" in
fail) echo '{"cniVersion":"0.4.0","code":11,"msg":"chaos: injected failure of the bridge plugin"}'; exit 1 ;;
hang) echo $$ >> %[3]s
	# The fault may have ended while this pid was being written down.
	[ "$(cat %[1]s 2>/dev/null)" = hang ] || exit 1
	exec sleep 3600 ;;
esac
exec %[2]s "$@"
`, e.faultFile, filepath.Join(real, "bridge"), e.hangPids())
	if err := os.WriteFile(filepath.Join(e.cniBin, "bridge"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	// A /24 of its own, picked by the seed among many, so that runs side
	// by side rarely meet.
	subnet := fmt.Sprintf("10.%d.%d.0/24", 200+seed%40, rand.IntN(250))
	conflist := fmt.Sprintf(`{"cniVersion": "0.4.0", "name": %q, "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "subnet": %q, "dataDir": %q}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}`, e.network, e.bridge, subnet, e.ipam)
	if err := os.WriteFile(filepath.Join(e.dir, "cni", "net.d", "10-chaos.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs corrald and waits until it answers.
func (e *env) start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	cmd := exec.Command(filepath.Join(binDir, "corrald"), "--config", e.config, "--root", e.root, "--state", e.state, "--log-level", "debug")
	fmt.Fprintf(e.logs, "\n===== %s corrald starting =====\n", time.Now().Format(time.RFC3339Nano))
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.cmd, e.exited = cmd, exited
	if e.conn == nil {
		conn, err := grpc.NewClient("unix://"+filepath.Join(e.state, "corral.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		e.conn = conn
		e.rt = runtimeapi.NewRuntimeServiceClient(conn)
		e.img = runtimeapi.NewImageServiceClient(conn)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("corrald exited at start; its log:\n%s", e.logTail(40))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("corrald not answering after 60s; its log:\n%s", e.logTail(40))
}

// running reports whether corrald is up.
func (e *env) running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return false
	}
	select {
	case <-e.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL to corrald and waits for it to be gone.
func (e *env) kill() {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// stop ends corrald gracefully.
func (e *env) stop() {
	e.mu.Lock()
	cmd, exited := e.cmd, e.exited
	e.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
}

func (e *env) images0() runtimeapi.ImageServiceClient { return e.img }

func (e *env) logTail(n int) string {
	b, _ := os.ReadFile(e.logs.Name())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// setCNIFault makes the bridge plugin fail, hang, or (with "") work.
func (e *env) setCNIFault(mode string) {
	if mode == "" {
		os.Remove(e.faultFile)
		// A hanging plugin is left to its caller's timeout; one still
		// asleep when the fault ends is ended here, by the pid it wrote:
		// asleep already, or still the wrapper on its way to sleep. A
		// wrapper that read the fault just before it ended writes its
		// pid a moment later, so the pids are read a few times.
		wrapper := filepath.Join(e.cniBin, "bridge")
		for i := range 5 {
			if i > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			b, _ := os.ReadFile(e.hangPids())
			for _, f := range strings.Fields(string(b)) {
				pid, _ := strconv.Atoi(f)
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				if pid > 0 && (string(cmd) == "sleep\x003600\x00" || strings.Contains(string(cmd), wrapper)) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		os.Remove(e.hangPids())
		return
	}
	os.WriteFile(e.faultFile, []byte(mode), 0o644)
}

// dumpStacks has corrald and every shim write their goroutines (corrald
// into its log, a shim into its bundle's shim.stderr), for a round that
// went wrong. The processes exit doing it; what was running is what the
// dumps show.
func (e *env) dumpStacks(why string) {
	e.t.Logf("dumping the goroutines of corrald and the shims (%s): %s and %s/*/shim.stderr", why, e.logs.Name(), filepath.Join(e.state, "sandboxes"))
	for _, s := range shimProcs(e.state) {
		syscall.Kill(s.pid, syscall.SIGQUIT)
	}
	e.mu.Lock()
	if e.cmd != nil {
		e.cmd.Process.Signal(syscall.SIGQUIT)
	}
	e.mu.Unlock()
	time.Sleep(time.Second)
}

// loggedID is an ID as corrald's log names it: pod=, container=, id=.
var loggedID = regexp.MustCompile(`=([0-9a-f]{64})\b`)

// loggedIDs returns every ID corrald's log has named, reading only what
// was written since the last call, up to its last complete line.
func (e *env) loggedIDs() map[string]bool {
	if e.logIDs == nil {
		e.logIDs = map[string]bool{}
	}
	f, err := os.Open(e.logs.Name())
	if err != nil {
		return e.logIDs
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, e.logRead, 1<<62))
	if err != nil {
		return e.logIDs
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	e.logRead += int64(len(b))
	for _, m := range loggedID.FindAllSubmatch(b, -1) {
		e.logIDs[string(m[1])] = true
	}
	return e.logIDs
}

func (e *env) hangPids() string { return filepath.Join(e.dir, "cni-hanging") }

// fillDisk fills --root, or empties it again.
func (e *env) fillDisk(full bool) {
	if !full {
		os.Remove(e.fillFile)
		return
	}
	f, err := os.Create(e.fillFile)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			return
		}
	}
}

// cleanup ends whatever the run left: corrald, then shims, containers and
// mounts by what is on the host, and the dirs.
func (e *env) cleanup() {
	if e.conn != nil {
		e.conn.Close()
	}
	if e.running() {
		e.stop()
	}
	for _, s := range shimProcs(e.state) {
		syscall.Kill(s.pid, syscall.SIGKILL)
	}
	for _, root := range runcRoots(e.state) {
		for _, id := range dirNames(root) {
			exec.Command("runc", "--root", root, "delete", "--force", id).Run()
		}
	}
	// The pods' own cgroups, which corrald removes with the pods.
	pods := map[string]bool{}
	for _, d := range []string{filepath.Join(e.state, "sandboxes"), filepath.Join(e.root, "sandboxes")} {
		for _, id := range dirNames(d) {
			pods[id] = true
		}
	}
	cgs := cgroupsOf(pods)
	for i := len(cgs) - 1; i >= 0; i-- {
		removeCgroup(cgs[i])
	}
	e.setCNIFault("")
	removePortmapRules(e.network)
	exec.Command("ip", "link", "delete", e.bridge).Run()
	for _, m := range reverse(mountsUnder(e.dir)) {
		unix.Unmount(m, unix.MNT_DETACH)
	}
	if e.proxy != nil {
		e.proxy.close()
	}
	if e.reg != nil {
		e.reg.Stop()
	}
	if e.logs != nil {
		if e.t.Failed() {
			e.t.Logf("corrald log (last 80 lines of %s):\n%s", e.logs.Name(), e.logTail(80))
		}
		e.logs.Close()
	}
	if !e.t.Failed() {
		os.RemoveAll(e.dir)
	} else {
		e.t.Logf("kept %s for inspection", e.dir)
	}
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

// proxy forwards connections to the registry; while drop is set, it cuts
// each response after a few kilobytes, as a registry or a network that
// fails in the middle of a layer does.
type proxy struct {
	addr   string
	l      net.Listener
	target string
	drop   atomic.Bool
	done   chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startProxy(target string) (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: l.Addr().String(), l: l, target: target, done: make(chan struct{}), conns: map[net.Conn]bool{}}
	go func() {
		defer close(p.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = true
			p.mu.Unlock()
			go p.serve(c)
		}
	}()
	return p, nil
}

func (p *proxy) serve(c net.Conn) {
	defer func() {
		c.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
	if p.drop.Load() {
		// Headers and a little of the body, then nothing.
		io.CopyN(c, up, 2048+rand.Int64N(8192))
		return
	}
	io.Copy(c, up)
}

// close stops the proxy and cuts the connections it serves.
func (p *proxy) close() {
	p.l.Close()
	<-p.done
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}
