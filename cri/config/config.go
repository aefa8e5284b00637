package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Built-in names and values that other packages refer to.
const (
	// DefaultHandler is the runtime handler pods get when their RuntimeClass
	// names none.
	DefaultHandler = "runc"
	// DefaultShim is corral's own shim, the shim of every built-in handler.
	DefaultShim = "containerd-shim-corral-v2"
	// DefaultRuncPath is where Debian installs runc.
	DefaultRuncPath = "/usr/sbin/runc"

	// CgroupDriverCgroupfs has the OCI runtime write cgroupfs directly.
	CgroupDriverCgroupfs = "cgroupfs"
	// CgroupDriverSystemd has the OCI runtime create systemd scopes.
	CgroupDriverSystemd = "systemd"

	// DefaultState is corrald's --state directory unless told otherwise.
	DefaultState = "/run/corral"
	// DefaultNRISocket is where NRI plugins connect by default, as with
	// containerd and CRI-O.
	DefaultNRISocket = "/var/run/nri/nri.sock"
)

// Config is the whole configuration. The zero value is not usable; start
// from Default or Load.
type Config struct {
	// DefaultRuntime is the handler, a key of Runtimes, for pods whose
	// RuntimeClass names no handler.
	DefaultRuntime string `toml:"default_runtime" json:"default_runtime"`
	// LogLevel is debug, info, warn or error; --log-level overrides it.
	LogLevel string `toml:"log_level" json:"log_level"`
	// CgroupDriver is CgroupDriverCgroupfs or CgroupDriverSystemd. It must
	// match the kubelet's, which learns it from the RuntimeConfig call.
	CgroupDriver string `toml:"cgroup_driver" json:"cgroup_driver"`
	// RestrictOOMScoreAdj clamps every container's oom_score_adj to no lower
	// than corrald's own, as containerd's option of the same name does.
	RestrictOOMScoreAdj bool `toml:"restrict_oom_score_adj" json:"restrict_oom_score_adj"`
	// PidsLimit caps the number of processes (tasks) in each container's
	// cgroup, the pids controller's pids.max; 0 sets none. The kubelet's
	// podPidsLimit caps a whole pod; this guards a node whose kubelet
	// sets none against a fork bomb in one container.
	PidsLimit int64 `toml:"pids_limit" json:"pids_limit"`

	Registry  Registry  `toml:"registry" json:"registry"`
	Image     Image     `toml:"image" json:"image"`
	Sandbox   Sandbox   `toml:"sandbox" json:"sandbox"`
	Network   Network   `toml:"network" json:"network"`
	Streaming Streaming `toml:"streaming" json:"streaming"`
	Metrics   Metrics   `toml:"metrics" json:"metrics"`
	NRI       NRI       `toml:"nri" json:"nri"`

	// Runtimes maps a RuntimeClass handler name to the shim that runs its
	// pods.
	Runtimes map[string]Runtime `toml:"runtimes" json:"runtimes"`
}

// Registry configures how images are fetched.
type Registry struct {
	// ConfigPath is a directory in containerd's certs.d layout,
	// <ConfigPath>/<host>/hosts.toml; empty means no per-host configuration.
	ConfigPath string `toml:"config_path" json:"config_path"`
}

// Image configures image pulls.
type Image struct {
	// PullProgressTimeout cancels a pull that has received no bytes for this
	// long; zero never cancels.
	PullProgressTimeout Duration `toml:"pull_progress_timeout" json:"pull_progress_timeout"`
}

// Sandbox configures the pod sandbox.
type Sandbox struct {
	// PauseBinary is the program run as each pod's infra process; empty
	// means corral's built-in one, so no pause image is ever pulled.
	PauseBinary string `toml:"pause_binary" json:"pause_binary"`
}

// Network configures pod networking through CNI.
type Network struct {
	// ConfDir holds the CNI network configuration files.
	ConfDir string `toml:"conf_dir" json:"conf_dir"`
	// BinDirs are searched in order for CNI plugin binaries.
	BinDirs []string `toml:"bin_dirs" json:"bin_dirs"`
}

