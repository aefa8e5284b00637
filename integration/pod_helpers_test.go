package integration

// Shared helpers of the pod and container tests (pod_test.go,
// pod_badinput_test.go, pod_restart_test.go, pod_load_test.go): a corrald
// with a registry of test images, CRI config builders, waits that always
// end, and a leak check that looks at the host, not at what corrald says.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-runtime/corral/integration/testregistry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podNamespace is the Kubernetes namespace of every test pod.
const podNamespace = "corral-test"

// callTimeout bounds every single CRI call of the pod tests: a call that
// hangs fails its test instead of stalling the run.
const callTimeout = 60 * time.Second

// podEnv is an imageEnv whose corrald runs pods: busybox is on the test
// registry and pulled, and the env knows the test's dirs well enough to
// find and remove whatever the pods leave on the host.
type podEnv struct {
	*imageEnv
	t  *testing.T
	rt runtimeapi.RuntimeServiceClient
	// busybox is testregistry.BusyboxLatest on the test registry, and
	// busyboxID what PullImage answered for it: the image ID the kubelet
	// puts in ContainerConfig.image.
	busybox, busyboxID string
	logs               string // parent of the pods' log directories
	watch              *leakWatch
}

// newPodEnv starts a registry with busybox and a corrald on the test's own
// root and state, pulls busybox, and registers the cleanup that removes
// every pod (through CRI while corrald runs, then by pid and umount).
func newPodEnv(t *testing.T) *podEnv {
	t.Helper()
	return newPodEnvWithCNI(t, loopbackConflist)
}

// loopbackConflist is the pod tests' default network: loopback only.
const loopbackConflist = `{"cniVersion": "0.4.0", "name": "corral-test-lo", "plugins": [{"type": "loopback"}]}`

// newPodEnvWithCNI is newPodEnv with conflist as corrald's only CNI network.
func newPodEnvWithCNI(t *testing.T, conflist string) *podEnv {
	t.Helper()
	return newPodEnvWithConfig(t, conflist, nil)
}

// newPodEnvWithConfig is newPodEnvWithCNI with more TOML for corrald's
// config: extra, given the env's dir, returns it (nil: none). It goes
// first, so it may set top-level keys before its tables.
func newPodEnvWithConfig(t *testing.T, conflist string, extra func(dir string) string) *podEnv {
	t.Helper()
	img := newImageEnvWith(t, imageEnvOptions{
		Images: []string{testregistry.BusyboxLatest},
		ExtraConfig: func(dir string) string {
			cfg := podConfigTOML(dir, conflist)
			if extra != nil {
				cfg = extra(dir) + "\n" + cfg
			}
			return cfg
		},
	})
	e := &podEnv{imageEnv: img, t: t, logs: filepath.Join(img.dir, "logs")}
	e.watch = &leakWatch{env: e, pids: map[int]string{}, runcRoots: map[string]bool{}, sockets: map[string]bool{}}
	if err := os.MkdirAll(e.logs, 0o755); err != nil {
		t.Fatal(err)
	}
	e.rt = criClient(t, e.d.socket)
	t.Cleanup(e.cleanup)
	e.busybox = e.ref(testregistry.BusyboxLatest)
	resp, err := e.images.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: e.busybox}})
	if err != nil {
		t.Fatalf("PullImage %s: %v", e.busybox, err)
	}
	e.busyboxID = resp.ImageRef
	return e
}

// podConfigTOML is what the pod tests add to corrald's config: a CNI dir
// of the test's own holding a loopback-only network (pods have no network
// beyond lo until the CNI work lands, and then still only lo, whatever the
// host's /etc/cni/net.d holds), and the pause binary of the checkout when
// the binaries under test come without one.
func podConfigTOML(dir, conflist string) string {
	cni := filepath.Join(dir, "cni")
	os.MkdirAll(cni, 0o755)
	os.WriteFile(filepath.Join(cni, "10-test.conflist"), []byte(conflist), 0o644)
	// cni-bin first: a test may put plugins of its own there.
	cniBin := filepath.Join(dir, "cni-bin")
	os.MkdirAll(cniBin, 0o755)
	cfg := fmt.Sprintf("[network]\nconf_dir = %q\nbin_dirs = [%q, \"/opt/cni/bin\", \"/usr/lib/cni\"]\n", cni, cniBin)
	if _, err := os.Stat(filepath.Join(binDir, "corral-pause")); err != nil {
		if p, err := filepath.Abs("../bin/corral-pause"); err == nil {
			if _, err := os.Stat(p); err == nil {
				cfg += fmt.Sprintf("[sandbox]\npause_binary = %q\n", p)
			}
		}
	}
	return cfg
}

