// Package nri connects corrald to NRI plugins (the Node Resource Interface,
// github.com/containerd/nri): programs that are told of every pod and
// container event and may adjust a container's OCI spec before it is
// created, as with containerd and CRI-O.
//
// corrald runs NRI's runtime side (pkg/adaptation): it listens on a unix
// socket for plugins that connect by themselves, and starts the ones
// installed in the plugin directory. Nothing of it runs in the shims.
//
// # The contract corrald keeps
//
//   - Events reach plugins in the order they happen, one at a time:
//     RunPodSandbox, then CreateContainer, StartContainer, StopContainer,
//     RemoveContainer for each container, then StopPodSandbox and
//     RemovePodSandbox. StopContainer comes once per container, whether the
//     kubelet stopped it or it exited by itself; a second StopPodSandbox of a
//     stopped pod sends nothing.
//   - A pod or container is not visible through CRI (List, Status) while its
//     RunPodSandbox or CreateContainer hook runs; the caller hides it (see
//     cri/server), and a hook's error fails the CRI call, which rolls back.
//   - A plugin that connects is synchronized with every visible pod and
//     container. Creations take a shared lock (BlockSync) from before their
//     hook until the object is visible, and synchronization the exclusive
//     one, so an object is either in the plugin's Synchronize or reaches it
//     as an event afterwards: none is lost or told twice.
//
// Adjustments a plugin returns from CreateContainer are applied to the OCI
// spec by NRI's own generate package; plugin requests to update or evict
// containers go to the Runtime corrald gives New.
package nri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	"github.com/containerd/nri/pkg/runtime-tools/generate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Config is what New needs to know, from corrald's [nri] table.
type Config struct {
	// SocketPath is where plugins connect; "" disables connections.
	SocketPath string
	// PluginPath holds plugins corrald starts itself; PluginConfigPath their
	// configuration drop-ins.
	PluginPath, PluginConfigPath string
	// RegistrationTimeout bounds a plugin's registration, RequestTimeout
	// each request to a plugin; zero keeps NRI's defaults.
	RegistrationTimeout, RequestTimeout time.Duration
}

// Runtime is what plugins may ask of corrald beyond the lifecycle events.
type Runtime interface {
	// Snapshot lists the visible pods and containers, for synchronizing a
	// plugin that connects.
	Snapshot(ctx context.Context) ([]*api.PodSandbox, []*api.Container, error)
	// UpdateContainers applies resource updates and returns those that
	// failed.
	UpdateContainers(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error)
	// EvictContainers stops containers and returns those that could not be.
	EvictContainers(ctx context.Context, evict []*api.ContainerEviction) ([]*api.ContainerEviction, error)
}

// state is where NRI believes a pod or container stands, which decides
// whether a stop or removal still has to be told.
type state int

const (
	gone state = iota
	created
	running
	stopped
)

// NRI relays corrald's pod and container events to plugins. A nil *NRI is
// valid and does nothing: that is corrald with NRI disabled.
type NRI struct {
	adapt *adaptation.Adaptation
	rt    Runtime
	log   *slog.Logger

	// mu serializes the events, so plugins see them in order, and guards
	// states.
	mu     sync.Mutex
	states map[string]state
	// exits are the exit notifications in flight, which Stop waits for;
	// once closed, no more start.
	// socket is where plugins connect ("" when they cannot).
	socket string

	exitMu sync.Mutex
	closed bool
	exits  sync.WaitGroup
}

// New prepares NRI for corrald (name and version are what plugins are told
// the runtime is). It starts nothing: see Start.
func New(cfg Config, name, version string, rt Runtime, log *slog.Logger) (*NRI, error) {
	if log == nil {
		log = slog.Default()
	}
	n := &NRI{rt: rt, log: log.With("component", "nri"), states: map[string]state{}, socket: cfg.SocketPath}
	// NRI's logger and timeouts are the library's globals: one corrald
	// has one NRI. The logger is set once, since the library's goroutines
	// read it unlocked.
	setLogger.Do(func() { nrilog.Set(slogger{n.log}) })
	if cfg.RegistrationTimeout > 0 {
		adaptation.SetPluginRegistrationTimeout(cfg.RegistrationTimeout)
	}
	if cfg.RequestTimeout > 0 {
		adaptation.SetPluginRequestTimeout(cfg.RequestTimeout)
	}
	opts := []adaptation.Option{
		adaptation.WithPluginPath(cfg.PluginPath),
		adaptation.WithPluginConfigPath(cfg.PluginConfigPath),
	}
	if cfg.SocketPath == "" {
		opts = append(opts, adaptation.WithDisabledExternalConnections())
	} else {
		opts = append(opts, adaptation.WithSocketPath(cfg.SocketPath))
	}
	a, err := adaptation.New(name, version, n.synchronize, n.update, opts...)
	if err != nil {
		return nil, fmt.Errorf("nri: %w", err)
	}
	n.adapt = a
	return n, nil
}

