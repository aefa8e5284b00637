package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// corraldRun is one corrald started by a test as its child.
type corraldRun struct {
	cmd    *exec.Cmd
	socket string
	logs   *syncBuffer
	exited chan struct{} // closed once cmd.Wait has returned
	err    error         // cmd.Wait's result, once exited is closed
}

// startCorrald runs binDir/corrald with args and waits for its CRI socket at
// STATE/corral.sock. Whatever the test does, the process is gone when the
// test ends: it is killed by its pid if it still runs.
func startCorrald(t testing.TB, state string, args ...string) *corraldRun {
	t.Helper()
	d := &corraldRun{
		cmd:    exec.Command(filepath.Join(binDir, "corrald"), args...),
		socket: filepath.Join(state, "corral.sock"),
		logs:   &syncBuffer{},
		exited: make(chan struct{}),
	}
	d.cmd.Stdout = d.logs
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			killProcess(d.cmd.Process.Pid)
			<-d.exited
		}
		if t.Failed() {
			t.Logf("corrald log:\n%s", d.logs.String())
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(d.socket); err == nil && fi.Mode().Type() == os.ModeSocket {
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("corrald exited before serving (%v):\n%s", d.err, d.logs.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket at %s after 10s:\n%s", d.socket, d.logs.String())
		}
	}
}

// stop sends SIGTERM and waits up to timeout for corrald to exit.
func (d *corraldRun) stop(t testing.TB, timeout time.Duration) error {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
		return d.err
	case <-time.After(timeout):
		t.Fatalf("corrald still running %s after SIGTERM", timeout)
		return nil
	}
}

func criClient(t *testing.T, socket string) runtimeapi.RuntimeServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewRuntimeServiceClient(conn)
}

// TestCorrald starts the daemon on the built-in config with its own root
// and state, checks its socket and its answers to Version and Status through
// a real CRI client (and crictl where installed), then stops it with SIGTERM.
func TestCorrald(t *testing.T) {
	dir := shortTempDir(t)
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	d := startCorrald(t, state, "--root", root, "--state", state)

	fi, err := os.Stat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %o, want 0660", fi.Mode().Perm())
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
		t.Errorf("socket owned by %d:%d, want root:root", st.Uid, st.Gid)
	}
	if _, err := os.Stat(filepath.Join(root, "meta.db")); err != nil {
		t.Errorf("metadata store: %v", err)
	}

	cri := criClient(t, d.socket)
	ctx := ctxTimeout(t, 10*time.Second)
	v, err := cri.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if v.RuntimeName != "corral" || v.RuntimeApiVersion != "v1" || v.Version != "0.1.0" || v.RuntimeVersion == "" {
		t.Errorf("Version = %+v", v)
	}
	st, err := cri.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	ready := map[string]*runtimeapi.RuntimeCondition{}
	for _, c := range st.GetStatus().GetConditions() {
		ready[c.Type] = c
	}
	if c := ready[runtimeapi.RuntimeReady]; c == nil || !c.Status {
		t.Errorf("RuntimeReady = %v, want true", c)
	}
	if c := ready[runtimeapi.NetworkReady]; c == nil || c.Status || c.Reason != "NetworkPluginNotReady" || c.Message == "" {
		t.Errorf("NetworkReady = %v, want false with reason NetworkPluginNotReady and a message", c)
	}
	if !strings.Contains(st.Info["config"], `"default_runtime":"runc"`) {
		t.Errorf("verbose Status info lacks the config: %v", st.Info)
	}

	t.Run("crictl", func(t *testing.T) {
		crictl, err := exec.LookPath("crictl")
		if err != nil {
			t.Skip("crictl is not installed")
		}
		for args, want := range map[string]string{"version": "RuntimeName:  corral", "info": "NetworkPluginNotReady"} {
			cmd := exec.Command(crictl, "--runtime-endpoint", "unix://"+d.socket, "--image-endpoint", "unix://"+d.socket, "--timeout", "10s", args)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), want) {
				t.Errorf("crictl %s: %v, want %q in:\n%s", args, err, want, out)
			}
		}
	})

	// The store's lock keeps a second daemon off the same root, and it
	// says why instead of hanging or taking the socket over.
	second := exec.Command(filepath.Join(binDir, "corrald"), "--root", root, "--state", filepath.Join(dir, "state2"))
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "another corrald") {
		t.Errorf("a second corrald on the same root: %v\n%s", err, out)
	}

	start := time.Now()
	if err := d.stop(t, 10*time.Second); err != nil {
		t.Errorf("corrald exited with %v after SIGTERM, want status 0", err)
	}
	t.Logf("stopped in %s", time.Since(start))
	if _, err := os.Lstat(d.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after exit: %v", err)
	}
	log := d.logs.String()
	for _, want := range []string{"corrald starting", "socket=" + d.socket, `config="built-in defaults"`, "root=" + root} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestCorraldSystemdDriver: with cgroup_driver = "systemd" corrald reports
// that driver to the kubelet where systemd runs, and on a node without
// systemd refuses to start, naming the setting and the fix, instead of
// failing every pod later.
func TestCorraldSystemdDriver(t *testing.T) {
	dir := shortTempDir(t)
	cfg := filepath.Join(dir, "corrald.toml")
	if err := os.WriteFile(cfg, []byte("cgroup_driver = \"systemd\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", cfg, "--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state")}
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		d := startCorrald(t, filepath.Join(dir, "state"), args...)
		rc, err := criClient(t, d.socket).RuntimeConfig(ctxTimeout(t, 10*time.Second), &runtimeapi.RuntimeConfigRequest{})
		if err != nil || rc.GetLinux().GetCgroupDriver() != runtimeapi.CgroupDriver_SYSTEMD {
			t.Errorf("RuntimeConfig = %v, %v; want the systemd driver", rc, err)
		}
		return
	}
	cmd := exec.Command(filepath.Join(binDir, "corrald"), args...)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("corrald kept running with the systemd driver on a node without systemd")
	}
	if err == nil || !strings.Contains(string(out), "systemd is not running on this node") || !strings.Contains(string(out), `cgroup_driver = "cgroupfs"`) {
		t.Errorf("corrald with the systemd driver and no systemd: %v\n%s", err, out)
	}
}