// ctx is a context for one CRI call.
func (e *podEnv) ctx() context.Context { return ctxTimeout(e.t, callTimeout) }

// restart starts corrald again on the same config, root and state, after
// the test stopped or killed it, and waits until it answers CRI calls.
func (e *podEnv) restart(t *testing.T) {
	t.Helper()
	select {
	case <-e.d.exited:
	default:
		t.Fatal("restart: corrald is still running")
	}
	e.startDaemon(t)
	// A new connection: the old one may be backing off after the daemon
	// went away.
	e.rt = criClient(t, e.d.socket)
	// corrald replaces the socket a killed daemon left, so the file may be
	// there before anyone serves on it.
	waitUntil(t, 30*time.Second, "corrald answers Version after the restart", func() (bool, string) {
		select {
		case <-e.d.exited:
			t.Fatalf("corrald exited after the restart (%v)", e.d.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := e.rt.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
		return err == nil, fmt.Sprint(err)
	})
	// The cleanups run last-registered first: this one runs while the new
	// daemon still serves, before the one startCorrald registered kills it.
	t.Cleanup(e.cleanup)
}

// killDaemon ends corrald with SIGKILL, as a crash would, and waits for it.
func (e *podEnv) killDaemon(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(e.d.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.d.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("corrald still running 10s after SIGKILL")
	}
}

// uid returns a fresh pod UID.
func uid() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// nsOptions are the namespaces the kubelet asks for by default: the pod's
// network and IPC, the container's own PID namespace.
func nsOptions() *runtimeapi.NamespaceOption {
	return &runtimeapi.NamespaceOption{
		Network: runtimeapi.NamespaceMode_POD,
		Pid:     runtimeapi.NamespaceMode_CONTAINER,
		Ipc:     runtimeapi.NamespaceMode_POD,
	}
}

// podConfig is a pod as the kubelet sends it, with a log directory of its
// own under the test dir (made, as the kubelet makes it).
func (e *podEnv) podConfig(name string) *runtimeapi.PodSandboxConfig {
	u := uid()
	logDir := filepath.Join(e.logs, podNamespace+"_"+name+"_"+u)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: podNamespace, Uid: u},
		Hostname:     name,
		LogDirectory: logDir,
		Labels:       map[string]string{"corral-test": "pod", "pod-name": name},
		Annotations:  map[string]string{"corral.test/pod": name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: nsOptions()},
		},
	}
}

// containerConfig is a busybox container (by image ID, as the kubelet
// sends it) running cmd, logging to NAME.log in its pod's log directory.
func (e *podEnv) containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: name},
		Image:       &runtimeapi.ImageSpec{Image: e.busyboxID, UserSpecifiedImage: e.busybox},
		Command:     cmd,
		LogPath:     name + ".log",
		Labels:      map[string]string{"corral-test": "container", "container-name": name},
		Annotations: map[string]string{"corral.test/container": name},
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: nsOptions()},
		},
	}
}

// runPod runs a pod and fails the test if it cannot.
func (e *podEnv) runPod(t *testing.T, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	resp, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", cfg.Metadata.Name, err)
	}
	if resp.PodSandboxId == "" {
		t.Fatalf("RunPodSandbox %s: empty pod sandbox ID", cfg.Metadata.Name)
	}
	e.watch.trackID(resp.PodSandboxId)
	return resp.PodSandboxId
}