// Start learns the state of existing pods and containers (so that their
// later stops and removals are told), starts the installed plugins, and
// listens for plugins.
func (n *NRI) Start(ctx context.Context) error {
	if n == nil {
		return nil
	}
	if err := socketFree(ctx, n.socket); err != nil {
		return err
	}
	pods, ctrs, err := n.rt.Snapshot(ctx)
	if err != nil {
		return fmt.Errorf("nri: list pods and containers: %w", err)
	}
	n.mu.Lock()
	n.learn(pods, ctrs)
	n.mu.Unlock()
	if err := n.adapt.Start(); err != nil {
		return fmt.Errorf("nri: %w", err)
	}
	return nil
}

// socketFree fails if a live process serves path. The NRI library removes
// whatever is at its socket path before it listens, so on a node where
// containerd 2 or CRI-O already serves NRI at the default path, starting
// would silently take their plugins' socket away. A stale socket (nobody
// answers) is what a killed corrald leaves, and is fine to replace.
func socketFree(ctx context.Context, path string) error {
	if path == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil
	}
	c.Close()
	return fmt.Errorf("nri: %s is served by another process (another runtime's NRI?): corrald will not take it over; "+
		"set [nri] socket_path to a path of corral's own, or [nri] enable = false: %w", path, errdefs.ErrAlreadyExists)
}

// Stop disconnects the plugins and stops those corrald started.
func (n *NRI) Stop() {
	if n == nil {
		return
	}
	n.exitMu.Lock()
	n.closed = true
	n.exitMu.Unlock()
	n.exits.Wait()
	n.adapt.Stop()
}

// BlockSync holds off plugin synchronization until the returned function
// is called. A creation holds it from before its hook until its pod or
// container is visible: RunPodSandbox, CreateContainer and
// PostCreateContainer must be called under it. The other events take it
// themselves, which also makes them wait for a plugin that is being
// synchronized, so that it gets them. (It is a read lock that must not be
// taken twice: the other events must not be called under it.)
func (n *NRI) BlockSync() (unblock func()) {
	if n == nil {
		return func() {}
	}
	return n.block()
}

func (n *NRI) block() func() { return n.adapt.BlockPluginSync().Unblock }

// synchronize is NRI's SyncFn: it runs while no creation is between its
// hook and becoming visible.
func (n *NRI) synchronize(ctx context.Context, cb adaptation.SyncCB) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	pods, ctrs, err := n.rt.Snapshot(ctx)
	if err != nil {
		return err
	}
	n.learn(pods, ctrs)
	updates, err := cb(ctx, pods, ctrs)
	if err != nil {
		return err
	}
	if failed, err := n.rt.UpdateContainers(ctx, updates); err != nil || len(failed) > 0 {
		n.log.Warn("container updates asked at synchronization failed", "failed", len(failed), "error", err)
	}
	return nil
}

// update is NRI's UpdateFn: a plugin's unsolicited container updates.
func (n *NRI) update(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rt.UpdateContainers(ctx, updates)
}

// learn records the state of listed pods and containers; n.mu is held.
func (n *NRI) learn(pods []*api.PodSandbox, ctrs []*api.Container) {
	for _, p := range pods {
		if _, known := n.states[p.GetId()]; !known {
			n.states[p.GetId()] = running
		}
	}
	for _, c := range ctrs {
		switch c.GetState() {
		case api.ContainerState_CONTAINER_CREATED:
			n.states[c.GetId()] = created
		case api.ContainerState_CONTAINER_RUNNING, api.ContainerState_CONTAINER_PAUSED:
			n.states[c.GetId()] = running
		default:
			n.states[c.GetId()] = stopped
		}
	}
}

func (n *NRI) set(id string, s state) {
	if s == gone {
		delete(n.states, id)
		return
	}
	n.states[id] = s
}

func (n *NRI) needsStop(id string) bool {
	s := n.states[id]
	return s == created || s == running
}

func (n *NRI) needsRemoval(id string) bool { return n.states[id] != gone }

// RunPodSandbox tells plugins of a new pod, which is not yet visible. An
// error fails the pod's creation.
func (n *NRI) RunPodSandbox(ctx context.Context, pod *api.PodSandbox) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.adapt.RunPodSandbox(ctx, &adaptation.RunPodSandboxRequest{Pod: pod})
	n.set(pod.GetId(), running)
	if err != nil {
		return fmt.Errorf("NRI RunPodSandbox: %w", err)
	}
	return nil
}

