package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// callTimeout bounds each CRI call of the workload, as the kubelet's
// runtime request timeout does: a call held up by a hanging CNI plugin
// gives up, and its cancellation must clean up too.
const callTimeout = 15 * time.Second

// model is what the clients were told: the pods and containers whose
// creation a CRI call confirmed and whose removal none has confirmed yet.
// A call that failed leaves no entry, whatever it may have made: finding
// those is the orphan check's business, and the kubelet's.
type model struct {
	mu   sync.Mutex
	pods map[string]*podModel
	ctrs map[string]*ctrModel
	// seen is every ID any answer named, for the leak checks of things
	// that are named by ID on the host (cgroups).
	seen map[string]bool
	// violations are invariant breaches the clients saw themselves.
	violations []string
	ops        map[string]int // calls made, by kind and outcome
	// timeouts are the calls of this round that ran out of time: with no
	// hanging plugin to blame, corrald is stuck.
	timeouts []string
	// exitsChecked are the containers whose exit code was compared with
	// what their command ended with.
	exitsChecked map[string]bool
}

type podModel struct {
	id, name   string
	client     int
	hostPort   int32
	shimKilled bool // its shim was killed: its containers' exits are lost
}

type ctrModel struct {
	id, pod string
	// want is the exit code the command ends with by itself, -1 for a
	// command that runs until stopped.
	want    int32
	started bool // StartContainer said yes
	stopped bool // a StopContainer was sent: SIGTERM or SIGKILL ends it
	killed  bool // the chaos killed its process: 137 is right too
}

func newModel() *model {
	return &model{pods: map[string]*podModel{}, ctrs: map[string]*ctrModel{}, seen: map[string]bool{}, ops: map[string]int{}, exitsChecked: map[string]bool{}}
}

func (m *model) violation(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.violations = append(m.violations, fmt.Sprintf(format, args...))
}

func (m *model) count(op string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	outcome := "ok"
	if err != nil {
		outcome = status.Code(err).String()
	}
	m.ops[op+" "+outcome]++
	if status.Code(err) == codes.DeadlineExceeded {
		m.timeouts = append(m.timeouts, op)
	}
}

// client is one concurrent user of corrald, like a kubelet with its own
// pods.
type client struct {
	n     int
	e     *env
	m     *model
	rng   *rand.Rand
	names int // how many pods it has named
	ports func() int32
}

// run does random operations until deadline.
func (c *client) run(deadline time.Time) {
	for time.Now().Before(deadline) {
		c.step()
	}
}

func (c *client) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), callTimeout)
}

func (c *client) myPods() []*podModel {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	var out []*podModel
	for _, p := range c.m.pods {
		if p.client == c.n {
			out = append(out, p)
		}
	}
	return out
}

func (c *client) ctrsOf(pod string) []*ctrModel {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	var out []*ctrModel
	for _, ct := range c.m.ctrs {
		if ct.pod == pod {
			out = append(out, ct)
		}
	}
	return out
}

// maxPodsPerClient keeps a client's pods few enough that a round's checks
// stay quick.
const maxPodsPerClient = 3

func (c *client) step() {
	pods := c.myPods()
	r := c.rng.IntN(100)
	switch {
	case len(pods) == 0 || (r < 20 && len(pods) < maxPodsPerClient):
		c.runPod()
	case r < 50:
		c.createContainer(pick(c.rng, pods))
	case r < 60:
		c.stopContainer(pick(c.rng, pods))
	case r < 68:
		c.removeContainer(pick(c.rng, pods))
	case r < 75:
		c.removePod(pick(c.rng, pods))
	case r < 88:
		c.exec(pick(c.rng, pods))
	case r < 94:
		c.pull()
	default:
		c.removeImage()
	}
	// A kubelet does not hammer: a short pause between calls.
	time.Sleep(time.Duration(c.rng.IntN(100)) * time.Millisecond)
}

func pick[T any](rng *rand.Rand, s []T) T { return s[rng.IntN(len(s))] }

func (c *client) runPod() {
	c.names++
	name := fmt.Sprintf("c%d-p%d", c.n, c.names)
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "chaos", Uid: fmt.Sprintf("uid-%d-%d-%d", c.n, c.names, c.rng.Uint32())},
		Hostname: name,
		Labels:   map[string]string{"chaos-client": fmt.Sprint(c.n)},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
		}},
	}
	var port int32
	if c.rng.IntN(4) == 0 {
		port = c.ports()
		cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: port, HostIp: "127.0.0.1"}}
	}
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.e.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	c.m.count("RunPodSandbox", err)
	if err != nil {
		return
	}
	c.m.mu.Lock()
	c.m.pods[resp.PodSandboxId] = &podModel{id: resp.PodSandboxId, name: name, client: c.n, hostPort: port}
	c.m.seen[resp.PodSandboxId] = true
	c.m.mu.Unlock()
}

