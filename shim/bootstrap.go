package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	runc "github.com/containerd/go-runc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config is what the daemon tells a shim through its flags and environment.
type Config struct {
	Namespace    string // -namespace
	ID           string // -id: the container the call is for
	Address      string // -address: the daemon's socket; shim paths derive from it
	TTRPCAddress string // $TTRPC_ADDRESS: where events go
	Socket       string // -socket: the long-running shim's own socket (set by start)
	Debug        bool   // -debug
}

// SandboxIDAnnotation groups the containers of one pod into one shim; it is
// the annotation containerd's CRI plugin and corrald set on every container.
const SandboxIDAnnotation = "io.kubernetes.cri.sandbox-id"

// StartOnCreateAnnotation, "true" in a bundle's config.json, asks the shim
// to start the container as it creates it (runc run --detach: one runtime
// process instead of create and then start); Start then only reports the
// pid. corrald sets it on pause containers, whose create is always
// followed by a start. Other shims ignore it and start on Start.
const StartOnCreateAnnotation = "io.corral.shim.start-on-create"

// CreateAtStartAnnotation, "true" in a bundle's config.json, asks the shim
// to make the runtime's container only at Start, with one runc run
// --detach, instead of runc create at Create and runc start at Start: one
// runtime process less per container, as containerd's CRI plugin gets by
// creating the task only at StartContainer. Until Start the container has
// no process: State says CREATED with pid 0, Pids is empty, Stats fails
// with FailedPrecondition, Kill ends it as a runtime would end its blocked
// init (exit status 128+signal), and Update changes nothing, since run
// reads the bundle's config.json, where corrald records every update.
// Other shims ignore it.
const CreateAtStartAnnotation = "io.corral.shim.create-at-start"

// maxSocketPath is sun_path's size less the terminating NUL.
const maxSocketPath = 107

// SocketPath is the shim socket of a group: DIR(address)/s/HASH, the hash
// covering address, namespace and group so daemons never collide.
func SocketPath(address, namespace, group string) string {
	address = strings.TrimPrefix(address, "unix://")
	sum := sha256.Sum256([]byte(address + "\x00" + namespace + "\x00" + group))
	return filepath.Join(filepath.Dir(address), "s", hex.EncodeToString(sum[:16]))
}

// groupOf reads the bundle's config.json for the pod the container belongs
// to; a container outside any pod is a group of its own.
func groupOf(bundle, id string) string {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return id
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(b, &spec) != nil {
		return id
	}
	if g := spec.Annotations[SandboxIDAnnotation]; g != "" {
		return g
	}
	return id
}

// Start is the start subcommand: it makes sure a shim serves the container's
// group, records its address in the bundle (the working directory) and
// returns the address to print.
func Start(ctx context.Context, cfg Config) (string, error) {
	if cfg.ID == "" || cfg.Address == "" {
		return "", errors.New("start needs -id and -address")
	}
	bundle, err := os.Getwd()
	if err != nil {
		return "", err
	}
	path := SocketPath(cfg.Address, cfg.Namespace, groupOf(bundle, cfg.ID))
	if len(path) > maxSocketPath {
		return "", fmt.Errorf("shim socket path %s is longer than %d bytes: use a shorter daemon state dir", path, maxSocketPath)
	}
	address := "unix://" + path
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return "", err
	}

	l, err := listen(path)
	if errors.Is(err, errShimRunning) {
		// The pod's shim already runs: this container joins it.
		if err := writeBundleFile(bundle, "address", address); err != nil {
			return "", err
		}
		if pid, err := os.ReadFile(filepath.Join(filepath.Dir(path), filepath.Base(path)+".pid")); err == nil {
			_ = writeBundleFile(bundle, "shim.pid", string(pid))
		}
		return address, nil
	}
	if err != nil {
		return "", err
	}
	defer l.Close()
	f, err := l.File()
	if err != nil {
		return "", err
	}
	defer f.Close()

	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	args := []string{"-namespace", cfg.Namespace, "-id", cfg.ID, "-address", cfg.Address, "-socket", path}
	if cfg.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = bundle
	cmd.ExtraFiles = []*os.File{f}
	// What the Go runtime itself prints (a panic, a fatal error, the
	// goroutine dump SIGQUIT asks for) would go nowhere: the shim runs
	// detached. The bundle keeps it, beside the shim's own log.
	if stderr, err := os.OpenFile(filepath.Join(bundle, "shim.stderr"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		defer stderr.Close()
		cmd.Stderr = stderr
	}
	// Its own session: the shim must outlive the daemon that started it and
	// must not get the daemon's terminal signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = os.Environ()
	if os.Getenv("GOMAXPROCS") == "" {
		// A shim mostly waits on runc and pipes, whose work runs in other
		// processes: one P is enough, and each P costs the shim its own
		// cached spans of every size class (about 250 KiB of PSS here).
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	if err := cmd.Start(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("start shim: %w", err)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	cmd.Process.Release()
	if err := os.WriteFile(path+".pid", []byte(pid), 0o600); err != nil {
		return "", err
	}
	if err := writeBundleFile(bundle, "shim.pid", pid); err != nil {
		return "", err
	}
	if err := writeBundleFile(bundle, "address", address); err != nil {
		return "", err
	}
	return address, nil
}

var errShimRunning = errors.New("a shim already serves this socket")

// listen creates the socket, or reports errShimRunning when a live shim owns
// it; a socket left by a dead shim is replaced.
func listen(path string) (*net.UnixListener, error) {
	for range 2 {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			// The socket belongs to the shim process, not to this one.
			l.SetUnlinkOnClose(false)
			return l, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
		if alive(path) {
			return nil, errShimRunning
		}
		os.Remove(path)
	}
	return nil, fmt.Errorf("socket %s stays in use but nobody answers", path)
}

func alive(path string) bool {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func writeBundleFile(bundle, name, content string) error {
	tmp := filepath.Join(bundle, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(bundle, name))
}

// Delete is the delete subcommand: after a shim died, it removes what the
// shim would have removed for container cfg.ID in bundle and reports the
// container as killed.
func Delete(ctx context.Context, cfg Config, bundle string) (*taskapi.DeleteResponse, error) {
	if cfg.ID == "" {
		return nil, errors.New("delete needs -id")
	}
	if bundle == "" {
		var err error
		if bundle, err = os.Getwd(); err != nil {
			return nil, err
		}
	}
	opts := readOptions(bundle)
	binary := opts.BinaryName
	if binary == "" {
		binary = "runc"
	}
	r := &runc.Runc{Command: binary, Root: runtimeRoot(cfg.Address, cfg.Namespace, opts.Root)}
	if err := r.Delete(ctx, cfg.ID, &runc.DeleteOpts{Force: true}); err != nil && !isNotExist(err) {
		return nil, fmt.Errorf("%s delete %s: %w", binary, cfg.ID, err)
	}
	if err := unmountAll(filepath.Join(bundle, "rootfs")); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(bundle, "address")); err == nil {
		path := strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://")
		if !alive(path) {
			os.Remove(path)
			os.Remove(path + ".pid")
		}
	}
	pid, _ := readPidFile(filepath.Join(bundle, "init.pid"))
	return &taskapi.DeleteResponse{
		Pid:        uint32(pid),
		ExitStatus: 128 + uint32(syscall.SIGKILL),
		ExitedAt:   timestamppb.Now(),
	}, nil
}