// StopPodSandbox tells plugins that a pod's containers are stopped and
// the pod is stopping, once per pod. Plugins cannot stop a stop: their
// errors are logged.
func (n *NRI) StopPodSandbox(ctx context.Context, pod *api.PodSandbox) {
	if n == nil {
		return
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.needsStop(pod.GetId()) {
		return
	}
	err := n.adapt.StopPodSandbox(ctx, &adaptation.StopPodSandboxRequest{Pod: pod})
	n.set(pod.GetId(), stopped)
	n.logErr(err, "StopPodSandbox", "pod", pod.GetId())
}

// RemovePodSandbox tells plugins that a pod is gone.
func (n *NRI) RemovePodSandbox(ctx context.Context, pod *api.PodSandbox) {
	if n == nil {
		return
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.needsRemoval(pod.GetId()) {
		return
	}
	if n.needsStop(pod.GetId()) {
		n.logErr(n.adapt.StopPodSandbox(ctx, &adaptation.StopPodSandboxRequest{Pod: pod}), "StopPodSandbox", "pod", pod.GetId())
	}
	err := n.adapt.RemovePodSandbox(ctx, &adaptation.RemovePodSandboxRequest{Pod: pod})
	n.set(pod.GetId(), gone)
	n.logErr(err, "RemovePodSandbox", "pod", pod.GetId())
}

// CreateContainer asks plugins about a new container, which is not yet
// visible, and applies their adjustments to its spec sp. An error fails the
// creation; the caller then calls UndoCreateContainer.
func (n *NRI) CreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container, sp *specs.Spec) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	resp, err := n.adapt.CreateContainer(ctx, &adaptation.CreateContainerRequest{Pod: pod, Container: ctr})
	n.set(ctr.GetId(), created)
	if err != nil {
		return fmt.Errorf("NRI CreateContainer: %w", err)
	}
	if len(resp.GetEvict()) > 0 {
		if failed, err := n.rt.EvictContainers(ctx, resp.GetEvict()); err != nil || len(failed) > 0 {
			n.log.Warn("evictions asked at container creation failed", "container", ctr.GetId(), "failed", len(failed), "error", err)
		}
	}
	if len(resp.GetUpdate()) > 0 {
		if failed, err := n.rt.UpdateContainers(ctx, resp.GetUpdate()); err != nil || len(failed) > 0 {
			n.log.Warn("updates asked at container creation failed", "container", ctr.GetId(), "failed", len(failed), "error", err)
		}
	}
	if adj := resp.GetAdjust(); adj != nil {
		if err := generate.SpecGenerator(specGen{sp}).Adjust(adj); err != nil {
			return fmt.Errorf("NRI CreateContainer: apply the plugins' adjustments: %w", err)
		}
	}
	return nil
}

// UndoCreateContainer tells plugins that a container whose creation they
// were told of failed: it stopped and is gone.
func (n *NRI) UndoCreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.RemoveContainer(ctx, pod, ctr)
}

// PostCreateContainer tells plugins that a container was created.
func (n *NRI) PostCreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.logErr(n.adapt.PostCreateContainer(ctx, &adaptation.PostCreateContainerRequest{Pod: pod, Container: ctr}),
		"PostCreateContainer", "container", ctr.GetId())
}

// StartContainer tells plugins that a container is about to start; an
// error fails the start.
func (n *NRI) StartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	if n == nil {
		return nil
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.adapt.StartContainer(ctx, &adaptation.StartContainerRequest{Pod: pod, Container: ctr})
	n.set(ctr.GetId(), running)
	if err != nil {
		return fmt.Errorf("NRI StartContainer: %w", err)
	}
	return nil
}

// PostStartContainer tells plugins that a container started.
func (n *NRI) PostStartContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.logErr(n.adapt.PostStartContainer(ctx, &adaptation.PostStartContainerRequest{Pod: pod, Container: ctr}),
		"PostStartContainer", "container", ctr.GetId())
}

