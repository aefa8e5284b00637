package shimclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/errdefs"
	"github.com/containerd/fifo"
	"github.com/containerd/ttrpc"
	shimapi "github.com/corral-runtime/corral/proto/shim/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Options say which shim to run and how it reaches the daemon.
type Options struct {
	// Binary is the shim: a name on PATH, an absolute path, or a containerd
	// runtime name io.containerd.NAME.vN (containerd-shim-NAME-vN on PATH).
	Binary string
	// Namespace groups the daemon's containers in the shim's paths.
	Namespace string
	// Address is the daemon's socket; shims derive their paths from it.
	Address string
	// TTRPCAddress is where shims forward events.
	TTRPCAddress string
	// PublishBinary is what a shim of containerd 1.4 and older runs to
	// publish an event (-publish-binary): PublishBinary --address ADDRESS
	// publish --topic T --namespace NS, the event on stdin. corrald passes
	// itself (see `corrald publish`); empty means "corrald" on PATH.
	PublishBinary string
	// RuntimeOptions, if set, go to the shim's start on stdin, as containerd
	// sends them (e.g. containerd.runc.v1.Options with the runtime binary).
	RuntimeOptions *anypb.Any
	// Debug asks the shim for debug logs.
	Debug bool
	// Log receives the shim's own log lines.
	Log *slog.Logger
}

// Shim is a connection to one running shim.
type Shim struct {
	Address string
	// Binary is the shim binary Start ran (resolved to a path); empty
	// after Connect.
	Binary string
	Task   taskapi.TTRPCTaskService
	// Corral is corral.shim.v1.Shim on the same connection; another shim
	// answers its calls with errdefs.ErrNotImplemented (after taskErr-style
	// conversion).
	Corral shimapi.ShimService

	client *ttrpc.Client
	done   chan struct{}
	stop   context.CancelFunc
}

// Close drops the connection; the shim keeps running.
func (s *Shim) Close() error {
	if s.stop != nil {
		s.stop()
	}
	return s.client.Close()
}

// Done is closed when the connection to the shim is lost (the shim died or
// closed it).
func (s *Shim) Done() <-chan struct{} { return s.done }

// ResolveBinary maps a runtime name to the shim binary containerd would run.
func ResolveBinary(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("no shim binary configured: %w", errdefs.ErrInvalidArgument)
	}
	if filepath.IsAbs(name) {
		fi, err := os.Stat(name)
		if err != nil {
			return "", fmt.Errorf("shim %s: %w: %w", name, errdefs.ErrNotFound, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("shim %s is not an executable file (mode %s): %w", name, fi.Mode(), errdefs.ErrNotFound)
		}
		return name, nil
	}
	if parts := strings.Split(name, "."); len(parts) == 4 && parts[0] == "io" && parts[1] == "containerd" {
		name = fmt.Sprintf("containerd-shim-%s-%s", parts[2], parts[3])
	}
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	// corral's own shim ships beside corrald: a daemon run from its build
	// directory (make run) finds it there without installing anything.
	if self, serr := os.Executable(); serr == nil {
		beside := filepath.Join(filepath.Dir(self), name)
		if fi, serr := os.Stat(beside); serr == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return beside, nil
		}
	}
	return "", fmt.Errorf("shim %q is neither on PATH nor next to %s: %w: %w", name, os.Args[0], errdefs.ErrNotFound, err)
}

// startTimeout bounds the start subcommand: it only forks and prints.
const startTimeout = 30 * time.Second

// Start runs the shim's start subcommand for container id in bundle and
// connects to the shim that serves it (a new one, or the pod's existing one).
func Start(ctx context.Context, bundle, id string, o Options) (*Shim, error) {
	binary, err := ResolveBinary(o.Binary)
	if err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	logCtx, stopLog := context.WithCancel(context.Background())
	if err := readShimLog(logCtx, bundle, o.Log.With("container", id, "shim", filepath.Base(binary))); err != nil {
		stopLog()
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, shimArgs(id, o, "start")...)
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+o.TTRPCAddress, "GRPC_ADDRESS="+o.Address, "NAMESPACE="+o.Namespace)
	if o.RuntimeOptions != nil {
		b, err := proto.Marshal(o.RuntimeOptions)
		if err != nil {
			stopLog()
			return nil, err
		}
		cmd.Stdin = bytes.NewReader(b)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		stopLog()
		what := strings.TrimSpace(stderr.String() + string(out))
		if what == "" {
			what = "it wrote nothing to stdout or stderr"
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("shim %s start did not print its address within %s: %s: %w", binary, startTimeout, what, errdefs.ErrUnavailable)
		}
		return nil, fmt.Errorf("shim %s start failed (%v) before printing its address: %s", binary, err, what)
	}
	address, err := parseStartOutput(out)
	if err != nil {
		stopLog()
		return nil, fmt.Errorf("shim %s start: %w", binary, err)
	}
	s, err := Connect(ctx, address)
	if err != nil {
		stopLog()
		return nil, fmt.Errorf("shim %s start printed %s: %w", binary, address, err)
	}
	s.Binary = binary
	s.stop = stopLog
	return s, nil
}

