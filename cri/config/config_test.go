package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func noCrun(string) (string, error) { return "", errors.New("not found") }

func TestDefaultIsTheDocumentedConfig(t *testing.T) {
	c := defaults(noCrun)
	want := &Config{
		DefaultRuntime: "runc",
		LogLevel:       "info",
		CgroupDriver:   "cgroupfs",
		Registry:       Registry{ConfigPath: "/etc/corral/certs.d"},
		Image:          Image{PullProgressTimeout: Duration(5 * time.Minute)},
		Network:        Network{ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin", "/usr/lib/cni"}},
		Streaming:      Streaming{Address: "127.0.0.1:0"},
		Metrics:        Metrics{Address: ""},
		NRI: NRI{Enable: true, PluginPath: "/opt/nri/plugins", PluginConfigPath: "/etc/nri/conf.d",
			PluginRegistrationTimeout: Duration(5 * time.Second), PluginRequestTimeout: Duration(2 * time.Second)},
		Runtimes: map[string]Runtime{
			"runc": {Shim: "containerd-shim-corral-v2", Runtime: "/usr/sbin/runc"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("the defaults do not validate: %v", err)
	}
	if err := Default().Validate(); err != nil {
		t.Errorf("Default() on this host does not validate: %v", err)
	}
}

func TestDefaultAddsCrunWhereInstalled(t *testing.T) {
	c := defaults(func(name string) (string, error) {
		if name != "crun" {
			t.Errorf("looked up %q", name)
		}
		return "/usr/bin/crun", nil
	})
	if got, want := c.Runtimes["crun"], (Runtime{Shim: DefaultShim, Runtime: "/usr/bin/crun"}); !reflect.DeepEqual(got, want) {
		t.Errorf("crun handler = %+v, want %+v", got, want)
	}
	if c.DefaultRuntime != "runc" {
		t.Errorf("default_runtime = %q: crun must not displace runc", c.DefaultRuntime)
	}
	// A relative PATH entry would tie the handler to corrald's cwd.
	c = defaults(func(string) (string, error) { return "bin/crun", nil })
	if _, ok := c.Runtimes["crun"]; ok {
		t.Error("a relative crun path made a handler")
	}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "corral.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadWithoutFileIsDefault(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load(\"\") = %+v, want Default()", c)
	}
}

func TestLoadMissingFileIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
	for _, want := range []string{path, "does not exist", "corrald config default"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestLoadOverridesOnlyWhatTheFileSets(t *testing.T) {
	path := writeFile(t, `
log_level = "debug"
cgroup_driver = "systemd"
[network]
bin_dirs = ["/usr/libexec/cni"]
[image]
pull_progress_timeout = "30s"
[runtimes.runc]
runtime = "/usr/local/sbin/runc"
[runtimes.kata]
shim = "io.containerd.kata.v2"
[runtimes.kata.options]
ConfigPath = "/etc/kata/configuration.toml"
`)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.LogLevel = "debug"
	want.CgroupDriver = "systemd"
	want.Network.BinDirs = []string{"/usr/libexec/cni"}
	want.Image.PullProgressTimeout = Duration(30 * time.Second)
	// A table for an existing handler changes only the keys it sets.
	want.Runtimes["runc"] = Runtime{Shim: DefaultShim, Runtime: "/usr/local/sbin/runc"}
	want.Runtimes["kata"] = Runtime{Shim: "io.containerd.kata.v2", Options: map[string]any{"ConfigPath": "/etc/kata/configuration.toml"}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("loaded:\n got %+v\nwant %+v", c, want)
	}
}

func TestLoadRejectsUnknownKeysByNameAndLine(t *testing.T) {
	path := writeFile(t, `default_runtime = "runc"
[network]
conf_dirr = "/etc/cni/net.d"
[runtimes.runc]
shim = "containerd-shim-corral-v2"
binary = "/usr/sbin/runc"
`)
	_, err := Load(path)
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	for _, want := range []string{
		path + `:3: unknown key "network.conf_dirr"`,
		path + `:6: unknown key "runtimes.runc.binary"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestLoadReportsWhereTheFileIsBroken(t *testing.T) {
	for name, tc := range map[string]struct{ text, want string }{
		"syntax":    {"log_level = \"info\"\ncgroup_driver = 'systemd\n", ":2:"},
		"type":      {"[network]\nbin_dirs = \"/opt/cni/bin\"\n", ":2:"},
		"duration":  {"[image]\npull_progress_timeout = \"soon\"\n", "not a duration"},
		"duplicate": {"log_level = \"info\"\nlog_level = \"debug\"\n", ":2:"},
	} {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, tc.text)
			_, err := Load(path)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q: want the file name and %q", err, tc.want)
			}
		})
	}
}

func TestLoadValidates(t *testing.T) {
	path := writeFile(t, "default_runtime = \"kata\"\n")
	_, err := Load(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "default_runtime") {
		t.Errorf("err = %v, want the file and the key named", err)
	}
}

func TestValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(*Config)
		want []string // substrings of the error; none means valid
	}{
		"defaults":              {func(*Config) {}, nil},
		"systemd":               {func(c *Config) { c.CgroupDriver = "systemd" }, nil},
		"metrics on":            {func(c *Config) { c.Metrics.Address = "127.0.0.1:9090" }, nil},
		"ipv6 streaming":        {func(c *Config) { c.Streaming.Address = "[::1]:10010" }, nil},
		"containerd shim":       {func(c *Config) { c.Runtimes["runc"] = Runtime{Shim: "io.containerd.runc.v2"} }, nil},
		"shim by absolute path": {func(c *Config) { c.Runtimes["runc"] = Runtime{Shim: "/usr/bin/containerd-shim-runc-v2"} }, nil},
		"no registry config":    {func(c *Config) { c.Registry.ConfigPath = "" }, nil},

		"unknown default":            {func(c *Config) { c.DefaultRuntime = "kata" }, []string{`default_runtime: "kata" has no [runtimes.kata] table`, "runc"}},
		"empty default":              {func(c *Config) { c.DefaultRuntime = "" }, []string{"default_runtime: is empty"}},
		"no handlers":                {func(c *Config) { c.Runtimes = nil }, []string{"runtimes: no handler"}},
		"no shim":                    {func(c *Config) { c.Runtimes["runc"] = Runtime{Runtime: "/usr/sbin/runc"} }, []string{"runtimes.runc.shim: is empty"}},
		"relative shim":              {func(c *Config) { c.Runtimes["runc"] = Runtime{Shim: "bin/shim"} }, []string{"runtimes.runc.shim", "relative"}},
		"bad containerd shim name":   {func(c *Config) { c.Runtimes["runc"] = Runtime{Shim: "io.containerd.runc"} }, []string{"io.containerd.<name>.v<N>"}},
		"relative runtime":           {func(c *Config) { c.Runtimes["runc"] = Runtime{Shim: DefaultShim, Runtime: "./runc"} }, []string{"runtimes.runc.runtime"}},
		"relative root":              {func(c *Config) { c.Runtimes["runc"] = Runtime{Shim: DefaultShim, Root: "run/runc"} }, []string{"runtimes.runc.root"}},
		"handler name":               {func(c *Config) { c.Runtimes["Kata_VM"] = Runtime{Shim: DefaultShim} }, []string{"runtimes.Kata_VM", "not a valid handler name"}},
		"log level":                  {func(c *Config) { c.LogLevel = "verbose" }, []string{"log_level", "debug, info, warn or error"}},
		"cgroup driver":              {func(c *Config) { c.CgroupDriver = "cgroupfs2" }, []string{"cgroup_driver", "systemd"}},
		"negative pids_limit":        {func(c *Config) { c.PidsLimit = -1 }, []string{"pids_limit", "0 for no limit"}},
		"relative conf_dir":          {func(c *Config) { c.Network.ConfDir = "net.d" }, []string{"network.conf_dir", "absolute"}},
		"no bin_dirs":                {func(c *Config) { c.Network.BinDirs = nil }, []string{"network.bin_dirs: is empty"}},
		"relative bin_dir":           {func(c *Config) { c.Network.BinDirs = []string{"/opt/cni/bin", "cni"} }, []string{"network.bin_dirs[1]"}},
		"relative registry":          {func(c *Config) { c.Registry.ConfigPath = "certs.d" }, []string{"registry.config_path"}},
		"relative pause":             {func(c *Config) { c.Sandbox.PauseBinary = "pause" }, []string{"sandbox.pause_binary"}},
		"negative timeout":           {func(c *Config) { c.Image.PullProgressTimeout = Duration(-time.Second) }, []string{"image.pull_progress_timeout", "negative"}},
		"streaming no port":          {func(c *Config) { c.Streaming.Address = "127.0.0.1" }, []string{"streaming.address", "host:port"}},
		"streaming empty":            {func(c *Config) { c.Streaming.Address = "" }, []string{"streaming.address: is empty"}},
		"streaming bad port":         {func(c *Config) { c.Streaming.Address = "127.0.0.1:http" }, []string{"streaming.address", "0 to 65535"}},
		"streaming on every address": {func(c *Config) { c.Streaming.Address = "0.0.0.0:10010" }, []string{"streaming.address", "not a loopback address"}},
		"streaming on a node IP":     {func(c *Config) { c.Streaming.Address = "10.0.0.5:0" }, []string{"streaming.address", "not a loopback address"}},
		"streaming on no host":       {func(c *Config) { c.Streaming.Address = ":10010" }, []string{"streaming.address", "not a loopback address"}},
		"metrics bad":                {func(c *Config) { c.Metrics.Address = "localhost:99999" }, []string{"metrics.address", "turn metrics off"}},
		"all at once": {func(c *Config) {
			c.LogLevel = "loud"
			c.Network.ConfDir = "x"
		}, []string{"log_level", "network.conf_dir"}},
	} {
		t.Run(name, func(t *testing.T) {
			c := defaults(noCrun)
			tc.edit(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseLogLevel(t *testing.T) {
	for _, s := range []string{"debug", "info", "warn", "error"} {
		if _, err := ParseLogLevel(s); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	if _, err := ParseLogLevel("INFO"); err == nil {
		t.Error("INFO accepted")
	}
}

func TestNRISocket(t *testing.T) {
	for _, tc := range []struct {
		nri   NRI
		state string
		want  string
	}{
		{NRI{}, "/run/corral", DefaultNRISocket},
		{NRI{}, "/run/corral/", DefaultNRISocket},
		{NRI{}, "/tmp/t1/state", "/tmp/t1/state/nri.sock"},
		{NRI{SocketPath: "/run/x.sock"}, "/tmp/t1/state", "/run/x.sock"},
		{NRI{SocketPath: "/run/x.sock", DisableConnections: true}, "/run/corral", ""},
	} {
		if got := tc.nri.Socket(tc.state); got != tc.want {
			t.Errorf("%+v.Socket(%q) = %q, want %q", tc.nri, tc.state, got, tc.want)
		}
	}
}
