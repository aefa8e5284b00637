package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"github.com/corral-runtime/corral/cri/cgroup"
	"github.com/corral-runtime/corral/cri/config"
	"github.com/corral-runtime/corral/cri/image"
	"github.com/corral-runtime/corral/cri/metrics"
	"github.com/corral-runtime/corral/cri/network"
	"github.com/corral-runtime/corral/cri/nri"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/cri/spec"
	"github.com/corral-runtime/corral/cri/streaming"
	"github.com/corral-runtime/corral/metadata"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The names Version reports.
const (
	// RuntimeName is what the kubelet shows as the container runtime.
	RuntimeName = "corral"
	// RuntimeAPIVersion is the CRI version served.
	RuntimeAPIVersion = "v1"
	// kubeletAPIVersion is VersionResponse.version, which the CRI fixes at
	// "0.1.0" for every runtime.
	kubeletAPIVersion = "0.1.0"
)

// DefaultShutdownTimeout bounds a graceful stop: calls in flight get this
// long to finish before their connections are cut.
const DefaultShutdownTimeout = 5 * time.Second

// maxMsgSize matches the kubelet's CRI client, so a ListContainers on a busy
// node fits in one message both ways.
const maxMsgSize = 16 << 20

// Options tunes New. The zero value works.
type Options struct {
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// Version is corrald's own version, reported as RuntimeVersion; empty
	// means "unknown". corrald passes the one stamped in at build time.
	Version string
	// ShutdownTimeout bounds the graceful part of stopping; zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Images is the image store behind the ImageService; without it the
	// image calls answer Unimplemented.
	Images *image.Service
	// Root and State are corrald's --root and --state directories; the
	// pod and container calls need them.
	Root, State string
	// Host answers spec generation's questions about the node; nil means
	// the node corrald runs on.
	Host spec.Host
	// Metrics records CRI calls, CNI operations and recovery, and counts
	// pods, containers and shims at scrape time; nil means no metrics.
	Metrics *metrics.Metrics
	// Ready, if set, is called once Serve has recovered the pods and
	// answers calls: corrald tells systemd then (Type=notify).
	Ready func()
}

// Server answers CRI calls. Create it with New and run it with Serve.
type Server struct {
	// Embedded by value, as grpc-go requires: every call not built yet is
	// answered by these.
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	cfg *config.Config
	// store is the record of truth: the calls that change state (sandboxes,
	// containers, images) commit to it before they answer.
	store           *metadata.Store
	log             *slog.Logger
	version         string
	shutdownTimeout time.Duration
	grpc            *grpc.Server
	codec           requestCodec // decodes and checks every request
	images          *image.Service
	metrics         *metrics.Metrics
	ready           func()

	paths    layout
	net      *network.Manager // nil without a root (unit tests)
	host     spec.Host
	restrict bool // clamp oom_score_adj: corrald cannot lower it
	// pidsLimit is every container's pids.max, the config's pids_limit.
	pidsLimit int64
	locks     metadata.Locks
	shims     shims
	features  handlerFeatures
	hub       eventHub
	// shimEvents carries what shims forward to debug Events streams.
	shimEvents envelopeHub
	oom        oomSet
	cgroups    cgroup.Node
	cpu        cpuSamples
	stopping   chan struct{}
	// nri relays events to NRI plugins; nil when NRI is off.
	nri *nri.NRI
	// pending are the pods and containers being created, not yet shown.
	pending pendingSet

	mu sync.Mutex
	// podCIDR is what the kubelet last sent in UpdateRuntimeConfig. It is
	// not persisted: the kubelet sends it again whenever it starts.
	podCIDR string
	// stream is the streaming server while Serve runs.
	stream streamServer
}