func shimArgs(id string, o Options, sub string, extra ...string) []string {
	publish := o.PublishBinary
	if publish == "" {
		publish = "corrald"
	}
	args := []string{"-namespace", o.Namespace, "-id", id, "-address", o.Address, "-publish-binary", publish}
	if o.Debug {
		args = append(args, "-debug")
	}
	args = append(args, extra...)
	return append(args, sub)
}

// parseStartOutput reads the address a shim's start printed: a plain
// address, or containerd 2's JSON bootstrap parameters.
func parseStartOutput(out []byte) (string, error) {
	s := strings.TrimSpace(string(out))
	if strings.HasPrefix(s, "{") {
		var p struct {
			Version  int    `json:"version"`
			Address  string `json:"address"`
			Protocol string `json:"protocol"`
		}
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			return "", fmt.Errorf("bootstrap parameters %q: %w", s, err)
		}
		if p.Protocol != "" && p.Protocol != "ttrpc" {
			return "", fmt.Errorf("shim speaks %q; corral speaks ttrpc: %w", p.Protocol, errdefs.ErrNotImplemented)
		}
		if p.Version > 2 {
			// Task API v3 is wire-compatible for the calls corral makes,
			// but the service name differs; not supported yet.
			return "", fmt.Errorf("shim wants task API v%d; corral speaks v2: %w", p.Version, errdefs.ErrNotImplemented)
		}
		s = p.Address
	}
	if s == "" {
		return "", errors.New("exited without printing its address")
	}
	if !strings.HasPrefix(s, "unix://") || len(s) == len("unix://") {
		return "", fmt.Errorf("printed %q, not a unix:// address", s)
	}
	return s, nil
}

// Connect dials a running shim, e.g. one recorded in the metadata store
// before corrald restarted. It reports errdefs.ErrNotFound when nothing
// listens there any more.
func Connect(ctx context.Context, address string) (*Shim, error) {
	path := strings.TrimPrefix(address, "unix://")
	var conn net.Conn
	var err error
	// A shim that was just started may not be accepting yet.
	for delay := 10 * time.Millisecond; ; delay *= 2 {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "unix", path)
		if err == nil || errors.Is(err, syscall.ENOENT) || delay > time.Second {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("shim at %s: %w: %w", address, errdefs.ErrNotFound, err)
		}
		return nil, fmt.Errorf("dial shim at %s: %w", address, err)
	}
	done := make(chan struct{})
	client := ttrpc.NewClient(conn, ttrpc.WithOnClose(func() { close(done) }))
	return &Shim{Address: address, Task: taskapi.NewTTRPCTaskClient(client), Corral: shimapi.NewShimClient(client), client: client, done: done}, nil
}

// Delete runs the shim's delete subcommand for a container whose shim died:
// the shim binary removes what the running shim would have.
func Delete(ctx context.Context, bundle, id string, o Options) (*taskapi.DeleteResponse, error) {
	binary, err := ResolveBinary(o.Binary)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, shimArgs(id, o, "delete", "-bundle", bundle)...)
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+o.TTRPCAddress, "NAMESPACE="+o.Namespace)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s delete %s: %w: %s", binary, id, err, strings.TrimSpace(stderr.String()))
	}
	var resp taskapi.DeleteResponse
	if err := proto.Unmarshal(out, &resp); err != nil {
		return nil, fmt.Errorf("%s delete %s: response: %w", binary, id, err)
	}
	return &resp, nil
}

// readShimLog creates the bundle's "log" FIFO and copies what the shim
// writes there into log, until ctx ends.
func readShimLog(ctx context.Context, bundle string, log *slog.Logger) error {
	path := filepath.Join(bundle, "log")
	f, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
	if err != nil {
		return fmt.Errorf("shim log fifo: %w", err)
	}
	go func() {
		defer f.Close()
		buf := make([]byte, 32<<10)
		var pending []byte
		for {
			n, err := f.Read(buf)
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				if line := strings.TrimSpace(string(pending[:i])); line != "" {
					log.Info(line)
				}
				pending = pending[i+1:]
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					return
				}
				// Every writer left (a shim that re-opens will come back);
				// wait briefly rather than spin.
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}()
	return nil
}
