// Command corrald is corral's CRI daemon: the kubelet's container runtime.
// It serves CRI v1 over gRPC on a unix socket, keeps its records in
// ROOT/meta.db, and runs one containerd-shim-corral-v2 per pod, so stopping
// or restarting it leaves pods running. See `corrald --help`.
//
// The version it reports is stamped in at build time:
//
//	make build LDFLAGS='-s -w -X main.version=v0.2.0'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/corral-runtime/corral/cri/cgroup"
	"github.com/corral-runtime/corral/cri/config"
	"github.com/corral-runtime/corral/cri/image"
	"github.com/corral-runtime/corral/cri/imagevolume"
	"github.com/corral-runtime/corral/cri/metrics"
	"github.com/corral-runtime/corral/cri/server"
	"github.com/corral-runtime/corral/cri/shimclient"
	"github.com/corral-runtime/corral/metadata"
	"k8s.io/klog/v2"
)

// version is set with -ldflags '-X main.version=...'; it is a variable only
// because the linker can set nothing else.
var version = "0.1.0-dev"

// Default places, the ones the design brief promises.
const (
	defaultRoot  = "/var/lib/corral"
	defaultState = config.DefaultState
	socketName   = "corral.sock"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// usageError is a mistake on the command line: exit status 2, as flag does.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// flags are corrald's command line, parsed.
type flags struct {
	config, root, state, logLevel, listen, address string
	version                                        bool
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corrald", flag.ContinueOnError)
	// flag reports a bad flag itself; --help goes to stdout, not with it.
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	var f flags
	fs.StringVar(&f.config, "config", "", "read the configuration from `FILE` (TOML); without it corrald runs on the built-in defaults")
	fs.StringVar(&f.root, "root", defaultRoot, "keep persistent state in `DIR`: the metadata store DIR/meta.db, images, snapshots")
	fs.StringVar(&f.state, "state", defaultState, "keep runtime state in `DIR`: the CRI socket, shim sockets, pod mounts; nothing there needs to survive a reboot")
	fs.StringVar(&f.logLevel, "log-level", "", "log at `LEVEL`: debug, info, warn or error (default: log_level from the config, info)")
	fs.StringVar(&f.listen, "listen", "", "serve CRI on `unix:///PATH` (default unix://STATE/"+socketName+")")
	fs.StringVar(&f.address, "address", "", "with publish: the daemon socket `PATH` whose events service, PATH.ttrpc, gets the event (default STATE/"+socketName+")")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(fs, stdout)
			return 0
		}
		fmt.Fprintln(stderr, "Run 'corrald --help' for usage.")
		return 2
	}
	err := dispatch(f, fs.Args(), stdin, stdout, stderr)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "corrald: %v\nRun 'corrald --help' for usage.\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "corrald: %v\n", err)
		return 1
	}
}

func dispatch(f flags, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	switch {
	case f.version:
		_, err := fmt.Fprintf(stdout, "corrald %s\n", version)
		return err
	case len(args) == 0:
		return serve(f, stderr)
	case args[0] == "config" && len(args) == 2 && args[1] == "default":
		return config.WriteDefault(stdout)
	case args[0] == "config":
		return usageError{"config: the one config command is `corrald config default`"}
	case args[0] == "publish":
		return publish(f, args[1:], stdin, stderr)
	default:
		return usageError{fmt.Sprintf("unknown command %q", strings.Join(args, " "))}
	}
}

// serve runs the daemon until SIGTERM or SIGINT.
func serve(f flags, stderr io.Writer) error {
	if f.logLevel != "" {
		if _, err := config.ParseLogLevel(f.logLevel); err != nil {
			return usageError{"--log-level: " + err.Error()}
		}
	}
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	source := "built-in defaults"
	if f.config != "" {
		source = f.config
	}
	if f.logLevel != "" {
		cfg.LogLevel = f.logLevel
	}
	level, err := config.ParseLogLevel(cfg.LogLevel)
	if err != nil {
		return err // Load validated it; only a bug gets here
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// A driver the node cannot use would fail every pod; say so at start.
	if err := cgroup.CheckDriver(cfg.CgroupDriver); err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	// The Kubernetes streaming server logs through klog: into corrald's log.
	klog.SetSlogLogger(log.With("component", "streaming"))

	// Absolute paths: shims and mounts outlive this process's working
	// directory.
	root, err := filepath.Abs(f.root)
	if err != nil {
		return fmt.Errorf("--root: %w", err)
	}
	state, err := filepath.Abs(f.state)
	if err != nil {
		return fmt.Errorf("--state: %w", err)
	}
	endpoint := f.listen
	if endpoint == "" {
		endpoint = "unix://" + filepath.Join(state, socketName)
	}
	socket, err := server.SocketPath(endpoint)
	if err != nil {
		return usageError{"--listen: " + err.Error()}
	}
	if err := os.MkdirAll(state, 0o711); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	// Searchable, not listable, by others, as containerd's: a pod with a
	// user namespace runs as an unprivileged host ID, and the runtime
	// reaches the pod's rootfs below root as that ID.
	if err := os.MkdirAll(root, 0o711); err != nil {
		return fmt.Errorf("root dir: %w", err)
	}

	// The store first: its lock is what keeps a second corrald off this
	// root, and that must be found before the socket is touched.
	store, err := metadata.Open(filepath.Join(root, "meta.db"), metadata.Options{})
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close metadata store", "error", err)
		}
	}()
	// Metrics are made only when served: with none, every report is a
	// no-op on a nil *metrics.Metrics.
	var m *metrics.Metrics
	if cfg.Metrics.Address != "" {
		m = metrics.New()
	}
	images, err := image.New(image.Options{
		Root:               root,
		Store:              store,
		RegistryConfigPath: cfg.Registry.ConfigPath,
		ProgressTimeout:    time.Duration(cfg.Image.PullProgressTimeout),
		InUse:              containerSnapshots(store),
		Log:                log,
		Metrics:            m,
	})
	if err != nil {
		return err
	}
	srv, err := server.New(cfg, store, server.Options{
		Logger: log, Version: version, Images: images, Root: root, State: state, Metrics: m,
		Ready: func() {
			if err := sdNotify("READY=1"); err != nil {
				log.Warn("cannot tell systemd corrald is ready", "error", err)
			}
		},
	})
	if err != nil {
		return err
	}
	l, err := server.Listen(socket)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if m != nil {
		ml, err := net.Listen("tcp", cfg.Metrics.Address)
		if err != nil {
			l.Close()
			return fmt.Errorf("metrics endpoint ([metrics] address): %w", err)
		}
		mctx, cancel := context.WithCancel(ctx)
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := m.Serve(mctx, ml); err != nil {
				log.Error("metrics endpoint stopped", "error", err)
			}
		}()
		// It serves as long as the CRI does, however that ends.
		defer func() { cancel(); <-served }()
		log.Info("serving metrics", "address", "http://"+ml.Addr().String()+"/metrics")
	}
	log.Info("corrald starting", "version", version, "root", root, "state", state,
		"socket", socket, "config", source, "pid", os.Getpid())
	err = srv.Serve(ctx, l)
	sdNotify("STOPPING=1")
	// Pods are left to their shims: a restarted corrald finds them again.
	log.Info("corrald stopped; running pods keep running", "error", err)
	return err
}

