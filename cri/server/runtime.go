package server

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/corral-runtime/corral/cri/config"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// shimNamespace is the namespace corrald's containers live in, in the
// shims' paths and events, as containerd's CRI plugin uses k8s.io.
const shimNamespace = "k8s.io"

// layout names where a pod's and a container's files live. ROOT keeps what
// must survive a reboot of the node (writable layers, pod files); STATE what
// lives as long as the processes (bundles, sockets, namespaces, /dev/shm).
type layout struct{ root, state string }

func (l layout) sandboxRoot(id string) string     { return filepath.Join(l.root, "sandboxes", id) }
func (l layout) sandboxBundle(id string) string   { return filepath.Join(l.state, "sandboxes", id) }
func (l layout) containerRoot(id string) string   { return filepath.Join(l.root, "containers", id) }
func (l layout) containerBundle(id string) string { return filepath.Join(l.state, "containers", id) }
func (l layout) netnsDir() string                 { return filepath.Join(l.state, "netns") }
func (l layout) usernsDir() string                { return filepath.Join(l.state, "userns") }

// daemonAddress is what shims derive their paths from (STATE/s, STATE/runc),
// whatever socket --listen names.
func (l layout) daemonAddress() string { return filepath.Join(l.state, "corral.sock") }
func (l layout) eventsAddress() string { return filepath.Join(l.state, "corral.sock.ttrpc") }

// newID makes a 64-hex-digit ID, as containerd's and the docker tools'.
func newID() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// shims holds the open connection to each pod's shim.
type shims struct {
	mu    sync.Mutex
	conns map[string]*shimclient.Shim
}

func (s *shims) get(pod string) *shimclient.Shim {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[pod]
}

func (s *shims) set(pod string, sh *shimclient.Shim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil {
		s.conns = make(map[string]*shimclient.Shim)
	}
	if old := s.conns[pod]; old != nil && old != sh {
		old.Close()
	}
	s.conns[pod] = sh
}

func (s *shims) drop(pod string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh := s.conns[pod]; sh != nil {
		sh.Close()
		delete(s.conns, pod)
	}
}

func (s *shims) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, sh := range s.conns {
		sh.Close()
		delete(s.conns, id)
	}
}

// podShim returns the connection to a pod's shim, reconnecting if it was
// lost (corrald restarted, or the connection broke).
func (s *Server) podShim(ctx context.Context, podID, address string) (*shimclient.Shim, error) {
	if sh := s.shims.get(podID); sh != nil {
		select {
		case <-sh.Done():
		default:
			return sh, nil
		}
	}
	if address == "" {
		return nil, fmt.Errorf("pod %s has no shim: %w", podID, errdefs.ErrFailedPrecondition)
	}
	sh, err := shimclient.Connect(ctx, address)
	if err != nil {
		return nil, fmt.Errorf("pod %s: shim: %w", podID, err)
	}
	s.shims.set(podID, sh)
	s.watchShim(podID, sh)
	return sh, nil
}

// handler resolves a CRI runtime handler to its configuration; "" is the
// default handler.
func (s *Server) handler(name string) (string, config.Runtime, error) {
	if name == "" {
		name = s.cfg.DefaultRuntime
	}
	rt, ok := s.cfg.Runtimes[name]
	if !ok {
		return "", config.Runtime{}, fmt.Errorf("runtime handler %q is not configured; the handlers are %s (a RuntimeClass handler must name a [runtimes.<handler>] table of corrald's config): %w",
			name, strings.Join(s.cfg.Handlers(), ", "), errdefs.ErrInvalidArgument)
	}
	return name, rt, nil
}

// runcRoot is the OCI runtime state directory runc shims get when their
// handler names none: one place for every container corrald runs, the
// same that corral's shim derives from the daemon's address.
func (l layout) runcRoot() string { return filepath.Join(l.state, "runc") }

