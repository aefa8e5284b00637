package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestNRI runs corrald with NRI plugins of both kinds: one it starts itself
// from its plugin directory (integration/nriplugin, built here), which adds
// an environment variable and an annotation to every container, and one
// that connects to its socket late, as critest's do. The container sees the
// adjustment, plugins get every event in order, a late plugin is
// synchronized with what exists, a failing CreateContainer hook fails the
// call and leaves nothing, and the started plugin goes with corrald.
func TestNRI(t *testing.T) {
	var pluginDir, events string
	e := newPodEnvWithConfig(t, loopbackConflist, func(dir string) string {
		pluginDir = filepath.Join(dir, "nri", "plugins")
		confDir := filepath.Join(dir, "nri", "conf.d")
		events = filepath.Join(dir, "nri", "events")
		build := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "10-envinject"), "./nriplugin")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build the test plugin: %v\n%s", err, out)
		}
		os.MkdirAll(confDir, 0o755)
		os.WriteFile(filepath.Join(confDir, "10-envinject.conf"), []byte("events="+events+"\nenv=from-nri\n"), 0o644)
		return fmt.Sprintf("[nri]\nplugin_path = %q\nplugin_config_path = %q\n", pluginDir, confDir)
	})
	socket := filepath.Join(e.state, "nri.sock")
	waitUntil(t, 10*time.Second, "the started plugin registered", func() (bool, string) {
		b, _ := os.ReadFile(events)
		return strings.Contains(string(b), "Synchronize"), string(b)
	})

	pod := e.podConfig("nri")
	podID := e.runPod(t, pod)
	cid, _ := e.runContainer(t, podID, pod, e.containerConfig("app", "sleep", "1000"))
	resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: []string{"sh", "-c", "echo $CORRAL_NRI"}, Timeout: 10})
	if err != nil || string(resp.Stdout) != "from-nri\n" {
		t.Errorf("CORRAL_NRI in the container: %q %v, want the plugin's from-nri", resp.GetStdout(), err)
	}
	if _, info := e.containerStatus(t, cid); !strings.Contains(info["info"], `"corral.test/nri":"adjusted"`) {
		t.Errorf("the spec lacks the plugin's annotation: %s", info["info"])
	}

	if _, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{
		ContainerId: cid, Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 256 << 20},
	}); err != nil {
		t.Fatal(err)
	}

	// A plugin that connects now is told of the pod and the container.
	late := &recordingPlugin{failCreate: 1}
	synced := late.connect(t, socket, "late", "20")
	if !slices.Contains(synced, podID) || !slices.Contains(synced, cid) {
		t.Errorf("the late plugin's Synchronize got %q, want pod %s and container %s", synced, podID, cid)
	}

	// Its CreateContainer hook fails once: the call fails with its error,
	// and leaves no container; the retry works.
	cfg := e.containerConfig("second", "sleep", "1000")
	_, err = e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err == nil || !strings.Contains(err.Error(), "induced CreateContainer failure") {
		t.Fatalf("CreateContainer with a failing hook: %v", err)
	}
	if n := len(e.listContainers(t, &runtimeapi.ContainerFilter{PodSandboxId: podID})); n != 1 {
		t.Errorf("%d containers after the failed creation, want 1", n)
	}
	if m := mountsUnder(filepath.Join(e.state, "containers")); len(m) != 1 {
		t.Errorf("mounts after the failed creation: %q, want the first container's rootfs", m)
	}
	second, _ := e.runContainer(t, podID, pod, cfg)

	// One exits by itself: plugins hear of the stop with no CRI call.
	third := e.createContainer(t, podID, pod, e.containerConfig("third", "sh", "-c", "exit 3"))
	e.startContainer(t, third)
	e.waitContainer(t, third, runtimeapi.ContainerState_CONTAINER_EXITED, 30*time.Second)
	waitUntil(t, 10*time.Second, "StopContainer for a container that exited", func() (bool, string) {
		got := late.got()
		return slices.Contains(got, "StopContainer "+third), strings.Join(got, ", ")
	})
	e.removePod(t, podID)

	want := func(id string, evs ...string) []string {
		out := make([]string, len(evs))
		for i, ev := range evs {
			out[i] = ev + " " + id
		}
		return out
	}
	started := readLines(t, events)
	for _, seq := range [][]string{
		want(podID, "RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"),
		want(cid, "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer",
			"UpdateContainer", "PostUpdateContainer", "StopContainer", "RemoveContainer"),
		want(second, "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer", "StopContainer", "RemoveContainer"),
	} {
		if got := only(started, seq); !slices.Equal(got, seq) {
			t.Errorf("the started plugin's events of %s:\n got %q\nwant %q", strings.Fields(seq[0])[1], got, seq)
		}
	}
	lateGot := late.got()
	for _, seq := range [][]string{
		want(podID, "StopPodSandbox", "RemovePodSandbox"),
		want(cid, "StopContainer", "RemoveContainer"),
		want(second, "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer"),
		want(third, "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer"),
	} {
		if got := only(lateGot, seq); !slices.Equal(got, seq) {
			t.Errorf("the late plugin's events of %s:\n got %q\nwant %q", strings.Fields(seq[0])[1], got, seq)
		}
	}
	e.checkNoLeaks(t)

	// The plugin corrald started ends with it.
	plugin := filepath.Join(pluginDir, "10-envinject")
	if pids := processesOf(plugin); len(pids) != 1 {
		t.Errorf("started plugin processes: %v, want one", pids)
	}
	if err := e.d.stop(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the started plugin exits with corrald", func() (bool, string) {
		pids := processesOf(plugin)
		return len(pids) == 0, fmt.Sprint(pids)
	})
}