// publish is containerd's `publish` command, the -publish-binary of shims
// from containerd 1.4 and older: they run
//
//	corrald --address ADDRESS publish --topic TOPIC --namespace NS
//
// for each event, with the event (a marshalled protobuf Any) on stdin, and
// it goes to the running corrald's events service at ADDRESS.ttrpc. Newer
// shims dial TTRPC_ADDRESS themselves; containerd 1.6's runc shim does.
func publish(f flags, args []string, stdin io.Reader, stderr io.Writer) error {
	fs := flag.NewFlagSet("corrald publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	topic := fs.String("topic", "", "the event's topic, e.g. /tasks/exit")
	namespace := fs.String("namespace", "", "the namespace of the shim's containers")
	if err := fs.Parse(args); err != nil {
		return usageError{"publish: " + err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("publish: unexpected arguments %q", fs.Args())}
	}
	address := f.address
	if address == "" {
		state, err := filepath.Abs(f.state)
		if err != nil {
			return err
		}
		address = filepath.Join(state, socketName)
	}
	payload, err := io.ReadAll(io.LimitReader(stdin, maxEventSize))
	if err != nil {
		return fmt.Errorf("publish: read the event: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := shimclient.Publish(ctx, strings.TrimPrefix(address, "unix://")+".ttrpc", *namespace, *topic, payload); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// An event is a few hundred bytes; a shim that sends more is broken.
const maxEventSize = 1 << 20

// publishTimeout bounds one publish: the shim waits for it and retries.
const publishTimeout = 10 * time.Second

// containerSnapshots lists the image snapshots containers run on, which
// image garbage collection must keep even after their image is removed.
func containerSnapshots(store *metadata.Store) func() ([]string, error) {
	return func() ([]string, error) {
		cs, err := store.ListContainers(nil)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, c := range cs {
			if id := c.Extra[metadata.ExtraSnapshot]; id != "" {
				out = append(out, id)
			}
			out = append(out, imagevolume.Snapshots(c.Extra)...)
		}
		return out, nil
	}
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, `Usage: corrald [flags]
       corrald config default
       corrald [--address PATH] publish --topic TOPIC --namespace NS < EVENT

corrald is corral's Kubernetes container runtime daemon. It serves the CRI v1
RuntimeService and ImageService over gRPC, keeps every pod, container and image
record in ROOT/meta.db, and runs one containerd-shim-corral-v2 per pod. On
SIGTERM or SIGINT it finishes the calls in flight and exits, leaving running
pods running; started again, it picks them up.

The CRI socket is STATE/corral.sock (/run/corral/corral.sock by default)
unless --listen names another, mode 0660, owner and group root. Point the
kubelet at it with --container-runtime-endpoint=unix:///run/corral/corral.sock
and crictl with --runtime-endpoint or /etc/crictl.yaml.

The configuration is a TOML file given with --config. Without one corrald runs
on built-in defaults that work on a plain node; 'corrald config default' prints
them with a comment on every key. A file sets only what it changes, and an
unknown key is an error.

Commands:
  config default   print the built-in configuration, every key commented
  publish          forward one event (a protobuf Any on stdin) to the running
                   corrald's events service: the -publish-binary of shims from
                   containerd 1.4 and older, which corrald passes to every shim

Flags:
`)
	fs.VisitAll(func(fl *flag.Flag) {
		name, text := flag.UnquoteUsage(fl)
		fmt.Fprintf(w, "  %s\n", strings.TrimSpace("--"+fl.Name+" "+name))
		if fl.DefValue != "" && fl.DefValue != "false" {
			text += fmt.Sprintf(" (default %s)", fl.DefValue)
		}
		fmt.Fprintf(w, "        %s\n", text)
	})
}
