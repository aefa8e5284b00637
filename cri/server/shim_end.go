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