// shimOptions is how a pod of handler rt starts and talks to its shim.
// binary, if set, is the shim binary recorded when the pod was made: a pod
// keeps the shim it started with even if the handler's config changed.
func (s *Server) shimOptions(rt config.Runtime, binary string) (shimclient.Options, error) {
	opts, err := rt.ShimOptions(s.paths.runcRoot())
	if err != nil {
		return shimclient.Options{}, err
	}
	if opts, err = s.withCgroupDriver(rt, opts); err != nil {
		return shimclient.Options{}, err
	}
	if binary == "" {
		binary = rt.Shim
	}
	publish, err := os.Executable()
	if err != nil {
		publish = "corrald"
	}
	return shimclient.Options{
		Binary:         binary,
		Namespace:      shimNamespace,
		Address:        s.paths.daemonAddress(),
		TTRPCAddress:   s.paths.eventsAddress(),
		PublishBinary:  publish,
		RuntimeOptions: opts,
		Debug:          s.log.Enabled(context.Background(), -4),
		Log:            s.log,
	}, nil
}

// withCgroupDriver tells a runc shim to use runc's systemd cgroup driver
// when corrald's cgroup_driver is systemd: the specs then name slices and
// scopes, which the cgroupfs driver would take for paths.
func (s *Server) withCgroupDriver(rt config.Runtime, opts *anypb.Any) (*anypb.Any, error) {
	if !s.systemdCgroup() || !rt.TakesRuncOptions() || opts == nil {
		return opts, nil
	}
	var o runcoptions.Options
	if err := proto.Unmarshal(opts.GetValue(), &o); err != nil {
		return nil, fmt.Errorf("runc options: %w", err)
	}
	o.SystemdCgroup = true
	b, err := proto.Marshal(&o)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: opts.GetTypeUrl(), Value: b}, nil
}

// podShimOptions are the shim options of an existing pod: its handler's,
// with the shim binary the pod was started with. A handler since removed
// from the config still lets the pod be cleaned up by that binary.
func (s *Server) podShimOptions(sb metadata.Sandbox) (shimclient.Options, error) {
	binary := sb.Extra[extraShimBinary]
	_, rt, err := s.handler(sb.RuntimeHandler)
	if err != nil {
		if binary == "" {
			return shimclient.Options{}, err
		}
		rt = config.Runtime{Shim: binary}
	}
	return s.shimOptions(rt, binary)
}

// lacksCapSysResource reports whether this process cannot lower
// oom_score_adj: then every spec clamps it, as containerd's
// restrict_oom_score_adj does, instead of failing every pod.
func lacksCapSysResource() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			const capSysResource = 24
			return err != nil || caps&(1<<capSysResource) == 0
		}
	}
	return true
}

// taskErr turns a shim's ttrpc status back into an errdefs kind, so callers
// can tell NotFound from a failure and the CRI edge maps it to its code.
func taskErr(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToNative(err)
}

// lockSandbox checks a pod ID from a request, takes the pod's lock and reads
// its record. On error nothing is held.
func (s *Server) lockSandbox(ctx context.Context, id string) (metadata.Sandbox, func(), error) {
	if id == "" {
		return metadata.Sandbox{}, nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	unlock, err := s.locks.Lock(ctx, id)
	if err != nil {
		return metadata.Sandbox{}, nil, err
	}
	sb, err := s.store.GetSandbox(id)
	if err != nil {
		unlock()
		return metadata.Sandbox{}, nil, err
	}
	return sb, unlock, nil
}

// lockContainer is lockSandbox for a container.
func (s *Server) lockContainer(ctx context.Context, id string) (metadata.Container, func(), error) {
	if id == "" {
		return metadata.Container{}, nil, fmt.Errorf("container_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	unlock, err := s.locks.Lock(ctx, id)
	if err != nil {
		return metadata.Container{}, nil, err
	}
	c, err := s.store.GetContainer(id)
	if err != nil {
		unlock()
		return metadata.Container{}, nil, err
	}
	return c, unlock, nil
}