// Streaming configures the HTTP server behind exec, attach and port-forward.
type Streaming struct {
	// Address is host:port; port 0 picks a free port at start.
	Address string `toml:"address" json:"address"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Address is host:port; empty turns the endpoint off.
	Address string `toml:"address" json:"address"`
}

// NRI configures the Node Resource Interface: plugins that are told of
// every pod and container event and may adjust containers (cri/nri).
type NRI struct {
	// Enable turns NRI on.
	Enable bool `toml:"enable" json:"enable"`
	// SocketPath is where plugins connect. Empty means DefaultNRISocket
	// for a corrald on the default --state, and STATE/nri.sock for any
	// other, so that corralds side by side (tests) do not share one.
	SocketPath string `toml:"socket_path" json:"socket_path"`
	// PluginPath holds plugins corrald starts itself, named IDX-NAME.
	PluginPath string `toml:"plugin_path" json:"plugin_path"`
	// PluginConfigPath holds the configuration drop-ins of those plugins.
	PluginConfigPath string `toml:"plugin_config_path" json:"plugin_config_path"`
	// PluginRegistrationTimeout bounds a plugin's registration.
	PluginRegistrationTimeout Duration `toml:"plugin_registration_timeout" json:"plugin_registration_timeout"`
	// PluginRequestTimeout bounds each request to a plugin; a plugin that
	// does not answer in time is disconnected.
	PluginRequestTimeout Duration `toml:"plugin_request_timeout" json:"plugin_request_timeout"`
	// DisableConnections accepts no plugin connections: only the plugins
	// in PluginPath run.
	DisableConnections bool `toml:"disable_connections" json:"disable_connections"`
}

// Socket is where NRI plugins connect to a corrald whose --state is
// state; "" when connections are disabled.
func (n NRI) Socket(state string) string {
	switch {
	case n.DisableConnections:
		return ""
	case n.SocketPath != "":
		return n.SocketPath
	case filepath.Clean(state) == DefaultState:
		return DefaultNRISocket
	}
	return filepath.Join(state, "nri.sock")
}

// Runtime is one runtime handler: the shim binary started for each of its
// pods and what that shim is told to run.
type Runtime struct {
	// Shim is a containerd shim v2 binary: a name looked up on PATH, an
	// absolute path, or containerd's io.containerd.<name>.v<N> spelling.
	Shim string `toml:"shim" json:"shim"`
	// Runtime is the OCI runtime binary the shim drives; empty leaves the
	// choice to the shim.
	Runtime string `toml:"runtime" json:"runtime"`
	// Root is the OCI runtime's state directory (its --root); empty leaves
	// the choice to the shim.
	Root string `toml:"root" json:"root"`
	// Options are handed to the shim with every container, in the shape the
	// shim expects: containerd's runc options (BinaryName, SystemdCgroup,
	// ...) for runc shims, containerd's runtimeoptions (ConfigPath) for any
	// other shim, such as Kata's. See Runtime.ShimOptions.
	Options map[string]any `toml:"options,omitempty" json:"options,omitempty"`
	// PodAnnotations are patterns (path.Match globs) of pod annotations
	// copied into the OCI spec of the pod and of each of its containers, so
	// a shim can read them (Kata's io.katacontainers.*), as containerd's
	// pod_annotations does.
	PodAnnotations []string `toml:"pod_annotations,omitempty" json:"pod_annotations,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "5m")
// in TOML and JSON, which TOML has no type for.
type Duration time.Duration

// MarshalText writes d as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).String()), nil
}

// UnmarshalText reads a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"30s\" or \"5m\": %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// String prints d as a Go duration.
func (d Duration) String() string {
	return time.Duration(d).String()
}

// Default returns the built-in configuration, the one corrald runs with when
// no file is given. It includes a "crun" handler when crun is on PATH, so it
// depends on the host it runs on.
func Default() *Config {
	return defaults(exec.LookPath)
}

// defaults takes the PATH lookup as a parameter so tests can pretend crun is
// or is not installed.
func defaults(lookPath func(string) (string, error)) *Config {
	c := &Config{
		DefaultRuntime: DefaultHandler,
		LogLevel:       "info",
		CgroupDriver:   CgroupDriverCgroupfs,
		Registry:       Registry{ConfigPath: "/etc/corral/certs.d"},
		Image:          Image{PullProgressTimeout: Duration(5 * time.Minute)},
		Network: Network{
			ConfDir: "/etc/cni/net.d",
			// Upstream's install location first, then Debian's package.
			BinDirs: []string{"/opt/cni/bin", "/usr/lib/cni"},
		},
		Streaming: Streaming{Address: "127.0.0.1:0"},
		NRI: NRI{
			Enable:                    true,
			PluginPath:                "/opt/nri/plugins",
			PluginConfigPath:          "/etc/nri/conf.d",
			PluginRegistrationTimeout: Duration(5 * time.Second),
			PluginRequestTimeout:      Duration(2 * time.Second),
		},
		Runtimes: map[string]Runtime{
			DefaultHandler: {Shim: DefaultShim, Runtime: DefaultRuncPath},
		},
	}
	// An absolute path only: a relative PATH entry would make the handler
	// depend on corrald's working directory.
	if p, err := lookPath("crun"); err == nil && filepath.IsAbs(p) {
		c.Runtimes["crun"] = Runtime{Shim: DefaultShim, Runtime: p}
	}
	return c
}

// Load reads the TOML file at path over Default and validates the result. An
// empty path means no file: Default, validated. A file that does not exist
// is an error, since a path given explicitly that is silently ignored would
// run the node on settings nobody chose.
func Load(path string) (*Config, error) {
	if path == "" {
		c := Default()
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("built-in config: %w", err)
		}
		return c, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config file %s does not exist: create it (`corrald config default > %s` writes every key with its default) or leave out --config to run on the built-in defaults: %w",
			path, path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := decode(path, data, Default())
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return c, nil
}

// decode reads data over base, strictly: a key Config does not have is an
// error naming the key and its line. name is the file name used in messages.
func decode(name string, data []byte, base *Config) (*Config, error) {
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(base)
	if err == nil {
		return base, nil
	}
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var errs []error
		for _, e := range strict.Errors {
			row, _ := e.Position()
			errs = append(errs, fmt.Errorf("%s:%d: unknown key %q", name, row, strings.Join(e.Key(), ".")))
		}
		errs = append(errs, errors.New("(`corrald config default` prints every key corrald knows)"))
		return nil, errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		if key := de.Key(); len(key) > 0 {
			return nil, fmt.Errorf("%s:%d:%d: %s: %w", name, row, col, strings.Join(key, "."), err)
		}
		return nil, fmt.Errorf("%s:%d:%d: %w", name, row, col, err)
	}
	return nil, fmt.Errorf("%s: %w", name, err)
}