// createContainer creates a container and fails the test if it cannot.
func (e *podEnv) createContainer(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	resp, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cfg.Metadata.Name, err)
	}
	if resp.ContainerId == "" {
		t.Fatalf("CreateContainer %s: empty container ID", cfg.Metadata.Name)
	}
	e.watch.trackID(resp.ContainerId)
	return resp.ContainerId
}

func (e *podEnv) startContainer(t *testing.T, id string) {
	t.Helper()
	if _, err := e.rt.StartContainer(e.ctx(), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer %s: %v", id, err)
	}
}

// runContainer creates and starts a container and waits until it runs; it
// returns its ID and the pid of its process, or 0 if the process has exited
// already.
func (e *podEnv) runContainer(t *testing.T, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) (string, int) {
	t.Helper()
	id := e.createContainer(t, podID, pod, cfg)
	e.startContainer(t, id)
	// A short-lived command may have exited by the time its status is read:
	// that is a started container too, with no process left to name.
	var st *runtimeapi.ContainerStatus
	waitUntil(t, 30*time.Second, fmt.Sprintf("container %s runs", id), func() (bool, string) {
		st, _ = e.containerStatus(t, id)
		return st.State == runtimeapi.ContainerState_CONTAINER_RUNNING || st.State == runtimeapi.ContainerState_CONTAINER_EXITED,
			fmt.Sprintf("state %s, reason %q, message %q", st.State, st.Reason, st.Message)
	})
	if st.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		_, info := e.containerStatus(t, id)
		if pid := pidInInfo(info); pid > 0 && processAlive(pid) {
			e.watch.track(pid, "process of container "+id)
			return id, pid
		}
		// Gone already: its exit must reach the status soon.
		e.waitContainer(t, id, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	}
	return id, 0
}

