package nri

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/corral-runtime/corral/metadata"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fakeRuntime is corrald as NRI sees it: what Snapshot lists, and the
// updates and evictions plugins asked for.
type fakeRuntime struct {
	mu      sync.Mutex
	pods    []*api.PodSandbox
	ctrs    []*api.Container
	updates []*api.ContainerUpdate
}

func (f *fakeRuntime) Snapshot(context.Context) ([]*api.PodSandbox, []*api.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pods), slices.Clone(f.ctrs), nil
}

func (f *fakeRuntime) UpdateContainers(_ context.Context, u []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, u...)
	return nil, nil
}

func (f *fakeRuntime) EvictContainers(context.Context, []*api.ContainerEviction) ([]*api.ContainerEviction, error) {
	return nil, nil
}

// plugin records the events it gets, as "Event id", and adjusts what the
// test asks it to.
type plugin struct {
	mu     sync.Mutex
	events []string
	synced chan []string // the IDs of each Synchronize

	failCreate bool
	memLimit   int64 // set on UpdateContainer when not 0
}

func (p *plugin) record(ev, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev+" "+id)
}

func (p *plugin) got() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

func (p *plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
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

func (p *plugin) RunPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RunPodSandbox", pod.GetId())
	return nil
}

func (p *plugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("StopPodSandbox", pod.GetId())
	return nil
}

func (p *plugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RemovePodSandbox", pod.GetId())
	return nil
}

func (p *plugin) CreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.record("CreateContainer", c.GetId())
	if p.failCreate {
		return nil, nil, errors.New("induced failure")
	}
	adj := &api.ContainerAdjustment{}
	adj.AddEnv("FROM_NRI", "yes")
	adj.AddAnnotation("example.com/nri", "seen")
	return adj, nil, nil
}

func (p *plugin) StartContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("StartContainer", c.GetId())
	return nil
}

func (p *plugin) UpdateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container, _ *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	p.record("UpdateContainer", c.GetId())
	if p.memLimit == 0 {
		return nil, nil
	}
	u := &api.ContainerUpdate{ContainerId: c.GetId()}
	u.SetLinuxMemoryLimit(p.memLimit)
	return []*api.ContainerUpdate{u}, nil
}

func (p *plugin) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.record("StopContainer", c.GetId())
	return nil, nil
}

func (p *plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("RemoveContainer", c.GetId())
	return nil
}

// start runs an NRI for rt on a socket of the test's own.
func start(t *testing.T, rt Runtime) (*NRI, string) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "nri.sock")
	n, err := New(Config{SocketPath: sock, PluginPath: filepath.Join(dir, "plugins"), PluginConfigPath: filepath.Join(dir, "conf.d")},
		"corral", "test", rt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n, sock
}

// connect connects p as plugin IDX-NAME and waits for its Synchronize,
// returning the IDs it was given.
func connect(t *testing.T, sock, name, idx string, p *plugin) []string {
	t.Helper()
	p.synced = make(chan []string, 4)
	s, err := stub.New(p, stub.WithSocketPath(sock), stub.WithPluginName(name), stub.WithPluginIdx(idx))
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
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin was not synchronized")
	}
	return nil
}

