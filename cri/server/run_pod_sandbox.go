package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/cgroup"
	"github.com/corral-runtime/corral/cri/config"
	"github.com/corral-runtime/corral/cri/netns"
	"github.com/corral-runtime/corral/cri/network"
	"github.com/corral-runtime/corral/cri/pause"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/cri/spec"
	"github.com/corral-runtime/corral/metadata"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RunPodSandbox makes a pod: its record, files, network namespace and
// /dev/shm, then its shim and pause process while CNI sets up its network.
// A failure part-way undoes everything made so far.
func (s *Server) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest) (_ *runtimeapi.RunPodSandboxResponse, retErr error) {
	cfg := r.GetConfig()
	if err := validateSandboxConfig(cfg); err != nil {
		return nil, err
	}
	shmSize, err := spec.ShmSize(cfg)
	if err != nil {
		return nil, err
	}
	handler, rt, err := s.handler(r.GetRuntimeHandler())
	if err != nil {
		return nil, err
	}
	if spec.PodUserns(cfg) != nil {
		// The kubelet asks only handlers that announce user namespaces;
		// another client gets told why not, before anything is made.
		if !s.features.get(ctx, s.cfg, s.paths.root)[handler].GetUserNamespaces() {
			return nil, fmt.Errorf("runtime handler %q cannot run a pod with a user namespace of its own on this node: that needs an OCI runtime whose `features` lists the user namespace and a kernel that ID-maps mounts of %s (mount_setattr, Linux 5.12): %w",
				handler, s.paths.root, errdefs.ErrFailedPrecondition)
		}
		for _, d := range []string{s.paths.root, s.paths.state} {
			if err := searchable(d); err != nil {
				return nil, fmt.Errorf("user namespace: %w: %w", err, errdefs.ErrFailedPrecondition)
			}
		}
	}
	// Before anything is made: a handler whose shim is not installed is
	// the node's problem, and the same pod works once it is fixed.
	shimBinary, err := shimclient.ResolveBinary(rt.Shim)
	if err != nil {
		return nil, fmt.Errorf("runtime handler %q: shim %q is not installed: %v: %w", handler, rt.Shim, err, errdefs.ErrFailedPrecondition)
	}
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	id := newID()
	// Where the pod's cgroup is goes into the record from the start, so
	// that removing a pod whose start was cut short finds it.
	cg, err := s.podCgroup(cfg, id)
	if err != nil {
		return nil, err
	}
	md := cfg.GetMetadata()
	rec := metadata.Sandbox{
		ID: id, Name: md.GetName(), Namespace: md.GetNamespace(), UID: md.GetUid(), Attempt: md.GetAttempt(),
		Config: raw, State: metadata.SandboxNotReady, RuntimeHandler: handler, CreatedAt: time.Now(),
		Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(), Extra: map[string]string{},
	}
	cg.record(rec.Extra)
	unlock, err := s.locks.Lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	defer s.pending.hold(id)()
	// The record first: its name index is what refuses a second pod of the
	// same name, namespace, uid and attempt, even under concurrency.
	if err := s.store.CreateSandbox(rec); err != nil {
		return nil, err
	}
	log := s.log.With("pod", id, "name", md.GetNamespace()+"/"+md.GetName())
	var undo []func()
	// netLeft is the CNI DEL that failed during the rollback: the plugins
	// may still hold an address, a veth or port mappings for this pod.
	var netLeft error
	defer func() {
		if retErr == nil {
			return
		}
		log.Warn("RunPodSandbox failed, rolling back", "error", retErr)
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		if netLeft != nil {
			// Deleting the record would leave what the plugins hold
			// named by nothing, for good. Kept NotReady, the pod is
			// listed, and the kubelet's garbage collection (or anyone's
			// StopPodSandbox) runs the DEL again; as containerd does
			// with a sandbox it could not clean up.
			log.Error("RunPodSandbox rollback: CNI DEL failed; the pod stays listed, NotReady, until StopPodSandbox frees its network", "error", netLeft)
			s.store.UpdateSandbox(id, func(sb *metadata.Sandbox) error {
				if sb.Extra == nil {
					sb.Extra = map[string]string{}
				}
				sb.Extra[extraRunFailed] = fmt.Sprintf("%v; then CNI DEL: %v", retErr, netLeft)
				return nil
			})
			retErr = fmt.Errorf("%w; and undoing it, CNI DEL failed (%v): pod %s stays listed, NotReady, until StopPodSandbox frees its network", retErr, netLeft, id)
			return
		}
		s.store.DeleteSandbox(id)
	}()
	// Cleanup must run even if the caller has gone.
	bg := context.WithoutCancel(ctx)

	root, bundle := s.paths.sandboxRoot(id), s.paths.sandboxBundle(id)
	for _, d := range []string{root, bundle} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	undo = append(undo, func() { os.RemoveAll(root); os.RemoveAll(bundle) })

	pauseBin, err := pause.Find(s.cfg.Sandbox.PauseBinary)
	if err != nil {
		return nil, err
	}
	rootfs := filepath.Join(root, "rootfs")
	if err := pause.Rootfs(rootfs, pauseBin); err != nil {
		return nil, err
	}
	if u := spec.PodUserns(cfg); u != nil {
		// The runtime makes the pause container's mount points as the
		// pod's root; the rootfs is the pod's own copy.
		if err := chownTree(rootfs, u.RootUID(), u.RootGID()); err != nil {
			return nil, fmt.Errorf("pause rootfs: %w", err)
		}
	}
	hostname, err := podHostname(cfg)
	if err != nil {
		return nil, err
	}
	files, err := writePodFiles(root, hostname, cfg)
	if err != nil {
		return nil, err
	}

	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	var nsPath, usernsPath string
	podNetwork := func() ([]string, error) { return nil, nil }
	if nsOpts.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		if u := spec.PodUserns(cfg); u != nil {
			// The pod's network namespace belongs to its user namespace.
			nsPath, usernsPath, err = netns.CreateOwned(s.paths.netnsDir(), s.paths.usernsDir(), id,
				netns.IDMap{Host: u.UID.HostID, Size: u.UID.Size}, netns.IDMap{Host: u.GID.HostID, Size: u.GID.Size})
			if err != nil {
				return nil, fmt.Errorf("user and network namespaces: %w", err)
			}
			undo = append(undo, func() { netns.Remove(usernsPath) })
		} else if nsPath, err = netns.Create(s.paths.netnsDir(), id); err != nil {
			return nil, fmt.Errorf("network namespace: %w", err)
		}
		undo = append(undo, func() { netns.Remove(nsPath) })
		// CNI needs only the namespace, and the shim and the pause process
		// need nothing of CNI: the plugins run while they start. Whatever
		// happens next, the result is collected before RunPodSandbox
		// returns (below, or by this undo).
		done := make(chan struct{})
		var ips []string
		var netErr error
		go func() {
			defer close(done)
			ips, netErr = s.setupNetwork(ctx, id, cfg, nsPath)
		}()
		podNetwork = func() ([]string, error) { <-done; return ips, netErr }
		undo = append(undo, func() {
			// DEL after a failed ADD too, as the CNI spec asks: the
			// plugins that ran before the one that failed (an address
			// host-local reserved, a veth) are freed by nothing else.
			_, setupErr := podNetwork()
			err := s.cniTeardown(bg, networkPod(id, cfg, nsPath))
			if err != nil && !errors.Is(setupErr, network.ErrUnattached) {
				netLeft = err
			}
		})
	}
	var shm string
	if nsOpts.GetIpc() != runtimeapi.NamespaceMode_NODE {
		shm = filepath.Join(bundle, "shm")
		if err := mountShm(shm, shmSize); err != nil {
			return nil, err
		}
		undo = append(undo, func() { unix.Unmount(shm, unix.MNT_DETACH) })
	}

	if cg.owned {
		// Registered before the pause container: undone after it is gone.
		undo = append(undo, func() { s.cgroups.Remove(cg.path) })
	}
	sp, err := spec.Sandbox(cfg, spec.SandboxOptions{
		ID: id, PauseBinary: "/pause", Rootfs: rootfs, NetNSPath: nsPath, UsernsPath: usernsPath,
		ResolvConfPath: files.resolv, HostnamePath: files.hostname, HostsPath: files.hosts,
		ShmPath: shm, CgroupParent: cg.parent, SystemdCgroup: s.systemdCgroup(), RestrictOOMScoreAdj: s.restrict,
		Hostname: hostname, Host: s.host,
	})
	if err != nil {
		return nil, err
	}
	addAnnotations(sp, rt.PassThrough(cfg.GetAnnotations()))
	// corral's shim runs the pause container as it creates it: one runc
	// process instead of two. The Start below is then only an answer.
	sp.Annotations[annotationStartOnCreate] = "true"
	if err := writeSpec(bundle, sp); err != nil {
		return nil, err
	}

	opts, err := s.shimOptions(rt, shimBinary)
	if err != nil {
		return nil, err
	}
	sh, err := shimclient.Start(ctx, bundle, id, opts)
	if err != nil {
		return nil, shimStartError(handler, err)
	}
	s.shims.set(id, sh)
	s.watchShim(id, sh)
	undo = append(undo, func() {
		sh.Task.Shutdown(bg, &taskapi.ShutdownRequest{ID: id})
		s.shims.drop(id)
	})
	// Until Create answers, the pause container may be half made: a shim
	// killed under Create leaves its runtime process working alone.
	// Create is not cut short by the caller leaving (bg), so that an
	// answer always comes from a live shim, and the undo below knows
	// what there is to undo.
	answered := false
	undo = append(undo, func() {
		if !answered {
			s.settleCutShortCreate(bg, log, bundle, id, opts)
		}
	})
	created, err := sh.Task.Create(bg, &taskapi.CreateTaskRequest{ID: id, Bundle: bundle, Options: opts.RuntimeOptions})
	if err != nil {
		return nil, fmt.Errorf("runtime handler %q: create pause container: %w", handler, taskErr(err))
	}
	answered = true
	undo = append(undo, func() {
		sh.Task.Kill(bg, &taskapi.KillRequest{ID: id, Signal: uint32(unix.SIGKILL), All: true})
		waitTask(bg, sh, id, 5*time.Second)
		sh.Task.Delete(bg, &taskapi.DeleteRequest{ID: id})
	})
	if _, err := sh.Task.Start(ctx, &taskapi.StartRequest{ID: id}); err != nil {
		return nil, fmt.Errorf("runtime handler %q: start pause container: %w", handler, taskErr(err))
	}
	conn, err := sh.Task.Connect(ctx, &taskapi.ConnectRequest{ID: id})
	if err != nil {
		return nil, err
	}
	podIPs, err := podNetwork()
	if err != nil {
		return nil, err
	}

	rec.PID, rec.IPs = created.Pid, podIPs
	defer s.nri.BlockSync()()
	if err := s.nriRunPodSandbox(ctx, rec, &undo); err != nil {
		return nil, err
	}
	if _, err := s.store.UpdateSandbox(id, func(sb *metadata.Sandbox) error {
		sb.State = metadata.SandboxReady
		sb.ShimAddress = sh.Address
		sb.ShimPID = conn.ShimPid
		sb.PID = created.Pid
		sb.NetNSPath = nsPath
		sb.IPs = podIPs
		if sb.Extra == nil {
			sb.Extra = map[string]string{}
		}
		sb.Extra[extraShm] = shm
		sb.Extra[extraShimBinary] = sh.Binary
		return nil
	}); err != nil {
		return nil, err
	}
	s.pending.release(id)
	log.Info("pod ready", "pid", created.Pid, "handler", handler, "shim", sh.Binary, "shim_pid", conn.ShimPid, "ips", podIPs)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