func (e *podEnv) containerStatus(t *testing.T, id string) (*runtimeapi.ContainerStatus, map[string]string) {
	t.Helper()
	resp, err := e.rt.ContainerStatus(e.ctx(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	if resp.Status == nil || resp.Status.Id != id {
		t.Fatalf("ContainerStatus %s: status %v", id, resp.Status)
	}
	return resp.Status, resp.Info
}

func (e *podEnv) podStatus(t *testing.T, id string) (*runtimeapi.PodSandboxStatus, map[string]string) {
	t.Helper()
	resp, err := e.rt.PodSandboxStatus(e.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("PodSandboxStatus %s: %v", id, err)
	}
	if resp.Status == nil || resp.Status.Id != id {
		t.Fatalf("PodSandboxStatus %s: status %v", id, resp.Status)
	}
	return resp.Status, resp.Info
}

// waitContainer polls ContainerStatus until the container is in state.
func (e *podEnv) waitContainer(t *testing.T, id string, state runtimeapi.ContainerState, timeout time.Duration) *runtimeapi.ContainerStatus {
	t.Helper()
	var st *runtimeapi.ContainerStatus
	waitUntil(t, timeout, fmt.Sprintf("container %s is %s", id, state), func() (bool, string) {
		st, _ = e.containerStatus(t, id)
		return st.State == state, fmt.Sprintf("state %s, exit code %d, reason %q, message %q", st.State, st.ExitCode, st.Reason, st.Message)
	})
	return st
}

// containerPid is the pid of the container's process, from the verbose
// ContainerStatus: containerd's convention, which crictl inspect shows
// and tools read, is a JSON object in info["info"] with a "pid" number.
func (e *podEnv) containerPid(t *testing.T, id string) int {
	t.Helper()
	_, info := e.containerStatus(t, id)
	pid := pidInInfo(info)
	if pid <= 0 {
		t.Fatalf("verbose ContainerStatus of running container %s has no pid (want info[\"info\"] = {\"pid\": N, ...}): %v", id, info)
	}
	if !processAlive(pid) {
		t.Fatalf("container %s: pid %d from its verbose status is not running", id, pid)
	}
	e.watch.track(pid, "process of container "+id)
	return pid
}

// pidInInfo finds a positive "pid" in the JSON objects of a verbose info
// map, at their top level or one level down; 0 if there is none.
func pidInInfo(info map[string]string) int {
	for _, k := range sortedKeys(info) {
		var m map[string]any
		if json.Unmarshal([]byte(info[k]), &m) != nil {
			continue
		}
		if p := pidInMap(m, 1); p > 0 {
			return p
		}
	}
	return 0
}

func pidInMap(m map[string]any, depth int) int {
	if f, ok := m["pid"].(float64); ok && f > 0 {
		return int(f)
	}
	if depth > 0 {
		for _, k := range sortedKeys(m) {
			if sub, ok := m[k].(map[string]any); ok {
				if p := pidInMap(sub, depth-1); p > 0 {
					return p
				}
			}
		}
	}
	return 0
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// listContainers lists the containers matching filter (nil: all).
func (e *podEnv) listContainers(t *testing.T, filter *runtimeapi.ContainerFilter) []*runtimeapi.Container {
	t.Helper()
	resp, err := e.rt.ListContainers(e.ctx(), &runtimeapi.ListContainersRequest{Filter: filter})
	if err != nil {
		t.Fatalf("ListContainers %v: %v", filter, err)
	}
	for _, c := range resp.Containers {
		e.watch.trackID(c.Id)
	}
	return resp.Containers
}

// listPods lists the pods matching filter (nil: all).
func (e *podEnv) listPods(t *testing.T, filter *runtimeapi.PodSandboxFilter) []*runtimeapi.PodSandbox {
	t.Helper()
	resp, err := e.rt.ListPodSandbox(e.ctx(), &runtimeapi.ListPodSandboxRequest{Filter: filter})
	if err != nil {
		t.Fatalf("ListPodSandbox %v: %v", filter, err)
	}
	for _, p := range resp.Items {
		e.watch.trackID(p.Id)
	}
	return resp.Items
}

// removePod stops and removes a pod the way the kubelet does: containers
// first (StopContainer with timeout, RemoveContainer), then the sandbox.
func (e *podEnv) removePod(t *testing.T, podID string) {
	t.Helper()
	for _, c := range e.listContainers(t, &runtimeapi.ContainerFilter{PodSandboxId: podID}) {
		if _, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: c.Id, Timeout: 1}); err != nil {
			t.Errorf("StopContainer %s: %v", c.Id, err)
		}
		if _, err := e.rt.RemoveContainer(e.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
			t.Errorf("RemoveContainer %s: %v", c.Id, err)
		}
	}
	if _, err := e.rt.StopPodSandbox(e.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Errorf("StopPodSandbox %s: %v", podID, err)
	}
	if _, err := e.rt.RemovePodSandbox(e.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Errorf("RemovePodSandbox %s: %v", podID, err)
	}
}

// cleanup runs whatever the test did: it removes every pod through CRI while
// corrald runs, then ends what is left of the test's containers (runc
// delete --force), shims and tracked processes by pid, and unmounts
// everything under the test's dir. Running it twice is harmless.
func (e *podEnv) cleanup() {
	t := e.t
	select {
	case <-e.d.exited:
	default:
		e.removeAllThroughCRI(t)
	}
	for _, root := range e.watch.runcRootsNow() {
		for _, id := range runcContainers(root) {
			if out, err := exec.Command("runc", "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
				t.Logf("cleanup: runc --root %s delete --force %s: %v: %s", root, id, err, out)
			}
		}
	}
	for _, s := range shimProcs(e.state) {
		t.Logf("cleanup: killing shim %d left running: %s", s.pid, strings.Join(s.args, " "))
		killProcess(s.pid)
	}
	for pid, what := range e.watch.trackedPids() {
		if processAlive(pid) && e.watch.sameProcess(pid) {
			t.Logf("cleanup: killing %s (pid %d)", what, pid)
			killProcess(pid)
		}
	}
	unmountUnder(e.dir)
}

// removeAllThroughCRI stops and removes every container and pod corrald
// lists, quietly: corrald may not implement the calls, or be broken.
func (e *podEnv) removeAllThroughCRI(t testing.TB) {
	conn, err := grpc.NewClient("unix://"+e.d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err == nil {
		for _, c := range cs.Containers {
			rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id})
			if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
				t.Logf("cleanup: RemoveContainer %s: %v", c.Id, err)
			}
		}
	}
	if ps, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		for _, p := range ps.Items {
			rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
			if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				t.Logf("cleanup: RemovePodSandbox %s: %v", p.Id, err)
			}
		}
	}
}