func TestEvents(t *testing.T) {
	rt := &fakeRuntime{}
	n, sock := start(t, rt)
	p := &plugin{memLimit: 1 << 30}
	connect(t, sock, "recorder", "10", p)
	ctx := context.Background()

	pod := &api.PodSandbox{Id: "pod1", Name: "web", Namespace: "ns", Uid: "u1"}
	ctr := &api.Container{Id: "ctr1", PodSandboxId: "pod1", Name: "app"}
	// As corrald does: creations under the sync block.
	unblock := n.BlockSync()
	if err := n.RunPodSandbox(ctx, pod); err != nil {
		t.Fatal(err)
	}
	sp := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}, Env: []string{"PATH=/bin", "FROM_NRI=no"}}}
	if err := n.CreateContainer(ctx, pod, ctr, sp); err != nil {
		t.Fatal(err)
	}
	unblock()
	if !slices.Equal(sp.Process.Env, []string{"PATH=/bin", "FROM_NRI=yes"}) || sp.Annotations["example.com/nri"] != "seen" {
		t.Errorf("adjusted spec: env %q annotations %v; want FROM_NRI=yes replacing the old value and the annotation", sp.Process.Env, sp.Annotations)
	}
	if err := n.StartContainer(ctx, pod, ctr); err != nil {
		t.Fatal(err)
	}
	limit := int64(1 << 20)
	res, err := n.UpdateContainer(ctx, pod, ctr, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Memory.Limit; got == nil || *got != 1<<30 {
		t.Errorf("updated memory limit %v, want the plugin's 1 GiB", got)
	}
	// A stop told once, whoever tells it: the kubelet's StopContainer and
	// the exit the shim reports.
	n.StopContainer(ctx, pod, ctr)
	n.ContainerExited(pod, ctr)
	n.StopContainer(ctx, pod, ctr)
	n.RemoveContainer(ctx, pod, ctr)
	n.RemoveContainer(ctx, pod, ctr)
	n.StopPodSandbox(ctx, pod)
	n.StopPodSandbox(ctx, pod)
	n.RemovePodSandbox(ctx, pod)
	n.RemovePodSandbox(ctx, pod)
	n.exits.Wait()

	want := []string{
		"RunPodSandbox pod1", "CreateContainer ctr1", "StartContainer ctr1", "UpdateContainer ctr1",
		"StopContainer ctr1", "RemoveContainer ctr1", "StopPodSandbox pod1", "RemovePodSandbox pod1",
	}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

func TestExitedContainerIsStoppedOnce(t *testing.T) {
	n, sock := start(t, &fakeRuntime{})
	p := &plugin{}
	connect(t, sock, "recorder", "10", p)
	ctx := context.Background()
	pod := &api.PodSandbox{Id: "pod1"}
	ctr := &api.Container{Id: "ctr1", PodSandboxId: "pod1"}
	unblock := n.BlockSync()
	n.RunPodSandbox(ctx, pod)
	n.CreateContainer(ctx, pod, ctr, &specs.Spec{})
	unblock()
	n.StartContainer(ctx, pod, ctr)
	// Exits by itself: the stop reaches plugins with no CRI call.
	n.ContainerExited(pod, ctr)
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(p.got(), "StopContainer ctr1") {
		if time.Now().After(deadline) {
			t.Fatalf("no StopContainer after the exit: %q", p.got())
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.StopContainer(ctx, pod, ctr)
	n.RemoveContainer(ctx, pod, ctr)
	want := []string{"RunPodSandbox pod1", "CreateContainer ctr1", "StartContainer ctr1", "StopContainer ctr1", "RemoveContainer ctr1"}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

func TestCreateContainerHookError(t *testing.T) {
	n, sock := start(t, &fakeRuntime{})
	p := &plugin{failCreate: true}
	connect(t, sock, "failer", "10", p)
	ctx := context.Background()
	pod := &api.PodSandbox{Id: "pod1"}
	ctr := &api.Container{Id: "ctr1"}
	unblock := n.BlockSync()
	n.RunPodSandbox(ctx, pod)
	sp := &specs.Spec{Process: &specs.Process{}}
	err := n.CreateContainer(ctx, pod, ctr, sp)
	unblock()
	if err == nil || !strings.Contains(err.Error(), "induced failure") {
		t.Fatalf("CreateContainer: %v, want the plugin's error", err)
	}
	if len(sp.Process.Env) != 0 {
		t.Errorf("a failed hook adjusted the spec: %q", sp.Process.Env)
	}
	// The rollback tells plugins the container is gone; a start never
	// comes.
	n.UndoCreateContainer(ctx, pod, ctr)
	want := []string{"RunPodSandbox pod1", "CreateContainer ctr1", "StopContainer ctr1", "RemoveContainer ctr1"}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

// TestEventsReachAPluginBeingSynchronized: an event right after a plugin's
// Synchronize began (critest's stub reports itself ready from inside it)
// waits until the plugin is registered, and reaches it.
func TestEventsReachAPluginBeingSynchronized(t *testing.T) {
	n, sock := start(t, &fakeRuntime{})
	for i := range 20 {
		p := &plugin{}
		connect(t, sock, fmt.Sprintf("p%d", i), "10", p)
		n.StopPodSandbox(context.Background(), &api.PodSandbox{Id: "unknown"}) // nothing to tell
		n.RemovePodSandbox(context.Background(), &api.PodSandbox{Id: "unknown"})
		pod := &api.PodSandbox{Id: fmt.Sprintf("pod%d", i)}
		unblock := n.BlockSync()
		n.RunPodSandbox(context.Background(), pod)
		unblock()
		if got := p.got(); !slices.Contains(got, "RunPodSandbox "+pod.Id) {
			t.Fatalf("plugin %d missed the event right after its Synchronize: %q", i, got)
		}
	}
}

func TestSynchronize(t *testing.T) {
	rt := &fakeRuntime{
		pods: []*api.PodSandbox{{Id: "pod1"}},
		ctrs: []*api.Container{
			{Id: "running", PodSandboxId: "pod1", State: api.ContainerState_CONTAINER_RUNNING},
			{Id: "exited", PodSandboxId: "pod1", State: api.ContainerState_CONTAINER_STOPPED},
		},
	}
	n, sock := start(t, rt)
	p := &plugin{}
	if ids := connect(t, sock, "late", "10", p); !slices.Equal(ids, []string{"pod1", "running", "exited"}) {
		t.Errorf("Synchronize got %q", ids)
	}
	// What existed before NRI started is known: its stop and removal are
	// told, an exited container's stop is not told again.
	ctx := context.Background()
	pod := rt.pods[0]
	for _, c := range rt.ctrs {
		n.RemoveContainer(ctx, pod, c)
	}
	n.RemovePodSandbox(ctx, pod)
	want := []string{"StopContainer running", "RemoveContainer running", "RemoveContainer exited", "StopPodSandbox pod1", "RemovePodSandbox pod1"}
	if got := p.got(); !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

// TestSynchronizeWaitsForCreations: a plugin connecting while a container
// is between its hook and becoming visible is synchronized after it, so it
// sees the container in its Synchronize.
func TestSynchronizeWaitsForCreations(t *testing.T) {
	rt := &fakeRuntime{}
	n, sock := start(t, rt)
	unblock := n.BlockSync()
	connected := make(chan []string, 1)
	go func() { connected <- connect(t, sock, "late", "10", &plugin{}) }()
	select {
	case ids := <-connected:
		t.Fatalf("synchronized (%q) while a creation held the block", ids)
	case <-time.After(300 * time.Millisecond):
	}
	rt.mu.Lock()
	rt.ctrs = append(rt.ctrs, &api.Container{Id: "new", State: api.ContainerState_CONTAINER_CREATED})
	rt.mu.Unlock()
	unblock()
	select {
	case ids := <-connected:
		if !slices.Equal(ids, []string{"new"}) {
			t.Errorf("Synchronize got %q, want the container made meanwhile", ids)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never synchronized")
	}
}

func TestDisabledIsANoop(t *testing.T) {
	var n *NRI
	ctx := context.Background()
	pod, ctr := &api.PodSandbox{Id: "p"}, &api.Container{Id: "c"}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n.BlockSync()()
	if err := n.RunPodSandbox(ctx, pod); err != nil {
		t.Fatal(err)
	}
	sp := &specs.Spec{}
	if err := n.CreateContainer(ctx, pod, ctr, sp); err != nil {
		t.Fatal(err)
	}
	res := &specs.LinuxResources{}
	if got, err := n.UpdateContainer(ctx, pod, ctr, res); err != nil || got != res {
		t.Errorf("UpdateContainer = %v, %v; want its input", got, err)
	}
	n.StartContainer(ctx, pod, ctr)
	n.StopContainer(ctx, pod, ctr)
	n.ContainerExited(pod, ctr)
	n.RemoveContainer(ctx, pod, ctr)
	n.StopPodSandbox(ctx, pod)
	n.RemovePodSandbox(ctx, pod)
	n.Stop()
}

func TestSpecGen(t *testing.T) {
	sp := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/old"}}}}
	g := specGen{sp}
	if err := g.AddOrReplaceLinuxNamespace("network", "/new"); err != nil {
		t.Fatal(err)
	}
	if err := g.AddOrReplaceLinuxNamespace("ipc", ""); err != nil {
		t.Fatal(err)
	}
	if err := g.AddOrReplaceLinuxNamespace("bogus", ""); err == nil {
		t.Error("an unknown namespace was accepted")
	}
	if got := fmt.Sprint(sp.Linux.Namespaces); got != "[{network /new} {ipc }]" {
		t.Errorf("namespaces %s", got)
	}
	if err := g.RemoveLinuxNamespace("net"); err != nil || len(sp.Linux.Namespaces) != 1 {
		t.Errorf("remove net: %v, %v", err, sp.Linux.Namespaces)
	}
	g.AddDevice(specs.LinuxDevice{Path: "/dev/a", Major: 1})
	g.AddDevice(specs.LinuxDevice{Path: "/dev/a", Major: 2})
	g.AddDevice(specs.LinuxDevice{Path: "/dev/b"})
	g.RemoveDevice("/dev/b")
	if len(sp.Linux.Devices) != 1 || sp.Linux.Devices[0].Major != 2 {
		t.Errorf("devices %+v", sp.Linux.Devices)
	}
	g.AddProcessEnv("A", "1")
	g.AddProcessEnv("B", "2")
	g.AddProcessEnv("A", "3")
	if !slices.Equal(sp.Process.Env, []string{"A=3", "B=2"}) {
		t.Errorf("env %q", sp.Process.Env)
	}
	g.AddLinuxResourcesHugepageLimit("2MB", 1)
	g.AddLinuxResourcesHugepageLimit("2MB", 2)
	if l := sp.Linux.Resources.HugepageLimits; len(l) != 1 || l[0].Limit != 2 {
		t.Errorf("hugepages %+v", l)
	}
	g.AddMount(specs.Mount{Destination: "/a"})
	g.AddMount(specs.Mount{Destination: "/b"})
	g.RemoveMount("/a")
	if len(g.Mounts()) != 1 || g.Mounts()[0].Destination != "/b" {
		t.Errorf("mounts %+v", g.Mounts())
	}
	if err := g.SetLinuxRootPropagation("sideways"); err == nil {
		t.Error("a bad rootfs propagation was accepted")
	}
	g.SetLinuxResourcesMemoryLimit(5)
	g.SetLinuxResourcesCPUShares(7)
	if *sp.Linux.Resources.Memory.Limit != 5 || *sp.Linux.Resources.CPU.Shares != 7 {
		t.Error("resources not set")
	}
}

func TestContainerFromSparseSpecs(t *testing.T) {
	// A spec may lack any part; the conversion must not panic.
	for _, sp := range []*specs.Spec{nil, {}, {Process: &specs.Process{}}, {Linux: &specs.Linux{}}, {Process: &specs.Process{}, Linux: &specs.Linux{}}} {
		c := Container(metadata.Container{ID: "c"}, sp)
		if c.GetId() != "c" {
			t.Errorf("id %q", c.GetId())
		}
	}
	if p := Pod(metadata.Sandbox{ID: "p"}, nil, ""); p.GetId() != "p" {
		t.Errorf("pod id %q", p.GetId())
	}
}

// TestSocketInUse: a socket another runtime serves is left to it; the one a
// killed corrald left behind is taken over.
func TestSocketInUse(t *testing.T) {
	for _, live := range []bool{true, false} {
		t.Run(fmt.Sprintf("live=%v", live), func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "nri.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			if live {
				defer l.Close()
			} else {
				l.Close()
			}
			n, err := New(Config{SocketPath: sock, PluginPath: filepath.Join(dir, "plugins"), PluginConfigPath: filepath.Join(dir, "conf.d")},
				"corral", "test", &fakeRuntime{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = n.Start(context.Background())
			if !live {
				if err != nil {
					t.Fatalf("a stale socket: %v", err)
				}
				n.Stop()
				return
			}
			if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), sock) {
				t.Fatalf("a live socket: got %v, want AlreadyExists naming %s", err, sock)
			}
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatalf("the other runtime's socket is gone: %v", err)
			}
			c.Close()
		})
	}
}