// UpdateContainer asks plugins about new resources for a container and
// returns the resources to apply: res, or what the plugins made of it.
func (n *NRI) UpdateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container, res *specs.LinuxResources) (*specs.LinuxResources, error) {
	if n == nil {
		return res, nil
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	resp, err := n.adapt.UpdateContainer(ctx, &adaptation.UpdateContainerRequest{
		Pod: pod, Container: ctr, LinuxResources: api.FromOCILinuxResources(res, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("NRI UpdateContainer: %w", err)
	}
	if len(resp.GetEvict()) > 0 {
		if failed, err := n.rt.EvictContainers(ctx, resp.GetEvict()); err != nil || len(failed) > 0 {
			n.log.Warn("evictions asked at container update failed", "container", ctr.GetId(), "failed", len(failed), "error", err)
		}
	}
	// The update of this container comes last; the others are side effects.
	var own *api.ContainerUpdate
	var others []*api.ContainerUpdate
	for _, u := range resp.GetUpdate() {
		if u.GetContainerId() == ctr.GetId() {
			own = u
		} else {
			others = append(others, u)
		}
	}
	if len(others) > 0 {
		if failed, err := n.rt.UpdateContainers(ctx, others); err != nil || len(failed) > 0 {
			n.log.Warn("updates asked at container update failed", "container", ctr.GetId(), "failed", len(failed), "error", err)
		}
	}
	if r := own.GetLinux().GetResources(); r != nil {
		return r.ToOCI(), nil
	}
	return res, nil
}

// PostUpdateContainer tells plugins that a container's resources changed.
func (n *NRI) PostUpdateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.logErr(n.adapt.PostUpdateContainer(ctx, &adaptation.PostUpdateContainerRequest{Pod: pod, Container: ctr}),
		"PostUpdateContainer", "container", ctr.GetId())
}

// StopContainer tells plugins that a container stopped, once per
// container, whoever stopped it.
func (n *NRI) StopContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopContainer(ctx, pod, ctr)
}

// ContainerExited tells plugins that a container exited by itself. It does
// not wait: the exit is recorded already, and a plugin must not hold up the
// shim's event. Stop waits for it.
func (n *NRI) ContainerExited(pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	n.exitMu.Lock()
	defer n.exitMu.Unlock()
	if n.closed {
		return
	}
	n.exits.Add(1)
	go func() {
		defer n.exits.Done()
		n.StopContainer(context.Background(), pod, ctr)
	}()
}

func (n *NRI) stopContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if !n.needsStop(ctr.GetId()) {
		return
	}
	resp, err := n.adapt.StopContainer(ctx, &adaptation.StopContainerRequest{Pod: pod, Container: ctr})
	n.set(ctr.GetId(), stopped)
	if n.logErr(err, "StopContainer", "container", ctr.GetId()) {
		return
	}
	if len(resp.GetUpdate()) > 0 {
		if failed, err := n.rt.UpdateContainers(ctx, resp.GetUpdate()); err != nil || len(failed) > 0 {
			n.log.Warn("updates asked at container stop failed", "container", ctr.GetId(), "failed", len(failed), "error", err)
		}
	}
}

// RemoveContainer tells plugins that a container is gone (and stopped,
// if they were not told yet).
func (n *NRI) RemoveContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	if n == nil {
		return
	}
	defer n.block()()
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.needsRemoval(ctr.GetId()) {
		return
	}
	n.stopContainer(ctx, pod, ctr)
	err := n.adapt.RemoveContainer(ctx, &adaptation.RemoveContainerRequest{Pod: pod, Container: ctr})
	n.set(ctr.GetId(), gone)
	n.logErr(err, "RemoveContainer", "container", ctr.GetId())
}

// logErr logs a plugin error on an event plugins cannot veto, and says
// whether there was one.
func (n *NRI) logErr(err error, event string, args ...any) bool {
	if err == nil {
		return false
	}
	if !errors.Is(err, context.Canceled) {
		n.log.Warn("NRI "+event+" failed", append(args, "error", err)...)
	}
	return true
}

// setLogger guards the one write of NRI's global logger.
var setLogger sync.Once

// slogger gives NRI's library corrald's logger.
type slogger struct{ l *slog.Logger }

func (s slogger) Debugf(ctx context.Context, f string, a ...any) {
	s.l.DebugContext(ctx, fmt.Sprintf(f, a...))
}
func (s slogger) Infof(ctx context.Context, f string, a ...any) {
	s.l.InfoContext(ctx, fmt.Sprintf(f, a...))
}
func (s slogger) Warnf(ctx context.Context, f string, a ...any) {
	s.l.WarnContext(ctx, fmt.Sprintf(f, a...))
}
func (s slogger) Errorf(ctx context.Context, f string, a ...any) {
	for _, v := range a {
		if err, ok := v.(error); ok && errors.Is(err, adaptation.ErrWasmDisabled) {
			// corrald is built with nri_no_wasm (Makefile BUILDTAGS): the
			// library calls that an error at every start, but it is the
			// build's choice, not a fault.
			s.l.InfoContext(ctx, "NRI: this build runs plugins as processes only, not WebAssembly ones")
			return
		}
	}
	s.l.ErrorContext(ctx, fmt.Sprintf(f, a...))
}