// waitUntil polls cond every 100ms until it holds; after timeout the test
// fails with what and cond's last explanation.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if ok, why := poll(timeout, cond); !ok {
		t.Fatalf("waited %s for: %s; last: %s", timeout, what, why)
	}
}

// expectWithin is waitUntil for checks after which the test goes on: it
// reports the failure with t.Errorf.
func expectWithin(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) bool {
	t.Helper()
	ok, why := poll(timeout, cond)
	if !ok {
		t.Errorf("waited %s for: %s; last: %s", timeout, what, why)
	}
	return ok
}

// poll calls cond every 100ms until it holds or timeout has passed; it
// returns the last answer.
func poll(timeout time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok || time.Now().After(deadline) {
			return ok, why
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// grpcCode is err's gRPC code and message; OK and "" for nil.
func grpcCode(err error) (codes.Code, string) {
	st := status.Convert(err)
	return st.Code(), st.Message()
}

// shimProc is a running containerd-shim-corral-v2 serving a pod.
type shimProc struct {
	pid                        int
	args                       []string
	namespace, address, socket string
}

// runcRoot is where the shim has runc keep its containers' state: next to
// the daemon's address, per namespace (see shim.runtimeRoot).
func (s shimProc) runcRoot() string {
	if s.address == "" || s.namespace == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(strings.TrimPrefix(s.address, "unix://")), "runc", s.namespace)
}

// shimProcs lists the long-running corral shims (the ones with -socket)
// whose command line names dir, as countShims counts them.
func shimProcs(dir string) []shimProc {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []shimProc
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != corralShim || !slices.Contains(args, "-socket") || !strings.Contains(string(b), dir+"/") {
			continue
		}
		s := shimProc{args: args}
		s.pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
		for i := 1; i+1 < len(args); i++ {
			switch strings.TrimLeft(args[i], "-") {
			case "namespace":
				s.namespace = args[i+1]
			case "address":
				s.address = args[i+1]
			case "socket":
				s.socket = args[i+1]
			}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// shims returns the env's shims and remembers them for the leak check.
func (e *podEnv) shims() []shimProc {
	s := shimProcs(e.state)
	e.watch.observe(s)
	return s
}

// waitShims waits until exactly n shims serve the env's pods: one per
// pod. A shim may take a moment to exit after its last container is gone.
func (e *podEnv) waitShims(t *testing.T, n int) []shimProc {
	t.Helper()
	var s []shimProc
	waitUntil(t, 15*time.Second, fmt.Sprintf("%d %s processes for %s (one per pod)", n, corralShim, e.state), func() (bool, string) {
		s = e.shims()
		return len(s) == n, describeShims(s)
	})
	return s
}

func describeShims(s []shimProc) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d shims", len(s))
	for _, p := range s {
		fmt.Fprintf(&b, "\n  pid %d: %s", p.pid, strings.Join(p.args, " "))
	}
	return b.String()
}

// childrenOf lists the pids whose parent is one of parents.
func childrenOf(parents ...int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, p := range stats {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if slices.Contains(parents, parentOf(pid)) && processAlive(pid) {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// mountsUnder lists the mount points below dir in this process's mount
// namespace, sorted.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	sort.Strings(points)
	return points
}

// runcContainers lists the containers runc keeps state for under root:
// the directories holding a state.json, which is what `runc list` reads.
func runcContainers(root string) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var ids []string
	for _, en := range entries {
		if _, err := os.Stat(filepath.Join(root, en.Name(), "state.json")); err == nil {
			ids = append(ids, en.Name())
		}
	}
	return ids
}

// leakWatch remembers what the pods of a test had on the host (processes,
// runc roots, shim sockets) so that check can tell, once they are all
// removed, that none of it is left.
type leakWatch struct {
	env       *podEnv
	mu        sync.Mutex
	pids      map[int]string // pid → what it was
	starts    map[int]uint64 // pid → its start time, so a reused pid is not mistaken
	runcRoots map[string]bool
	sockets   map[string]bool
	ids       map[string]bool // pod and container IDs: no cgroup may be left by these names
}

// trackID remembers a pod or container ID for the cgroup check.
func (w *leakWatch) trackID(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ids == nil {
		w.ids = map[string]bool{}
	}
	w.ids[id] = true
}

// cgroupsOf lists the cgroup directories, in every hierarchy under
// /sys/fs/cgroup, named after one of the tracked IDs (runc's cgroupfs
// driver makes PARENT/ID; systemd's makes a scope with the ID in its name).
func (w *leakWatch) cgroupsOf() []string {
	w.mu.Lock()
	ids := sortedKeys(w.ids)
	w.mu.Unlock()
	return cgroupsNamed(ids...)
}

// cgroupsNamed lists the cgroup directories, in every hierarchy, whose
// name holds one of ids; it does not look below one it lists.
func cgroupsNamed(ids ...string) []string {
	if len(ids) == 0 {
		return nil
	}
	var out []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.Count(p, "/") > 10 {
			return filepath.SkipDir
		}
		for _, id := range ids {
			if strings.Contains(d.Name(), id) {
				out = append(out, p)
				return filepath.SkipDir
			}
		}
		return nil
	})
	return out
}

// track remembers pid as a process that must be gone by the end.
func (w *leakWatch) track(pid int, what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.starts == nil {
		w.starts = map[int]uint64{}
	}
	w.pids[pid] = what
	w.starts[pid] = procStartTime(pid)
}

func (w *leakWatch) trackedPids() map[int]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[int]string, len(w.pids))
	for k, v := range w.pids {
		out[k] = v
	}
	return out
}

