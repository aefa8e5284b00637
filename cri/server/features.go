package server

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/corral-runtime/corral/cri/config"
	"github.com/corral-runtime/corral/cri/idmap"
	"github.com/opencontainers/runtime-spec/specs-go/features"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// What corral's own spec generation (cri/spec) turns into OCI settings. A
// handler advertises a CRI feature only when corral and the handler's
// runtime both have it: the kubelet sends a request needing the feature
// only to a handler that advertises it, and must not have it dropped.
const (
	// cri/spec writes "rro" for a mount with recursive_read_only.
	specRecursiveReadOnly = true
	// cri/spec gives a pod a user namespace of its own, and corrald
	// ID-maps its containers' layers and volumes itself (userns.go), so
	// the runtime needs user namespaces but not ID-mapped mounts.
	specUserNamespaces = true
)

// featureProbeTimeout bounds `RUNTIME features`, which only prints.
const featureProbeTimeout = 5 * time.Second

// handlerFeatures probes each configured handler's features once, on first
// use, and remembers them: the runtime binaries do not change under a
// running corrald, and the kubelet asks for Status every few seconds.
type handlerFeatures struct {
	once   sync.Once
	byName map[string]*runtimeapi.RuntimeHandlerFeatures
}

// get returns the features of every configured handler.
// root is where corrald keeps its image layers, which ID-mapped mounts of
// must work for user namespaces.
func (h *handlerFeatures) get(ctx context.Context, cfg *config.Config, root string) map[string]*runtimeapi.RuntimeHandlerFeatures {
	h.once.Do(func() {
		h.byName = map[string]*runtimeapi.RuntimeHandlerFeatures{}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), featureProbeTimeout)
		defer cancel()
		idmapped := sync.OnceValue(func() bool { return idmapSupported(root) })
		for _, name := range cfg.Handlers() {
			h.byName[name] = probeHandler(ctx, cfg.Runtimes[name], runtimeFeatures, kernelHasMountSetattr, idmapped)
		}
	})
	return h.byName
}

// probeHandler is what handler rt can do, from its OCI runtime's `features`
// output (OCI runtime-spec features.md), the kernel, and corral's spec.
// Shims other than runc shims are asked nothing: containerd 1.x shims have
// no way to report features, so none are claimed.
func probeHandler(ctx context.Context, rt config.Runtime, probe func(context.Context, string) (*features.Features, error), mountSetattr, idmapped func() bool) *runtimeapi.RuntimeHandlerFeatures {
	out := &runtimeapi.RuntimeHandlerFeatures{}
	if !rt.TakesRuncOptions() {
		return out
	}
	binary := rt.Runtime
	if binary == "" {
		binary = "runc" // what runc shims run when told nothing
	}
	f, err := probe(ctx, binary)
	if err != nil {
		// crun 1.8 has no features command; runc before 1.1 neither.
		return out
	}
	// rro is runc's and crun's mount option for mount_setattr(2) with
	// MOUNT_ATTR_RDONLY and AT_RECURSIVE, which kernels before 5.12 lack.
	out.RecursiveReadOnlyMounts = specRecursiveReadOnly && slices.Contains(f.MountOptions, "rro") && mountSetattr()
	// User namespaces as Kubernetes uses them need ID-mapped mounts, which
	// corrald makes itself: the runtime only has to create and join user
	// namespaces (runc 1.1 can, without its own ID-mapped mounts).
	if l := f.Linux; l != nil {
		out.UserNamespaces = specUserNamespaces && slices.Contains(l.Namespaces, "user") && idmapped()
	}
	return out
}

// idmapSupported reports whether ID-mapped mounts of dir (or, without
// one, of /) work on this kernel and file system.
func idmapSupported(dir string) bool {
	if dir == "" {
		dir = "/"
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return false
	}
	return idmap.Supported(dir) == nil
}

// runtimeFeatures runs `BINARY features`.
func runtimeFeatures(ctx context.Context, binary string) (*features.Features, error) {
	out, err := exec.CommandContext(ctx, binary, "features").Output()
	if err != nil {
		return nil, err
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// kernelHasMountSetattr reports whether the kernel has mount_setattr(2):
// called with a bad fd it fails EBADF, or ENOSYS where it does not exist.
func kernelHasMountSetattr() bool {
	err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH, &unix.MountAttr{})
	return !errors.Is(err, unix.ENOSYS)
}