// only keeps the lines of got that are in want, in got's order.
func only(got, want []string) []string {
	var out []string
	for _, g := range got {
		if slices.Contains(want, g) {
			out = append(out, g)
		}
	}
	return out
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// processesOf lists the pids running the executable at path.
func processesOf(path string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == path {
			pids = append(pids, pid)
		}
	}
	return pids
}

// recordingPlugin is an NRI plugin in the test's process: it records its
// events as "EVENT ID" and fails the first failCreate CreateContainers.
type recordingPlugin struct {
	mu         sync.Mutex
	events     []string
	synced     chan []string
	failCreate int
}

func (p *recordingPlugin) record(ev, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev+" "+id)
}

func (p *recordingPlugin) got() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

// connect connects the plugin to socket and returns the IDs of the pods
// and containers its Synchronize got.
func (p *recordingPlugin) connect(t *testing.T, socket, name, idx string) []string {
	t.Helper()
	p.synced = make(chan []string, 1)
	s, err := stub.New(p, stub.WithSocketPath(socket), stub.WithPluginName(name), stub.WithPluginIdx(idx))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); s.Stop(); <-done })
	select {
	case ids := <-p.synced:
		return ids
	case <-time.After(20 * time.Second):
		t.Fatal("the plugin was not synchronized")
	}
	return nil
}

func (p *recordingPlugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	var ids []string
	for _, x := range pods {
		ids = append(ids, x.GetId())
	}
	for _, x := range ctrs {
		ids = append(ids, x.GetId())
	}
	p.synced <- ids
	return nil, nil
}

func (p *recordingPlugin) RunPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RunPodSandbox", pod.GetId())
	return nil
}

func (p *recordingPlugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("StopPodSandbox", pod.GetId())
	return nil
}

func (p *recordingPlugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RemovePodSandbox", pod.GetId())
	return nil
}

func (p *recordingPlugin) CreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.mu.Lock()
	fail := p.failCreate > 0
	p.failCreate--
	p.mu.Unlock()
	if fail {
		p.record("FailedCreateContainer", c.GetId())
		return nil, nil, errors.New("induced CreateContainer failure")
	}
	p.record("CreateContainer", c.GetId())
	return nil, nil, nil
}

func (p *recordingPlugin) StartContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("StartContainer", c.GetId())
	return nil
}

func (p *recordingPlugin) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.record("StopContainer", c.GetId())
	return nil, nil
}

func (p *recordingPlugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("RemoveContainer", c.GetId())
	return nil
}
