package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// handlerName is what Kubernetes allows as a RuntimeClass handler (a DNS
// label): a handler named otherwise could never be selected by a pod.
var handlerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// containerdShimName is containerd's runtime type spelling of a shim,
// io.containerd.<name>.v<N>, which names the binary containerd-shim-<name>-v<N>.
var containerdShimName = regexp.MustCompile(`^io\.containerd\.[a-zA-Z0-9_-]+\.v[0-9]+$`)

// Validate reports every problem in c at once, each naming its key and what
// would be accepted, so one edit fixes them all.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	absolute := func(key, path string, mayBeEmpty bool) {
		switch {
		case path == "" && mayBeEmpty:
		case path == "":
			bad(key, "is empty; give an absolute path")
		case !filepath.IsAbs(path):
			bad(key, "%q is not an absolute path", path)
		}
	}

	if _, err := ParseLogLevel(c.LogLevel); err != nil {
		bad("log_level", "%v", err)
	}
	if c.CgroupDriver != CgroupDriverCgroupfs && c.CgroupDriver != CgroupDriverSystemd {
		bad("cgroup_driver", "%q is not %q or %q (it must match the kubelet's cgroupDriver)",
			c.CgroupDriver, CgroupDriverCgroupfs, CgroupDriverSystemd)
	}
	if c.PidsLimit < 0 {
		bad("pids_limit", "%d is negative; use 0 for no limit", c.PidsLimit)
	}
	absolute("registry.config_path", c.Registry.ConfigPath, true)
	if c.Image.PullProgressTimeout < 0 {
		bad("image.pull_progress_timeout", "%s is negative; use 0s to never cancel a pull", c.Image.PullProgressTimeout.String())
	}
	absolute("sandbox.pause_binary", c.Sandbox.PauseBinary, true)
	absolute("network.conf_dir", c.Network.ConfDir, false)
	if len(c.Network.BinDirs) == 0 {
		bad("network.bin_dirs", "is empty; name at least one directory holding CNI plugins")
	}
	for i, d := range c.Network.BinDirs {
		absolute(fmt.Sprintf("network.bin_dirs[%d]", i), d, false)
	}
	if err := checkAddress(c.Streaming.Address); err != nil {
		bad("streaming.address", "%v", err)
	} else if host, _, _ := net.SplitHostPort(c.Streaming.Address); !loopback(host) {
		bad("streaming.address", "%q is not a loopback address: the streaming server has no TLS and no authentication but the single-use token in its URLs, so exec into any container would be open to the network; use 127.0.0.1 or [::1]", c.Streaming.Address)
	}
	if c.Metrics.Address != "" {
		if err := checkAddress(c.Metrics.Address); err != nil {
			bad("metrics.address", "%v (or \"\" to turn metrics off)", err)
		}
	}

	absolute("nri.socket_path", c.NRI.SocketPath, true)
	absolute("nri.plugin_path", c.NRI.PluginPath, false)
	absolute("nri.plugin_config_path", c.NRI.PluginConfigPath, false)
	if c.NRI.PluginRegistrationTimeout <= 0 {
		bad("nri.plugin_registration_timeout", "%s is not positive", c.NRI.PluginRegistrationTimeout.String())
	}
	if c.NRI.PluginRequestTimeout <= 0 {
		bad("nri.plugin_request_timeout", "%s is not positive", c.NRI.PluginRequestTimeout.String())
	}

	handlers := c.Handlers()
	for _, name := range handlers {
		r := c.Runtimes[name]
		key := "runtimes." + name
		if !handlerName.MatchString(name) {
			bad(key, "%q is not a valid handler name: a RuntimeClass handler is lower-case letters, digits and '-', at most 63 long", name)
		}
		switch {
		case r.Shim == "":
			bad(key+".shim", "is empty; name a containerd shim v2 binary, e.g. %q", DefaultShim)
		case strings.HasPrefix(r.Shim, "io.containerd."):
			if !containerdShimName.MatchString(r.Shim) {
				bad(key+".shim", "%q is not of the form io.containerd.<name>.v<N>", r.Shim)
			}
		case strings.ContainsRune(r.Shim, '/') && !filepath.IsAbs(r.Shim):
			bad(key+".shim", "%q is a relative path; give a name on PATH or an absolute path", r.Shim)
		}
		if strings.ContainsRune(r.Runtime, '/') && !filepath.IsAbs(r.Runtime) {
			bad(key+".runtime", "%q is a relative path; give a name on PATH or an absolute path", r.Runtime)
		}
		absolute(key+".root", r.Root, true)
		validateRuntime(key, r, bad)
	}
	switch {
	case len(handlers) == 0:
		bad("runtimes", "no handler is configured; add a [runtimes.%s] table with a shim", DefaultHandler)
	case c.DefaultRuntime == "":
		bad("default_runtime", "is empty; name one of the handlers: %s", strings.Join(handlers, ", "))
	case !slices.Contains(handlers, c.DefaultRuntime):
		bad("default_runtime", "%q has no [runtimes.%s] table; the handlers are: %s",
			c.DefaultRuntime, c.DefaultRuntime, strings.Join(handlers, ", "))
	}
	return errors.Join(errs...)
}

// Handlers returns the configured handler names, sorted.
func (c *Config) Handlers() []string {
	names := make([]string, 0, len(c.Runtimes))
	for name := range c.Runtimes {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// ParseLogLevel maps a log_level value (debug, info, warn, error) to its
// slog level.
func ParseLogLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%q is not a log level: use debug, info, warn or error", s)
}

// checkAddress accepts host:port with a numeric port, what net.Listen takes.
// loopback reports whether host names only this node.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkAddress(addr string) error {
	if addr == "" {
		return errors.New("is empty; give host:port, e.g. \"127.0.0.1:0\"")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return nil
}
