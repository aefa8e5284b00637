package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
)

// shimShutdownTimeout bounds asking a pod's shim to exit once its last
// task is gone.
const shimShutdownTimeout = 10 * time.Second

// endShim asks the pod's shim to exit, and kills it when it does not
// answer in time: a shim that hangs must not hold the pod's removal (and
// its lock) forever, nor outlive the pod. The pid is the one recorded at
// start, checked against the process's command line so a reused pid is
// never hit.
func (s *Server) endShim(ctx context.Context, sh *shimclient.Shim, sb metadata.Sandbox) {
	ctx, cancel := context.WithTimeout(ctx, shimShutdownTimeout)
	defer cancel()
	_, err := sh.Task.Shutdown(ctx, &taskapi.ShutdownRequest{ID: sb.ID})
	if ctx.Err() == nil {
		return
	}
	s.log.Warn("the pod's shim did not answer Shutdown; killing it", "pod", sb.ID, "pid", sb.ShimPID, "error", err)
	if sb.ShimPID == 0 {
		return
	}
	cmdline, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", sb.ShimPID))
	if rerr != nil || !bytes.Contains(cmdline, []byte("-id\x00"+sb.ID+"\x00")) {
		return
	}
	syscall.Kill(int(sb.ShimPID), syscall.SIGKILL)
}

// watchShim handles a pod's shim dying while corrald runs, as containerd
// does: when the connection to sh closes and no one closed it on purpose
// (the shim is still the pod's, corrald is not stopping) and the shim does
// not answer again, its pod is settled with shimGone. The goroutine ends
// when the connection does.
func (s *Server) watchShim(podID string, sh *shimclient.Shim) {
	go func() {
		<-sh.Done()
		select {
		case <-s.stopping:
			return
		default:
		}
		if s.shims.get(podID) != sh {
			return // dropped or replaced: closed on purpose
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		unlock, err := s.locks.Lock(ctx, podID)
		if err != nil {
			return
		}
		defer unlock()
		sb, err := s.store.GetSandbox(podID)
		if err != nil || s.shims.get(podID) != sh {
			return // removed, or reconnected, while waiting for the lock
		}
		if again, err := shimclient.Connect(ctx, sb.ShimAddress); err == nil {
			// Only the connection broke: keep the shim.
			s.shims.set(podID, again)
			s.watchShim(podID, again)
			return
		}
		s.log.Warn("the pod's shim died", "pod", podID, "pid", sb.ShimPID)
		s.shims.drop(podID)
		s.shimGone(ctx, sb)
	}()
}

// shimGone settles a pod whose shim is gone: its containers that were
// running or being created are exited (code 255, reason Unknown: their
// real exit went with the shim), the processes the shim left (reparented,
// still running) are killed and their runc state deleted through the shim
// binary's delete command, and the pod is not ready any more. The records
// stay for the kubelet to see and remove.
func (s *Server) shimGone(ctx context.Context, sb metadata.Sandbox) {
	cs, err := s.store.ListContainers(func(c metadata.Container) bool { return c.SandboxID == sb.ID })
	if err != nil {
		s.log.Error("settle a dead shim's pod: list containers", "pod", sb.ID, "error", err)
		return
	}
	// The records first, so that what is reported is right as soon as
	// possible; then the processes.
	now := time.Now()
	var orphans []string
	for _, c := range cs {
		if c.State != metadata.ContainerRunning && c.State != metadata.ContainerCreated {
			continue
		}
		s.containerExited(c, 255, now, "Unknown")
		orphans = append(orphans, c.ID)
	}
	s.taskExited(ctx, sb.ID, 255, now)
	for _, id := range orphans {
		// The runtime processes the shim left (a runc start, create or
		// exec under way) go on alone: a delete before they end would
		// race them, and a container could start after it was removed.
		waitRuntimeProcesses(s.paths.containerBundle(id), id, runtimeGrace)
		// Straight to the shim binary: dialling the dead shim for each
		// container would spend seconds of ctx (recovery gives a pod 10)
		// on retries, and leave the rest running when it ran out.
		if err := s.deleteDeadShimTask(ctx, sb, id, s.paths.containerBundle(id)); err != nil {
			s.log.Warn("clean up after a dead shim", "pod", sb.ID, "container", id, "error", err)
		}
	}
	waitRuntimeProcesses(s.paths.sandboxBundle(sb.ID), sb.ID, runtimeGrace)
	if err := s.deleteDeadShimTask(ctx, sb, sb.ID, s.paths.sandboxBundle(sb.ID)); err != nil {
		s.log.Warn("clean up after a dead shim", "pod", sb.ID, "error", err)
	}
}
