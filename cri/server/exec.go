package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// Exec checks the request and answers the streaming URL where the command
// runs once the client connects (streamRuntime.Exec).
func (s *Server) Exec(ctx context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(r.GetCmd()) == 0 {
		return nil, fmt.Errorf("cmd is empty: name the command to run: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := s.runningContainer(r.GetContainerId()); err != nil {
		return nil, err
	}
	st, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	return st.GetExec(r)
}

// runningContainer reads a container's record and checks that it runs.
func (s *Server) runningContainer(id string) (metadata.Container, error) {
	if id == "" {
		return metadata.Container{}, fmt.Errorf("container_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	c, err := s.store.GetContainer(id)
	if err != nil {
		return metadata.Container{}, err
	}
	if c.State != metadata.ContainerRunning {
		return metadata.Container{}, fmt.Errorf("container %s is %s, not running: %w", c.ID, c.State, errdefs.ErrFailedPrecondition)
	}
	return c, nil
}

// containerShim returns a running container's record and its pod's shim.
func (s *Server) containerShim(ctx context.Context, id string) (metadata.Container, metadata.Sandbox, *shimclient.Shim, error) {
	c, err := s.runningContainer(id)
	if err != nil {
		return c, metadata.Sandbox{}, nil, err
	}
	sb, err := s.store.GetSandbox(c.SandboxID)
	if err != nil {
		return c, sb, nil, err
	}
	sh, err := s.podShim(ctx, sb.ID, sb.ShimAddress)
	return c, sb, sh, err
}

// streamRuntime runs what the streaming server's clients connect for.
type streamRuntime struct{ s *Server }

// Exec runs cmd in the container through the shim, with the client's
// streams on FIFOs (or a terminal), until the command exits or the client
// goes away; a non-zero exit is reported as the command's exit code.
func (rt streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	s := rt.s
	c, _, sh, err := s.containerShim(ctx, containerID)
	if err != nil {
		return err
	}
	proc, err := execProcess(c.Bundle, cmd)
	if err != nil {
		return err
	}
	proc.Terminal = tty
	raw, err := json.Marshal(proc)
	if err != nil {
		return err
	}
	execID := newID()[:16]
	dir := filepath.Join(c.Bundle, "exec-"+execID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bg := context.WithoutCancel(ctx)

	req := &taskapi.ExecProcessRequest{ID: c.ID, ExecID: execID, Terminal: tty,
		Spec: &anypb.Any{TypeUrl: processSpecType, Value: raw}}
	var copies sync.WaitGroup
	var readers []io.Closer
	defer func() {
		for _, r := range readers {
			r.Close()
		}
	}()
	for _, o := range []struct {
		w    io.WriteCloser
		name string
		dst  *string
	}{{out, "stdout", &req.Stdout}, {errOut, "stderr", &req.Stderr}} {
		if o.w == nil || (tty && o.name == "stderr") {
			continue
		}
		path := filepath.Join(dir, o.name)
		r, err := fifo.OpenFifo(bg, path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o600)
		if err != nil {
			return fmt.Errorf("exec %s fifo: %w", o.name, err)
		}
		readers = append(readers, r)
		*o.dst = path
		copies.Add(1)
		go func(w io.Writer) {
			defer copies.Done()
			io.Copy(w, r)
		}(o.w)
	}
	if in != nil {
		req.Stdin = filepath.Join(dir, "stdin")
		if err := unix.Mkfifo(req.Stdin, 0o600); err != nil {
			return fmt.Errorf("exec stdin fifo: %w", err)
		}
	}

	if _, err := sh.Task.Exec(ctx, req); err != nil {
		return fmt.Errorf("exec in %s: %w", c.ID, taskErr(err))
	}
	defer sh.Task.Delete(bg, &taskapi.DeleteRequest{ID: c.ID, ExecID: execID})
	if _, err := sh.Task.Start(ctx, &taskapi.StartRequest{ID: c.ID, ExecID: execID}); err != nil {
		return fmt.Errorf("exec %q in %s: %w", cmd[0], c.ID, taskErr(err))
	}
	if in != nil {
		w, err := fifo.OpenFifo(bg, req.Stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			sh.Task.Kill(bg, &taskapi.KillRequest{ID: c.ID, ExecID: execID, Signal: uint32(unix.SIGKILL)})
			return fmt.Errorf("exec stdin: %w", err)
		}
		go feedStdin(bg, sh, c.ID, execID, in, w)
	}
	stopResize := forwardResize(bg, sh, c.ID, execID, resize)
	defer stopResize()

	w, err := sh.Task.Wait(ctx, &taskapi.WaitRequest{ID: c.ID, ExecID: execID})
	if err != nil {
		// The client went away: the command must not outlive its stream.
		sh.Task.Kill(bg, &taskapi.KillRequest{ID: c.ID, ExecID: execID, Signal: uint32(unix.SIGKILL)})
		killed, cancel := context.WithTimeout(bg, killWait)
		sh.Task.Wait(killed, &taskapi.WaitRequest{ID: c.ID, ExecID: execID})
		cancel()
		return fmt.Errorf("exec %q in %s: %w", cmd[0], c.ID, taskErr(err))
	}
	waitCopies(&copies, exitFlushWait)
	if w.ExitStatus != 0 {
		return utilexec.CodeExitError{
			Err:  fmt.Errorf("command %q exited with %d", cmd[0], w.ExitStatus),
			Code: int(w.ExitStatus),
		}
	}
	return nil
}

// feedStdin copies the client's stdin to the process; at its end the
// process gets EOF (CloseIO), as a closed pipe or ^D would give it.
func feedStdin(ctx context.Context, sh *shimclient.Shim, id, execID string, in io.Reader, w io.WriteCloser) {
	io.Copy(w, in)
	w.Close()
	sh.Task.CloseIO(ctx, &taskapi.CloseIORequest{ID: id, ExecID: execID, Stdin: true})
}

// forwardResize passes the client's terminal sizes to the process's
// terminal until stopped.
func forwardResize(ctx context.Context, sh *shimclient.Shim, id, execID string, resize <-chan remotecommand.TerminalSize) func() {
	if resize == nil {
		return func() {}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case size, ok := <-resize:
				if !ok {
					return
				}
				if size.Width == 0 && size.Height == 0 {
					continue
				}
				sh.Task.ResizePty(ctx, &taskapi.ResizePtyRequest{ID: id, ExecID: execID, Width: uint32(size.Width), Height: uint32(size.Height)})
			}
		}
	}()
	return func() { close(stop); <-done }
}

// waitCopies waits for the output copies, bounded: a child the command
// left behind may hold the output open.
func waitCopies(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// errNoStreaming answers streaming calls on a server that is not serving
// (unit tests that never call Serve).
var errNoStreaming = fmt.Errorf("the streaming server is not running: %w", errdefs.ErrUnavailable)

func (s *Server) streamServer() (streamServer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stream == nil {
		return nil, errNoStreaming
	}
	return s.stream, nil
}

// streamServer is what the CRI calls need of cri/streaming.Server.
type streamServer interface {
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
}