// New checks cfg and returns a Server backed by store, not yet serving.
func New(cfg *config.Config, store *metadata.Store, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("server: no config")
	}
	if store == nil {
		return nil, errors.New("server: no metadata store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server: invalid config: %w", err)
	}
	s := &Server{
		cfg:             cfg,
		store:           store,
		log:             opts.Logger,
		version:         opts.Version,
		shutdownTimeout: opts.ShutdownTimeout,
		images:          opts.Images,
		paths:           layout{root: opts.Root, state: opts.State},
		host:            opts.Host,
		metrics:         opts.Metrics,
		ready:           opts.Ready,
		restrict:        cfg.RestrictOOMScoreAdj || lacksCapSysResource(),
		pidsLimit:       cfg.PidsLimit,
		stopping:        make(chan struct{}),
		cgroups:         cgroup.Host(),
	}
	if s.host == nil {
		s.host = spec.OSHost{RuntimeDefault: spec.DefaultSeccomp}
	}
	if opts.Root != "" {
		// libcni's cache of what each ADD set up is what a DEL after a
		// restart or a config change needs: it lives under ROOT.
		s.net = network.New(cfg.Network.ConfDir, cfg.Network.BinDirs, filepath.Join(opts.Root, "cni"), s.log)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.version == "" {
		s.version = "unknown"
	}
	if s.shutdownTimeout <= 0 {
		s.shutdownTimeout = DefaultShutdownTimeout
	}
	n, err := s.newNRI()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.nri = n
	unary := []grpc.UnaryServerInterceptor{s.unaryInterceptor}
	stream := []grpc.StreamServerInterceptor{s.streamInterceptor}
	if s.metrics != nil {
		// Outermost: the metrics see the status the client gets.
		unary = append([]grpc.UnaryServerInterceptor{s.metrics.UnaryServerInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{s.metrics.StreamServerInterceptor()}, stream...)
		if err := s.registerMetrics(); err != nil {
			return nil, fmt.Errorf("server: metrics: %w", err)
		}
	}
	s.codec = newRequestCodec()
	s.grpc = grpc.NewServer(
		grpc.ForceServerCodecV2(s.codec),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.MaxSendMsgSize(maxMsgSize),
	)
	runtimeapi.RegisterRuntimeServiceServer(s.grpc, s)
	runtimeapi.RegisterImageServiceServer(s.grpc, s)
	return s, nil
}

// Serve answers CRI calls on l until ctx is done, then stops: calls in flight
// get the shutdown timeout to finish, after which the remaining connections
// are cut. It closes l (which removes a unix socket created by Listen). It
// returns nil after a stop caused by ctx, and the listener's error otherwise.
// A Server serves once.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if s.paths.state != "" {
		// Shims forward their events here; it must listen before shims are
		// reconnected, so queued exits arrive as soon as possible.
		stopEvents, err := s.serveEvents(ctx)
		if err != nil {
			return err
		}
		defer stopEvents()
		stopDebug, err := s.serveDebug(ctx)
		if err != nil {
			return err
		}
		defer stopDebug()
		s.recover(ctx)
		if err := s.nri.Start(ctx); err != nil {
			return err
		}
		defer s.nri.Stop()
	}
	defer s.shims.closeAll()
	stopStreaming, err := s.serveStreaming(ctx)
	if err != nil {
		return err
	}
	defer stopStreaming()
	served := make(chan error, 1)
	go func() { served <- s.grpc.Serve(l) }()
	if s.ready != nil {
		s.ready()
	}
	select {
	case err := <-served:
		s.grpc.Stop()
		if err != nil {
			return fmt.Errorf("serve CRI: %w", err)
		}
		return nil
	case <-ctx.Done():
	}

	// Event streams never end by themselves; end them so the graceful stop
	// does not wait for them.
	close(s.stopping)
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(s.shutdownTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		// A long call (a pull, an event stream) would hold GracefulStop
		// forever; cutting it is what a kubelet sees on any restart anyway.
		s.log.Warn("CRI calls still running after the shutdown timeout; closing their connections", "timeout", s.shutdownTimeout)
		s.grpc.Stop()
		<-stopped
	}
	if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve CRI: %w", err)
	}
	return nil
}

// Listen opens the CRI socket at endpoint, "unix:///path" or "/path". It
// creates the parent directories, replaces a stale socket left by a daemon
// that died, refuses to take over a socket another process still serves on,
// and makes the socket 0660, owner and group root when run as root: the
// socket runs containers as root, so it must not be open to everyone.
func Listen(endpoint string) (net.Listener, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(path, 0, 0); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	return l, nil
}

// SocketPath returns the file path of a unix endpoint, "unix:///path" or
// "/path", refusing what a unix socket cannot be.
func SocketPath(endpoint string) (string, error) {
	path := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = rest
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("endpoint %q: only unix:///path is supported", endpoint)
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("endpoint %q: the socket path must be absolute (unix:///run/corral/corral.sock)", endpoint)
	}
	// sun_path holds 108 bytes including the terminating NUL.
	if len(path) > 107 {
		return "", fmt.Errorf("endpoint %q: socket path is %d bytes, longer than the 107 a unix socket allows; choose a shorter --state or --listen", endpoint, len(path))
	}
	return filepath.Clean(path), nil
}

// removeStaleSocket removes a socket nobody answers on. Anything else at the
// path is left alone and reported: it is either another daemon's live socket
// or a file that is not ours to delete.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("listen: %s exists and is not a socket; move it away", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("listen: another process is serving on %s (is another corrald running with the same --state or --listen?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("listen: probe %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("listen: remove stale socket: %w", err)
	}
	return nil
}

// errNoImages answers image calls on a server built without an image store
// (unit tests of other calls).
var errNoImages = fmt.Errorf("image service: %w", errdefs.ErrNotImplemented)

// serveStreaming binds [streaming] address and serves exec, attach and
// port-forward streams until the returned function is called.
func (s *Server) serveStreaming(ctx context.Context) (func(), error) {
	st, err := streaming.Listen(s.cfg.Streaming.Address, streamRuntime{s}, s.log.With("component", "streaming"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := st.Serve(ctx); err != nil {
			s.log.Error("streaming server", "error", err)
		}
	}()
	s.mu.Lock()
	s.stream = st
	s.mu.Unlock()
	s.log.Info("streaming server listening", "address", st.Addr())
	return func() {
		s.mu.Lock()
		s.stream = nil
		s.mu.Unlock()
		cancel()
		<-done
	}, nil
}

// serveEvents listens for the shims' events at STATE/corral.sock.ttrpc.
func (s *Server) serveEvents(ctx context.Context) (func(), error) {
	events, err := shimclient.NewEventServer(s.handleShimEvent)
	if err != nil {
		return nil, err
	}
	l, err := shimclient.Listen(s.paths.eventsAddress())
	if err != nil {
		return nil, fmt.Errorf("events socket: %w", err)
	}
	go func() {
		if err := events.Serve(context.WithoutCancel(ctx), l); err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
			s.log.Error("events server", "error", err)
		}
	}()
	return func() { events.Close() }, nil
}