// annotationStartOnCreate is shim.StartOnCreateAnnotation, which corrald
// cannot import without linking the shim.
const annotationStartOnCreate = "io.corral.shim.start-on-create"

// annotationCreateAtStart is shim.CreateAtStartAnnotation.
const annotationCreateAtStart = "io.corral.shim.create-at-start"

// extra keys of a sandbox record.
const (
	extraShm        = "shm"         // the pod's /dev/shm mount, "" for ipc NODE
	extraShimBinary = "shim.binary" // the shim binary the pod was started with
	extraStopped    = "stopped"     // "true" once StopPodSandbox has finished
	// extraRunFailed says why a pod whose RunPodSandbox failed is still
	// listed: its rollback could not free its network.
	extraRunFailed = "run_failed"
	// extraCgroupParent is the parent cgroup of the pod's containers, as
	// the spec takes it; extraCgroup the pod cgroup's path in the
	// hierarchy; extraCgroupOwned is "true" when corrald chose it (the
	// kubelet named none), so it removes it with the pod.
	extraCgroupParent = "cgroup_parent"
	extraCgroup       = "cgroup"
	extraCgroupOwned  = "cgroup_owned"
)

// shimStartError says which handler's shim failed to start and why, as a
// problem of the node's setup (FailedPrecondition), not of the request: the
// same pod works once the handler is fixed.
func shimStartError(handler string, err error) error {
	if errdefs.IsUnavailable(err) || errdefs.IsNotImplemented(err) {
		return fmt.Errorf("runtime handler %q: %w", handler, err)
	}
	return fmt.Errorf("runtime handler %q: %v: %w", handler, err, errdefs.ErrFailedPrecondition)
}