func (c *client) createContainer(p *podModel) {
	if len(c.ctrsOf(p.id)) >= 3 {
		return
	}
	want := int32(-1)
	cmd := []string{"sleep", "100000"}
	if c.rng.IntN(2) == 0 {
		want = int32(c.rng.IntN(6))
		cmd = []string{"sh", "-c", fmt.Sprintf("sleep 0.%d; exit %d", c.rng.IntN(10), want)}
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("ct%d", c.rng.Uint32())},
		Image:    &runtimeapi.ImageSpec{Image: c.e.images[0]},
		Command:  cmd,
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
		}},
	}
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.e.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.id, Config: cfg})
	c.m.count("CreateContainer", err)
	if err != nil {
		return
	}
	ct := &ctrModel{id: resp.ContainerId, pod: p.id, want: want}
	c.m.mu.Lock()
	c.m.ctrs[ct.id] = ct
	c.m.seen[ct.id] = true
	c.m.mu.Unlock()
	ctx2, cancel2 := c.ctx()
	defer cancel2()
	_, err = c.e.rt.StartContainer(ctx2, &runtimeapi.StartContainerRequest{ContainerId: ct.id})
	c.m.count("StartContainer", err)
	if err == nil {
		c.m.mu.Lock()
		ct.started = true
		c.m.mu.Unlock()
	}
}

func (c *client) someContainer(p *podModel) *ctrModel {
	cs := c.ctrsOf(p.id)
	if len(cs) == 0 {
		return nil
	}
	return pick(c.rng, cs)
}

func (c *client) stopContainer(p *podModel) {
	ct := c.someContainer(p)
	if ct == nil {
		return
	}
	c.m.mu.Lock()
	ct.stopped = true
	c.m.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	_, err := c.e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ct.id, Timeout: int64(c.rng.IntN(2))})
	c.m.count("StopContainer", err)
}

func (c *client) removeContainer(p *podModel) {
	ct := c.someContainer(p)
	if ct == nil {
		return
	}
	c.m.mu.Lock()
	ct.stopped = true
	c.m.mu.Unlock()
	ctx, cancel := c.ctx()
	defer cancel()
	_, err := c.e.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ct.id})
	c.m.count("StopContainer", err)
	if err != nil {
		return
	}
	_, err = c.e.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ct.id})
	c.m.count("RemoveContainer", err)
	if err == nil {
		c.m.mu.Lock()
		delete(c.m.ctrs, ct.id)
		c.m.mu.Unlock()
	}
}

// removePod does what the kubelet does: stop the sandbox (which stops its
// containers), remove the containers, remove the sandbox.
func (c *client) removePod(p *podModel) {
	ctx, cancel := c.ctx()
	defer cancel()
	for _, ct := range c.ctrsOf(p.id) {
		c.m.mu.Lock()
		ct.stopped = true
		c.m.mu.Unlock()
	}
	_, err := c.e.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.id})
	c.m.count("StopPodSandbox", err)
	if err != nil {
		return
	}
	for _, ct := range c.ctrsOf(p.id) {
		_, err := c.e.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ct.id})
		c.m.count("RemoveContainer", err)
		if err != nil {
			return
		}
		c.m.mu.Lock()
		delete(c.m.ctrs, ct.id)
		c.m.mu.Unlock()
	}
	_, err = c.e.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id})
	c.m.count("RemovePodSandbox", err)
	if err == nil {
		c.m.mu.Lock()
		delete(c.m.pods, p.id)
		c.m.mu.Unlock()
	}
}

// exec runs a command that exits with a code of the client's choosing in
// a running container: an answer must carry that code and output.
func (c *client) exec(p *podModel) {
	ct := c.someContainer(p)
	if ct == nil || ct.want >= 0 {
		return
	}
	code := int32(c.rng.IntN(4))
	word := fmt.Sprintf("w%d", c.rng.Uint32())
	ctx, cancel := c.ctx()
	defer cancel()
	resp, err := c.e.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ct.id, Cmd: []string{"sh", "-c", fmt.Sprintf("echo %s; exit %d", word, code)}, Timeout: 10})
	c.m.count("ExecSync", err)
	if err != nil {
		return
	}
	c.m.mu.Lock()
	killed := ct.killed
	c.m.mu.Unlock()
	if killed && resp.ExitCode == 137 {
		// The chaos killed the container's init meanwhile, and the
		// kernel every process of its PID namespace with it.
		return
	}
	if resp.ExitCode != code || strings.TrimSpace(string(resp.Stdout)) != word {
		c.m.violation("ExecSync in %s: exit code %d and stdout %q, want %d and %q", ct.id, resp.ExitCode, resp.Stdout, code, word)
	}
}

func (c *client) pull() {
	ref := pick(c.rng, c.e.images)
	ctx, cancel := c.ctx()
	defer cancel()
	_, err := c.e.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	c.m.count("PullImage", err)
}

// removeImage removes one of the images no container runs.
func (c *client) removeImage() {
	ref := c.e.images[1+c.rng.IntN(len(c.e.images)-1)]
	ctx, cancel := c.ctx()
	defer cancel()
	_, err := c.e.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	c.m.count("RemoveImage", err)
}
