package server

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/cgroup"
	"github.com/corral-runtime/corral/cri/imagevolume"
	"github.com/corral-runtime/corral/cri/metrics"
	"github.com/corral-runtime/corral/cri/netns"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
)

// recoverTimeout bounds reconnecting to one pod's shim at start.
const recoverTimeout = 10 * time.Second

// recover reconnects to every pod's shim named in the store, in parallel,
// and settles what happened while corrald was away: a container that exited
// keeps its real exit code and time; a pod whose shim is gone has its
// containers marked exited with reason Unknown and is left NotReady for the
// kubelet to stop and remove.
func (s *Server) recover(ctx context.Context) {
	start := time.Now()
	sbs, err := s.store.ListSandboxes(nil)
	if err != nil {
		s.log.Error("recover: list pods", "error", err)
		return
	}
	var wg sync.WaitGroup
	for _, sb := range sbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, recoverTimeout)
			defer cancel()
			s.recoverPod(ctx, sb)
		}()
	}
	wg.Wait()
	s.sweep(ctx)
	s.metrics.ObserveRecovery(time.Since(start))
	if len(sbs) > 0 {
		s.log.Info("recovered pods", "pods", len(sbs), "seconds", time.Since(start).Seconds())
	}
}

func (s *Server) recoverPod(ctx context.Context, sb metadata.Sandbox) {
	log := s.log.With("pod", sb.ID)
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return c.SandboxID == sb.ID })
	if err != nil {
		log.Error("recover: list containers", "error", err)
		return
	}
	if sb.ShimAddress == "" {
		// A RunPodSandbox cut short may have started the shim before it
		// could record it; the shim wrote its address into the bundle.
		// Adopted, it is stopped and removed with the pod like any other.
		addr := s.startedShim(sb.ID)
		if addr == "" {
			s.metrics.RecoveredPod(metrics.RecoveredNoShim)
			return
		}
		pid := 0
		if b, err := os.ReadFile(filepath.Join(s.paths.sandboxBundle(sb.ID), "shim.pid")); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if _, err := s.store.UpdateSandbox(sb.ID, func(r *metadata.Sandbox) error {
			r.ShimAddress, r.ShimPID = addr, uint32(pid)
			return nil
		}); err != nil {
			log.Error("recover: record the shim a cut-short RunPodSandbox started", "address", addr, "error", err)
			return
		}
		log.Info("recover: adopted the shim a cut-short RunPodSandbox started", "address", addr)
		sb.ShimAddress, sb.ShimPID = addr, uint32(pid)
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	if err != nil {
		log.Warn("recover: the pod's shim is gone", "error", err)
		s.metrics.RecoveredPod(metrics.RecoveredShimGone)
		s.shimGone(ctx, sb)
		return
	}
	s.metrics.RecoveredPod(metrics.RecoveredReconnected)
	for _, c := range cs {
		if c.State != metadata.ContainerRunning && c.State != metadata.ContainerCreated {
			continue
		}
		st, err := sh.Task.State(ctx, &taskapi.StateRequest{ID: c.ID})
		if err = taskErr(err); errdefs.IsNotFound(err) && c.State == metadata.ContainerCreated {
			st, err = s.recoverCutShortCreate(ctx, sb, sh, c.ID)
		}
		if err != nil {
			if errdefs.IsNotFound(err) {
				s.containerExited(c, 255, time.Now(), "Unknown")
			} else {
				log.Warn("recover: container state", "container", c.ID, "error", err)
			}
			continue
		}
		switch {
		case st.Status == task.Status_STOPPED:
			s.containerExited(c, int32(st.ExitStatus), st.ExitedAt.AsTime(), "")
		case c.State == metadata.ContainerCreated && st.Status == task.Status_RUNNING:
			// A StartContainer cut short after the shim started the
			// container but before its record said so.
			s.store.UpdateContainer(c.ID, func(rec *metadata.Container) error {
				if rec.State == metadata.ContainerCreated {
					rec.State, rec.PID, rec.StartedAt = metadata.ContainerRunning, st.Pid, time.Now()
				}
				return nil
			})
		}
	}
	if sb.State == metadata.SandboxReady {
		st, err := sh.Task.State(ctx, &taskapi.StateRequest{ID: sb.ID})
		if err = taskErr(err); errdefs.IsNotFound(err) || (err == nil && st.Status == task.Status_STOPPED) {
			s.taskExited(ctx, sb.ID, int32(st.GetExitStatus()), time.Now())
		}
	}
}