// addAnnotations adds pass-through annotations to a spec; the ones corral
// set itself (sandbox ID, container type) win, since shims group by them.
func addAnnotations(sp *specs.Spec, extra map[string]string) {
	if len(extra) == 0 {
		return
	}
	if sp.Annotations == nil {
		sp.Annotations = map[string]string{}
	}
	for k, v := range extra {
		if _, set := sp.Annotations[k]; !set {
			sp.Annotations[k] = v
		}
	}
}

// legacyCgroupParent held the containers of pods made before pods got a
// cgroup of their own.
const legacyCgroupParent = "/corral"

// podCgroupInfo is where a pod's cgroup is.
type podCgroupInfo struct {
	parent, path string
	owned        bool
}

// podCgroup decides a new pod's cgroup: the config's cgroup_parent (the
// kubelet's pod cgroup), else one of corrald's own for the pod alone.
func (s *Server) podCgroup(cfg *runtimeapi.PodSandboxConfig, id string) (podCgroupInfo, error) {
	driver := s.cfg.CgroupDriver
	info := podCgroupInfo{parent: cfg.GetLinux().GetCgroupParent()}
	if info.parent == "" {
		info.parent, info.owned = cgroup.DefaultParent(driver, id), true
	}
	p, err := cgroup.Path(driver, info.parent)
	if err != nil {
		return info, fmt.Errorf("config.linux.cgroup_parent: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	info.path = p
	return info, nil
}

func (c podCgroupInfo) record(extra map[string]string) {
	extra[extraCgroupParent] = c.parent
	extra[extraCgroup] = c.path
	if c.owned {
		extra[extraCgroupOwned] = "true"
	}
}

// sandboxCgroup reads where a pod's cgroup is from its record. Pods made
// before pods had cgroups of their own have no path.
func sandboxCgroup(sb metadata.Sandbox) podCgroupInfo {
	if sb.Extra == nil || sb.Extra[extraCgroupParent] == "" {
		return podCgroupInfo{parent: legacyCgroupParent}
	}
	return podCgroupInfo{parent: sb.Extra[extraCgroupParent], path: sb.Extra[extraCgroup], owned: sb.Extra[extraCgroupOwned] == "true"}
}

func (s *Server) systemdCgroup() bool {
	return s.cfg.CgroupDriver == config.CgroupDriverSystemd
}

func validateSandboxConfig(cfg *runtimeapi.PodSandboxConfig) error {
	if cfg == nil {
		return fmt.Errorf("config is missing: %w", errdefs.ErrInvalidArgument)
	}
	md := cfg.GetMetadata()
	for field, v := range map[string]string{"metadata.name": md.GetName(), "metadata.namespace": md.GetNamespace(), "metadata.uid": md.GetUid()} {
		if v == "" {
			return fmt.Errorf("config.%s is empty: %w", field, errdefs.ErrInvalidArgument)
		}
	}
	if d := cfg.GetLogDirectory(); d != "" && !filepath.IsAbs(d) {
		return fmt.Errorf("config.log_directory %q must be an absolute path: %w", d, errdefs.ErrInvalidArgument)
	}
	return nil
}

// podHostname is the pod's hostname: the config's, or the node's for a
// host-network pod that names none.
func podHostname(cfg *runtimeapi.PodSandboxConfig) (string, error) {
	if h := cfg.GetHostname(); h != "" {
		if len(h) > 64 || strings.ContainsAny(h, "/\x00\n") {
			return "", fmt.Errorf("config.hostname %q is not a valid hostname: %w", h, errdefs.ErrInvalidArgument)
		}
		return h, nil
	}
	return os.Hostname()
}

type podFiles struct{ hostname, hosts, resolv string }

// writePodFiles writes the pod's /etc/hostname, /etc/hosts and
// /etc/resolv.conf, which every container of the pod mounts.
func writePodFiles(dir, hostname string, cfg *runtimeapi.PodSandboxConfig) (podFiles, error) {
	f := podFiles{
		hostname: filepath.Join(dir, "hostname"),
		hosts:    filepath.Join(dir, "hosts"),
		resolv:   filepath.Join(dir, "resolv.conf"),
	}
	hostNet := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
	if err := os.WriteFile(f.hostname, []byte(hostname+"\n"), 0o644); err != nil {
		return f, err
	}
	hosts := []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
	if hostNet {
		if b, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = b
		}
	}
	if err := os.WriteFile(f.hosts, hosts, 0o644); err != nil {
		return f, err
	}
	resolv, err := resolvConf(cfg.GetDnsConfig())
	if err != nil {
		return f, err
	}
	return f, os.WriteFile(f.resolv, resolv, 0o644)
}

// resolvConf renders the pod's DNS config, or copies the node's when the
// pod has none (the kubelet's Default DNS policy).
func resolvConf(dns *runtimeapi.DNSConfig) ([]byte, error) {
	if dns == nil || (len(dns.Servers) == 0 && len(dns.Searches) == 0 && len(dns.Options) == 0) {
		b, err := os.ReadFile("/etc/resolv.conf")
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return b, err
	}
	var b strings.Builder
	check := func(field, v string) error {
		if strings.ContainsAny(v, "\n\x00") || v == "" {
			return fmt.Errorf("config.dns_config.%s has an invalid entry %q: %w", field, v, errdefs.ErrInvalidArgument)
		}
		return nil
	}
	if len(dns.Searches) > 0 {
		for _, v := range dns.Searches {
			if err := check("searches", v); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	for _, v := range dns.Servers {
		if err := check("servers", v); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "nameserver %s\n", v)
	}
	if len(dns.Options) > 0 {
		for _, v := range dns.Options {
			if err := check("options", v); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return []byte(b.String()), nil
}

// mountShm mounts the pod's /dev/shm, a tmpfs of size bytes that every
// container of the pod binds.
func mountShm(dir string, size uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("shm", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", size)); err != nil {
		return fmt.Errorf("mount the pod's /dev/shm: %w", err)
	}
	return nil
}

func writeSpec(bundle string, sp any) error {
	b, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600)
}

// waitTask waits up to d for a task to exit; it reports the exit status and
// whether it exited.
func waitTask(ctx context.Context, sh *shimclient.Shim, id string, d time.Duration) (*taskapi.WaitResponse, bool) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	resp, err := sh.Task.Wait(ctx, &taskapi.WaitRequest{ID: id})
	return resp, err == nil
}

// setupNetwork adds the pod to the CNI network (port mappings and all).
// With no CNI configuration at all the pod keeps loopback only: Status says
// NetworkReady false, so a kubelet schedules no such pods, while crictl and
// offline tests can still run them. A configuration that is present but
// broken fails the pod, naming the file and the plugin.
func (s *Server) setupNetwork(ctx context.Context, id string, cfg *runtimeapi.PodSandboxConfig, nsPath string) ([]string, error) {
	if s.net == nil {
		return nil, nil
	}
	if ok, why := s.net.Ready(); !ok {
		// A config that is there but cannot work is an error to report; a
		// node with no CNI config at all runs loopback-only pods.
		if files, _ := cniConfigFiles(s.cfg.Network.ConfDir); len(files) > 0 {
			return nil, network.Unattached(fmt.Errorf("pod network: %s: %w", why, errdefs.ErrFailedPrecondition))
		}
		s.log.Warn("pod gets loopback only: no CNI network is configured", "pod", id, "reason", why)
		return nil, nil
	}
	res, err := s.cniSetup(ctx, networkPod(id, cfg, nsPath))
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	return res.IPs, nil
}

// networkPod is the pod as CNI sees it. Teardown needs all of it as much
// as setup: portmap's DEL removes nothing when it is not told the port
// mappings, which matters when an ADD cut short left no cache to tell it.
func networkPod(id string, cfg *runtimeapi.PodSandboxConfig, nsPath string) network.Pod {
	md := cfg.GetMetadata()
	pod := network.Pod{ID: id, Name: md.GetName(), Namespace: md.GetNamespace(), UID: md.GetUid(), NetNSPath: nsPath}
	for _, pm := range cfg.GetPortMappings() {
		if pm.GetHostPort() <= 0 {
			continue // a container port alone needs no mapping
		}
		pod.PortMappings = append(pod.PortMappings, network.PortMapping{
			HostPort: pm.GetHostPort(), ContainerPort: pm.GetContainerPort(),
			Protocol: strings.ToLower(pm.GetProtocol().String()), HostIP: pm.GetHostIp(),
		})
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		pod.DNS = &network.DNS{Servers: dns.Servers, Searches: dns.Searches, Options: dns.Options}
	}
	return pod
}
