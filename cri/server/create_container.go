package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/image"
	"github.com/corral-runtime/corral/cri/imagevolume"
	"github.com/corral-runtime/corral/cri/snapshot"
	"github.com/corral-runtime/corral/cri/spec"
	"github.com/corral-runtime/corral/metadata"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CreateContainer creates a container in a ready pod from a pulled image:
// its record, writable layer, OCI spec and task in the pod's shim. A failure
// part-way leaves no record, mount or process behind.
func (s *Server) CreateContainer(ctx context.Context, r *runtimeapi.CreateContainerRequest) (_ *runtimeapi.CreateContainerResponse, retErr error) {
	if s.images == nil {
		return nil, errNoImages
	}
	podID, cfg := r.GetPodSandboxId(), r.GetConfig()
	if podID == "" {
		return nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	if cfg == nil || cfg.GetMetadata().GetName() == "" {
		return nil, fmt.Errorf("config.metadata.name is empty: %w", errdefs.ErrInvalidArgument)
	}
	ref := cfg.GetImage().GetImage()
	if ref == "" {
		return nil, fmt.Errorf("config.image.image is empty: name the image to run: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := s.store.GetSandbox(podID)
	if err != nil {
		return nil, fmt.Errorf("pod sandbox %q: %w", podID, err)
	}
	if sb.State != metadata.SandboxReady {
		return nil, fmt.Errorf("pod sandbox %q is not ready: %w", podID, errdefs.ErrFailedPrecondition)
	}
	sbCfg := r.GetSandboxConfig()
	if sbCfg == nil {
		sbCfg = sandboxConfig(sb)
	}
	img, err := s.images.Get(ref)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %q is not on this node: pull it first: %w", ref, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	imgCfg, err := image.Config(img)
	if err != nil {
		return nil, err
	}
	logPath, err := containerLogPath(sbCfg.GetLogDirectory(), cfg.GetLogPath())
	if err != nil {
		return nil, err
	}
	if len(img.ChainIDs) == 0 {
		return nil, fmt.Errorf("image %s has no layers: %w", img.ID, errdefs.ErrFailedPrecondition)
	}
	top := img.ChainIDs[len(img.ChainIDs)-1]
	vols, err := s.imageVolumes(cfg)
	if err != nil {
		return nil, err
	}

	id := newID()
	unlock, err := s.locks.Lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	root, bundle := s.paths.containerRoot(id), s.paths.containerBundle(id)
	rec := metadata.Container{
		ID: id, SandboxID: podID, Name: cfg.Metadata.Name, Attempt: cfg.Metadata.Attempt, Config: raw,
		ImageRef: ref, ImageID: img.ID, State: metadata.ContainerCreated, CreatedAt: time.Now(),
		LogPath: logPath, Bundle: bundle, Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		Extra: map[string]string{metadata.ExtraSnapshot: top},
	}
	if err := imagevolume.Record(rec.Extra, vols); err != nil {
		return nil, err
	}
	defer s.pending.hold(id)()
	// The record first: it keeps the image's layers from garbage
	// collection, and its name index refuses a duplicate name and attempt.
	if err := s.store.CreateContainer(rec); err != nil {
		return nil, err
	}
	log := s.log.With("pod", podID, "container", id, "name", cfg.Metadata.Name)
	bg := context.WithoutCancel(ctx)
	var undo []func()
	defer func() {
		if retErr == nil {
			return
		}
		log.Warn("CreateContainer failed, rolling back", "error", retErr)
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		s.store.DeleteContainer(id)
	}()

	upper, work := filepath.Join(root, "upper"), filepath.Join(root, "work")
	for _, d := range []string{upper, work, bundle} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	undo = append(undo, func() {
		removeBundle(bundle)
		os.RemoveAll(root)
	})
	volPaths, err := s.mountImageVolumes(bundle, vols)
	undo = append(undo, func() { imagevolume.Unmount(imagevolume.Dir(bundle)) })
	if err != nil {
		return nil, err
	}
	lower, err := s.images.Snapshots().LowerDirs(digest.Digest(top))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.ID, err)
	}
	// A pod with a user namespace of its own sees its image through
	// ID-mapped layers (see userns.go).
	userns := spec.PodUserns(sbCfg)
	var usernsFile *os.File
	mappedLower := lower
	if userns != nil {
		if usernsFile, err = usernsOf(sb.PID); err != nil {
			return nil, fmt.Errorf("pod %s's user namespace: %w: %w", podID, err, errdefs.ErrFailedPrecondition)
		}
		defer usernsFile.Close()
		if mappedLower, err = mapLayers(bundle, lower, upper, work, userns, usernsFile); err != nil {
			return nil, err
		}
	}
	overlay, err := snapshot.OverlayOptions(mappedLower, upper, work)
	if err != nil {
		return nil, err
	}
	users, closeUsers := imageUsers(lower)
	defer closeUsers()
	nodeName, _ := os.Hostname()
	var shm string
	if sb.Extra != nil {
		shm = sb.Extra[extraShm]
	}
	sp, err := spec.Container(cfg, sbCfg, &imgCfg.Config, spec.ContainerOptions{
		ID: id, SandboxID: podID, SandboxPID: sb.PID, Rootfs: filepath.Join(bundle, "rootfs"),
		ImageName: imageName(img, ref), NetNSPath: sb.NetNSPath,
		ResolvConfPath: filepath.Join(s.paths.sandboxRoot(podID), "resolv.conf"),
		HostnamePath:   filepath.Join(s.paths.sandboxRoot(podID), "hostname"),
		HostsPath:      filepath.Join(s.paths.sandboxRoot(podID), "hosts"),
		ShmPath:        shm, CgroupParent: sandboxCgroup(sb).parent, SystemdCgroup: s.systemdCgroup(), RestrictOOMScoreAdj: s.restrict,
		PidsLimit: s.pidsLimit, Hostname: nodeName, Users: users, ImageVolumes: volPaths, Host: s.host,
	})
	if err != nil {
		return nil, err
	}
	if usernsFile != nil {
		if err := mapVolumes(bundle, sp, cfg.GetMounts(), usernsFile); err != nil {
			return nil, err
		}
	}
	// A handler since removed from the config passes nothing through.
	if _, rt, err := s.handler(sb.RuntimeHandler); err == nil {
		addAnnotations(sp, rt.PassThrough(sbCfg.GetAnnotations()))
	}
	defer s.nri.BlockSync()()
	if err := s.nriCreateContainer(ctx, sb, rec, sp, &undo); err != nil {
		return nil, err
	}
	// corral's shim makes the runtime's container at StartContainer, with
	// one runc run instead of runc create now and runc start then.
	if sp.Annotations == nil {
		sp.Annotations = map[string]string{}
	}
	sp.Annotations[annotationCreateAtStart] = "true"
	if err := writeSpec(bundle, sp); err != nil {
		return nil, err
	}
	stdout := ""
	if logPath != "" {
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return nil, fmt.Errorf("log directory: %w", err)
		}
		// corral's shim writes the CRI log format itself; a containerd shim
		// ignores the query and writes raw output.
		stdout = "file://" + logPath + "?format=cri"
	}
	stdin := ""
	if cfg.GetStdin() {
		// The shim holds it open for the container's life; each attach
		// writes to it.
		stdin = filepath.Join(bundle, stdinFifo)
		if err := unix.Mkfifo(stdin, 0o600); err != nil {
			return nil, fmt.Errorf("stdin fifo: %w", err)
		}
	}
	shimOpts, err := s.podShimOptions(sb)
	if err != nil {
		return nil, err
	}
	opts := shimOpts.RuntimeOptions
	sh, err := s.podShim(ctx, podID, sb.ShimAddress)
	if err != nil {
		return nil, err
	}
	// The pid is recorded when the container starts (StartContainer has
	// it from the shim again): one write less here, and a created
	// container's pid is the runtime's blocked init, of no use to anyone.
	// As in RunPodSandbox: a Create the shim did not answer (it died
	// under it) may have left the runtime making the container alone;
	// one the caller left is finished all the same (bg) and undone below.
	answered := false
	undo = append(undo, func() {
		if !answered {
			s.settleCutShortCreate(bg, log, bundle, id, shimOpts)
		}
	})
	_, err = sh.Task.Create(bg, &taskapi.CreateTaskRequest{
		ID: id, Bundle: bundle, Terminal: cfg.GetTty(), Stdin: stdin, Stdout: stdout, Stderr: stdout, Options: opts,
		Rootfs: []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{overlay}}},
	})
	if err != nil {
		return nil, fmt.Errorf("create container %q: %w", cfg.Metadata.Name, taskErr(err))
	}
	answered = true
	undo = append(undo, func() {
		sh.Task.Kill(bg, &taskapi.KillRequest{ID: id, Signal: uint32(unix.SIGKILL), All: true})
		waitTask(bg, sh, id, 5*time.Second)
		sh.Task.Delete(bg, &taskapi.DeleteRequest{ID: id})
	})
	s.pending.release(id)
	log.Info("container created", "image", ref)
	s.hub.publish(s.containerEvent(rec, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT))
	s.nriPostCreateContainer(ctx, sb, rec)
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// containerLogPath joins the pod's log directory and the container's log
// path, refusing a path that would leave the directory.
func containerLogPath(dir, p string) (string, error) {
	if p == "" {
		return "", nil
	}
	if dir == "" {
		return "", fmt.Errorf("config.log_path %q needs the pod's log_directory, which is empty: %w", p, errdefs.ErrInvalidArgument)
	}
	if filepath.IsAbs(p) || p != filepath.Clean(p) || p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("config.log_path %q must be a clean path inside the pod's log directory: %w", p, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(dir, p), nil
}

// imageName is the name the image-name annotation carries: the reference
// the container asked for, normalized to the tag the store knows if any.
func imageName(img metadata.Image, ref string) string {
	for _, t := range img.RepoTags {
		if strings.HasSuffix(t, ref) {
			return t
		}
	}
	if len(img.RepoTags) > 0 {
		return img.RepoTags[0]
	}
	return ref
}

// imageUsers reads the image's /etc/passwd and /etc/group from its layers,
// top first, each confined to its layer so a symlink cannot reach the node's.
func imageUsers(lower []string) (spec.UserLookup, func()) {
	var roots []*os.Root
	for _, d := range lower {
		if r, err := os.OpenRoot(d); err == nil {
			roots = append(roots, r)
		}
	}
	closeAll := func() {
		for _, r := range roots {
			r.Close()
		}
	}
	return spec.UsersFromFS(layers(roots)), closeAll
}

// layers is a read-only view of stacked layers: the first that has a file
// wins (whiteouts are not honoured; for /etc/passwd that is close enough).
type layers []*os.Root

func (l layers) Open(name string) (fs.File, error) {
	for _, r := range l {
		f, err := r.FS().Open(name)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}