// recoverCutShortCreate is for a created container its shim does not know:
// a CreateContainer the crash cut short, whose Create the shim may still be
// working on (it finishes a Create whose caller left). It waits for the
// runtime process making the container, and asks the shim again; a
// container still unknown then is one the Create never made whole, and
// the shim binary's delete removes what the runtime made of it, which
// nothing else would: the shim's own Delete knows only its containers.
func (s *Server) recoverCutShortCreate(ctx context.Context, sb metadata.Sandbox, sh *shimclient.Shim, id string) (*taskapi.StateResponse, error) {
	bundle := s.paths.containerBundle(id)
	waitRuntimeProcesses(bundle, id, runtimeGrace)
	var err error
	for range 10 {
		var st *taskapi.StateResponse
		st, err = sh.Task.State(ctx, &taskapi.StateRequest{ID: id})
		if err = taskErr(err); !errdefs.IsNotFound(err) {
			return st, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	if opts, oerr := s.podShimOptions(sb); oerr == nil {
		if _, derr := shimclient.Delete(context.WithoutCancel(ctx), bundle, id, opts); derr != nil {
			s.log.Warn("recover: shim delete of a container a Create left half made", "container", id, "error", derr)
		}
	}
	return nil, err
}

// startedShim is the address a shim started for pod id wrote into the
// pod's bundle, "" if none did.
func (s *Server) startedShim(id string) string {
	b, err := os.ReadFile(filepath.Join(s.paths.sandboxBundle(id), "address"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// sweep removes what a crash left with no record to name it: a pod or
// container whose creation was cut short before its record was written, or
// after its record was deleted but before its files were. Only directories
// and namespaces corrald names by ID in its own dirs are touched.
func (s *Server) sweep(ctx context.Context) {
	known := map[string]bool{}
	sbs, err := s.store.ListSandboxes(nil)
	if err != nil {
		return
	}
	for _, sb := range sbs {
		known[sb.ID] = true
	}
	cs, err := s.store.ListContainers(nil)
	if err != nil {
		return
	}
	for _, c := range cs {
		known[c.ID] = true
	}
	orphans := func(dir string) []string {
		entries, _ := os.ReadDir(dir)
		var out []string
		for _, e := range entries {
			if len(e.Name()) == 64 && !known[e.Name()] {
				out = append(out, e.Name())
			}
		}
		return out
	}
	for _, id := range orphans(s.paths.netnsDir()) {
		s.log.Info("sweep: network namespace without a pod", "id", id)
		netns.Remove(filepath.Join(s.paths.netnsDir(), id))
	}
	for _, id := range orphans(s.paths.usernsDir()) {
		s.log.Info("sweep: user namespace without a pod", "id", id)
		netns.Remove(filepath.Join(s.paths.usernsDir(), id))
	}
	for _, id := range orphans(filepath.Join(s.paths.state, "sandboxes")) {
		s.log.Info("sweep: pod files without a pod", "id", id)
		if addr := s.startedShim(id); addr != "" {
			// A shim may have been started for it: end it too.
			if sh, err := shimclient.Connect(ctx, addr); err == nil {
				sh.Task.Kill(ctx, &taskapi.KillRequest{ID: id, Signal: 9, All: true})
				waitTask(ctx, sh, id, 5*time.Second)
				sh.Task.Delete(ctx, &taskapi.DeleteRequest{ID: id})
				sh.Task.Shutdown(ctx, &taskapi.ShutdownRequest{ID: id})
				sh.Close()
			}
		}
		s.deleteTask(ctx, metadata.Sandbox{ID: id}, id, s.paths.sandboxBundle(id))
		unmountIfMounted(filepath.Join(s.paths.sandboxBundle(id), "shm"))
		// The cgroup corrald would have chosen for it; one the kubelet
		// named is the kubelet's.
		if p, err := cgroup.Path(s.cfg.CgroupDriver, cgroup.DefaultParent(s.cfg.CgroupDriver, id)); err == nil {
			s.cgroups.Remove(p)
		}
		os.RemoveAll(s.paths.sandboxBundle(id))
	}
	for _, id := range orphans(filepath.Join(s.paths.root, "sandboxes")) {
		os.RemoveAll(s.paths.sandboxRoot(id))
	}
	for _, id := range orphans(filepath.Join(s.paths.state, "containers")) {
		s.log.Info("sweep: container files without a container", "id", id)
		if err := imagevolume.Unmount(imagevolume.Dir(s.paths.containerBundle(id))); err != nil {
			s.log.Warn("sweep: image volumes stay mounted", "id", id, "error", err)
			continue
		}
		if err := removeBundle(s.paths.containerBundle(id)); err != nil {
			s.log.Warn("sweep: container files", "id", id, "error", err)
		}
	}
	for _, id := range orphans(filepath.Join(s.paths.root, "containers")) {
		os.RemoveAll(s.paths.containerRoot(id))
	}
}
