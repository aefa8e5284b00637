package server

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/corral-runtime/corral/metadata"
	shimapi "github.com/corral-runtime/corral/proto/shim/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommand "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// stdinFifo is the name of a container's stdin FIFO in its bundle: made at
// CreateContainer when the container asks for stdin, held open by the shim
// for the container's life, written by each attach.
const stdinFifo = "stdin"

// Attach checks the request and answers the streaming URL of an attach to
// the container's own process (streamRuntime.Attach).
func (s *Server) Attach(ctx context.Context, r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	c, err := s.runningContainer(r.GetContainerId())
	if err != nil {
		return nil, err
	}
	if r.GetStdin() {
		if cfg := containerConfigOf(c); !cfg.GetStdin() {
			return nil, fmt.Errorf("container %s was not created with stdin: attach without stdin, or create it with stdin: true: %w", c.ID, errdefs.ErrInvalidArgument)
		}
	}
	st, err := s.streamServer()
	if err != nil {
		return nil, err
	}
	return st.GetAttach(r)
}

// containerConfigOf decodes the ContainerConfig a container was created
// with; a record without one gives an empty config.
func containerConfigOf(c metadata.Container) *runtimeapi.ContainerConfig {
	var cfg runtimeapi.ContainerConfig
	_ = proto.Unmarshal(c.Config, &cfg)
	return &cfg
}

// Attach connects the client to the container's process: its output from
// now on (the shim copies it to FIFOs beside the log, corral.shim.v1
// Attach), its stdin (the container's stdin FIFO) and terminal size. It
// ends when the container's output ends (it exited) or the client goes.
func (rt streamRuntime) Attach(ctx context.Context, containerID string, in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	s := rt.s
	c, sb, sh, err := s.containerShim(ctx, containerID)
	if err != nil {
		return err
	}
	cfg := containerConfigOf(c)
	tty = cfg.GetTty()
	bg := context.WithoutCancel(ctx)
	dir := filepath.Join(c.Bundle, "attach-"+newID()[:16])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	req := &shimapi.AttachRequest{ContainerId: c.ID}
	type output struct {
		r *os.File
		w io.Writer
	}
	var outputs []output
	defer func() {
		for _, o := range outputs {
			o.r.Close()
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
		if err := unix.Mkfifo(path, 0o600); err != nil {
			return fmt.Errorf("attach %s fifo: %w", o.name, err)
		}
		// Open for reading now (a non-blocking open needs no writer): the
		// shim refuses a FIFO nobody reads. Reading starts once the shim
		// holds the write end, or it would see EOF at once.
		r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("attach %s fifo: %w", o.name, err)
		}
		outputs = append(outputs, output{r, o.w})
		*o.dst = path
	}
	var copies sync.WaitGroup
	if len(outputs) > 0 {
		if _, err := sh.Corral.Attach(ctx, req); err != nil {
			return fmt.Errorf("attach to %s: %w", c.ID, s.corralCallErr(sb, "Attach", err))
		}
		for _, o := range outputs {
			copies.Add(1)
			go func() {
				defer copies.Done()
				io.Copy(o.w, o.r)
			}()
		}
	}

	stdinDone := make(chan struct{})
	if in != nil && cfg.GetStdin() {
		w, err := fifo.OpenFifo(bg, filepath.Join(c.Bundle, stdinFifo), syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("attach to %s: stdin: %w", c.ID, err)
		}
		go func() {
			defer close(stdinDone)
			io.Copy(w, in)
			w.Close()
			// stdin_once: the first attach's end of input is the process's.
			if cfg.GetStdinOnce() {
				sh.Task.CloseIO(bg, &taskapi.CloseIORequest{ID: c.ID, Stdin: true})
			}
		}()
	} else {
		close(stdinDone)
	}
	stopResize := forwardResize(bg, sh, c.ID, "", resize)
	defer stopResize()

	outputsDone := make(chan struct{})
	go func() { copies.Wait(); close(outputsDone) }()
	if req.Stdout == "" && req.Stderr == "" {
		// Input only: the attach lasts as long as the input.
		select {
		case <-stdinDone:
		case <-ctx.Done():
		}
		return nil
	}
	select {
	case <-outputsDone:
	case <-ctx.Done():
	}
	return nil
}