// sameProcess reports whether pid is still the process track saw.
func (w *leakWatch) sameProcess(pid int) bool {
	w.mu.Lock()
	start := w.starts[pid]
	w.mu.Unlock()
	return start != 0 && procStartTime(pid) == start
}

func (w *leakWatch) observe(shims []shimProc) {
	for _, s := range shims {
		w.track(s.pid, "shim "+strings.Join(s.args, " "))
		w.mu.Lock()
		if r := s.runcRoot(); r != "" {
			w.runcRoots[r] = true
		}
		if s.socket != "" {
			w.sockets[strings.TrimPrefix(s.socket, "unix://")] = true
		}
		w.mu.Unlock()
	}
}

// runcRootsNow is every runc root the test's containers may be in: the
// ones seen on shim command lines, and every namespace dir under
// STATE/runc, where the shim puts them when corrald names no other root.
func (w *leakWatch) runcRootsNow() []string {
	w.mu.Lock()
	roots := map[string]bool{}
	for r := range w.runcRoots {
		roots[r] = true
	}
	w.mu.Unlock()
	nss, _ := os.ReadDir(filepath.Join(w.env.state, "runc"))
	for _, ns := range nss {
		if ns.IsDir() {
			roots[filepath.Join(w.env.state, "runc", ns.Name())] = true
		}
	}
	return sortedKeys(roots)
}

// allowedMounts are the mount points corrald keeps on purpose while it
// runs: STATE/netns is a private bind mount of itself (see cri/netns).
func (e *podEnv) allowedMounts() []string {
	return []string{filepath.Join(e.state, "netns")}
}

// leakedMounts are the mounts under the test's dirs that no pod may keep.
func (e *podEnv) leakedMounts() []string {
	var out []string
	for _, m := range mountsUnder(e.dir) {
		if !slices.Contains(e.allowedMounts(), m) {
			out = append(out, m)
		}
	}
	return out
}

// checkNoLeaks fails the test for whatever the removed pods left on the
// host: shim processes for the test's state dir, container or shim
// processes seen during the test, mounts under the test's dirs, runc
// state, cgroups, pinned network namespaces, shim sockets. Processes and mounts get
// a few seconds to go, since a shim exits after answering its last call.
func (e *podEnv) checkNoLeaks(t *testing.T) {
	t.Helper()
	e.shims() // the last ones seen, if any
	deadline := time.Now().Add(15 * time.Second)
	var problems []string
	for {
		problems = e.leaks()
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range problems {
		t.Errorf("leak after removing every pod: %s", p)
	}
}

func (e *podEnv) leaks() []string {
	var problems []string
	if s := shimProcs(e.state); len(s) > 0 {
		problems = append(problems, "shims still running: "+describeShims(s))
	}
	var alive []string
	for pid, what := range e.watch.trackedPids() {
		if processAlive(pid) && e.watch.sameProcess(pid) {
			alive = append(alive, fmt.Sprintf("pid %d still running: %s", pid, what))
		}
	}
	sort.Strings(alive)
	problems = append(problems, alive...)
	if m := e.leakedMounts(); len(m) > 0 {
		problems = append(problems, fmt.Sprintf("mounts under %s: %v", e.dir, m))
	}
	for _, root := range e.watch.runcRootsNow() {
		if ids := runcContainers(root); len(ids) > 0 {
			out, _ := exec.Command("runc", "--root", root, "list").CombinedOutput()
			problems = append(problems, fmt.Sprintf("runc state in %s for %v:\n%s", root, ids, out))
		}
	}
	if cg := e.watch.cgroupsOf(); len(cg) > 0 {
		problems = append(problems, fmt.Sprintf("cgroups left: %v", cg))
	}
	netns := filepath.Join(e.state, "netns")
	if entries, err := os.ReadDir(netns); err == nil && len(entries) > 0 {
		var names []string
		for _, en := range entries {
			names = append(names, en.Name())
		}
		problems = append(problems, fmt.Sprintf("network namespaces left in %s: %v", netns, names))
	}
	e.watch.mu.Lock()
	sockets := sortedKeys(e.watch.sockets)
	e.watch.mu.Unlock()
	for _, s := range sockets {
		if _, err := os.Lstat(s); err == nil {
			problems = append(problems, "shim socket left: "+s)
		}
	}
	return problems
}

// procStartTime is field 22 of /proc/PID/stat, the process's start time in
// clock ticks since boot: a pid with the same start time is the same
// process. 0 when pid does not exist.
func procStartTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// fields[0] is field 3 (state); the start time is field 22.
	if len(fields) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(fields[19], 10, 64)
	return v
}

// netnsOf is the inode of pid's network namespace, 0 if unknown.
func netnsOf(pid int) uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0
	}
	return st.Ino
}

// writeJSON writes v as JSON to dir/name and returns the path.
func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// crictlJSON runs crictl with args and decodes its protobuf-JSON output
// (what `-o json` prints for lists) into m.
func (e *podEnv) crictlJSON(t *testing.T, m proto.Message, args ...string) {
	t.Helper()
	out := e.mustCrictl(t, args...)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("crictl %v: %v\n%s", args, err, out)
	}
}

// crictlInspect runs `crictl inspect|inspectp -o json ID` and decodes the
// "status" part into status; it returns the whole output, parsed.
func (e *podEnv) crictlInspect(t *testing.T, status proto.Message, args ...string) map[string]any {
	t.Helper()
	out := e.mustCrictl(t, args...)
	var whole map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &whole); err != nil {
		t.Fatalf("crictl %v: %v\n%s", args, err, out)
	}
	// crictl prints the times of a status as RFC 3339 strings; back to
	// the nanoseconds of the CRI field.
	var fields map[string]any
	if err := json.Unmarshal(whole["status"], &fields); err != nil {
		t.Fatalf("crictl %v: status: %v\n%s", args, err, out)
	}
	for _, k := range []string{"createdAt", "startedAt", "finishedAt"} {
		if s, ok := fields[k].(string); ok {
			if tm, err := time.Parse(time.RFC3339Nano, s); err == nil {
				ns := int64(0)
				if tm.Year() > 1970 {
					ns = tm.UnixNano()
				}
				fields[k] = strconv.FormatInt(ns, 10)
			}
		}
	}
	b, _ := json.Marshal(fields)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, status); err != nil {
		t.Fatalf("crictl %v: status: %v\n%s", args, err, out)
	}
	var parsed map[string]any
	json.Unmarshal([]byte(out), &parsed)
	return parsed
}
