package config

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/template"

	"github.com/pelletier/go-toml/v2"
)

// WriteDefault writes Default as a commented TOML file: what
// `corrald config default` prints.
func WriteDefault(w io.Writer) error {
	return Default().Write(w)
}

// Write writes c as a TOML file with a comment above every key saying what
// it does. Load reads the output back to a Config equal to c.
func (c *Config) Write(w io.Writer) error {
	handlers := c.Handlers()
	// The default handler first: it is the one most readers look for.
	for i, h := range handlers {
		if h == c.DefaultRuntime {
			handlers = append(append([]string{h}, handlers[:i]...), handlers[i+1:]...)
			break
		}
	}
	var buf bytes.Buffer
	err := configTemplate.Execute(&buf, struct {
		*Config
		HandlerOrder []string
	}{c, handlers})
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// tomlValue encodes one value as TOML goes on the right of "key = ".
// Strings get TOML basic (double-quoted) strings, as in the design brief and
// the comments; everything else goes through the library that reads it back.
func tomlValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return quote(v), nil
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]", nil
	case Duration:
		return quote(v.String()), nil
	}
	var b strings.Builder
	enc := toml.NewEncoder(&b)
	enc.SetTablesInline(true)
	if err := enc.Encode(map[string]any{"v": v}); err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimPrefix(b.String(), "v = "), "\n"), nil
}

// quote writes s as a TOML basic string. TOML's escapes are a subset of
// Go's, so strconv.Quote would not do (it writes \x01).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlKey quotes a table key when a bare key would not do. Valid handler
// names are always bare; this keeps an invalid one printable.
func tomlKey(k string) string {
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return quote(k)
		}
	}
	return k
}

var configTemplate = template.Must(template.New("config").
	Funcs(template.FuncMap{"toml": tomlValue, "key": tomlKey}).
	Parse(`# corrald configuration.
#
# corrald reads this file when started with --config FILE. Without --config it
# runs on exactly the values printed by ` + "`corrald config default`" + `, so a node
# needs no file. A file only has to set what it changes: every key left out
# keeps its default. An unknown key is an error, so a typo cannot silently
# leave a default in force.

# The runtime handler (one of the [runtimes.<handler>] tables below) for pods
# whose RuntimeClass names no handler.
default_runtime = {{toml .DefaultRuntime}}

# How much corrald logs: "debug", "info", "warn" or "error". The --log-level
# flag overrides it.
log_level = {{toml .LogLevel}}

# Who manages pod and container cgroups: "cgroupfs" (the OCI runtime writes
# /sys/fs/cgroup itself) or "systemd" (slices and scopes through systemd).
# It must match the kubelet's cgroupDriver; the kubelet learns it from
# corrald's RuntimeConfig call.
cgroup_driver = {{toml .CgroupDriver}}

# Never give a container an oom_score_adj lower than corrald's own, as
# containerd's restrict_oom_score_adj does. corrald clamps anyway when it
# lacks CAP_SYS_RESOURCE (a negative value could not be set); true clamps
# even when it has it.
restrict_oom_score_adj = {{toml .RestrictOOMScoreAdj}}

# The most processes (threads count too) each container's cgroup may hold,
# its pids.max; 0 sets no limit. The kubelet's podPidsLimit caps a whole
# pod; this caps every container even where the kubelet sets none.
pids_limit = {{toml .PidsLimit}}

[registry]
# Per-registry settings in containerd's certs.d layout,
# <config_path>/<host>/hosts.toml: server, mirrors as [host."..."] tables
# with capabilities, skip_verify and ca. A node's existing containerd
# certs.d directory works unchanged. "" means no per-registry settings.
config_path = {{toml .Registry.ConfigPath}}

[image]
# Cancel a pull that has received no bytes for this long, with an error
# naming the image. A Go duration ("30s", "5m"); "0s" never cancels.
pull_progress_timeout = {{toml .Image.PullProgressTimeout}}

[sandbox]
# The program run as every pod's infra process, which holds the pod's
# namespaces. "" means corral's built-in pause: no pause image is pulled.
pause_binary = {{toml .Sandbox.PauseBinary}}

[network]
# CNI network configuration: the first *.conflist, *.conf or *.json file
# here, in lexical order, sets up pod networks.
conf_dir = {{toml .Network.ConfDir}}
# Directories searched, in order, for CNI plugin binaries.
bin_dirs = {{toml .Network.BinDirs}}

[streaming]
# host:port of the HTTP server behind exec, attach and port-forward; the
# kubelet proxies to it. Port 0 picks a free port at start. Keep it on
# loopback: its URLs carry single-use tokens and no other authentication.
address = {{toml .Streaming.Address}}

[metrics]
# host:port of the Prometheus endpoint, served at http://ADDRESS/metrics:
# CRI call latency and errors per method, image pulls (bytes, durations),
# pods and containers by state, live shims, recovery at start, CNI ADD/DEL
# latency (all corral_*), plus Go runtime and process metrics. "" turns it
# off. It has no authentication: keep it on loopback ("127.0.0.1:9338").
address = {{toml .Metrics.Address}}

[nri]
# The Node Resource Interface: NRI plugins are told of every pod and
# container event, in order, and may adjust a container's OCI spec before it
# is created (github.com/containerd/nri, as in containerd and CRI-O).
enable = {{toml .NRI.Enable}}
# The unix socket plugins connect to. "" means /var/run/nri/nri.sock when
# corrald runs on the default --state (/run/corral), and STATE/nri.sock on
# any other, so that corralds side by side never share a socket.
socket_path = {{toml .NRI.SocketPath}}
# Plugins corrald starts itself: executables named IDX-NAME (e.g.
# 10-logger).
plugin_path = {{toml .NRI.PluginPath}}
# The configuration of those plugins: IDX-NAME.conf or NAME.conf here.
plugin_config_path = {{toml .NRI.PluginConfigPath}}
# How long a plugin may take to register.
plugin_registration_timeout = {{toml .NRI.PluginRegistrationTimeout}}
# How long a plugin may take to answer each request; one that does not
# answer in time is disconnected.
plugin_request_timeout = {{toml .NRI.PluginRequestTimeout}}
# true accepts no connections: only the plugins in plugin_path run.
disable_connections = {{toml .NRI.DisableConnections}}

# Runtime handlers. A pod's RuntimeClass handler (crictl runp --runtime NAME)
# picks [runtimes.NAME]; names are lower-case letters, digits and '-'.
# corrald starts the handler's shim once per pod.
#
# shim     the containerd shim v2 binary: a name on PATH, an absolute path,
#          or containerd's io.containerd.<name>.v2 spelling
#          (containerd-shim-runc-v2, containerd-shim-kata-v2 work too).
# runtime  the OCI runtime binary a runc shim (corral's, containerd's
#          containerd-shim-runc-v2) drives; "" lets the shim choose.
# root     the OCI runtime's state directory (its --root, a namespace
#          directory below it); "" means STATE/runc for runc shims.
# options  handed to the shim with every container, in the shim's own terms,
#          as containerd hands them: containerd's runc options for runc shims
#          (options = { SystemdCgroup = true }); runtimeoptions for any other
#          shim (options = { ConfigPath = "/etc/kata-containers/configuration.toml" }).
#          Left out: none.
# pod_annotations  pod annotations copied into the OCI spec of the pod and
#          its containers, for the shim to read: keys or globs, e.g.
#          ["io.katacontainers.*"]. Left out: none.
{{- range $name := .HandlerOrder}}{{with index $.Runtimes $name}}

[runtimes.{{key $name}}]
shim = {{toml .Shim}}
runtime = {{toml .Runtime}}
root = {{toml .Root}}
{{- if .Options}}
options = {{toml .Options}}
{{- end}}
{{- if .PodAnnotations}}
pod_annotations = {{toml .PodAnnotations}}
{{- end}}
{{- end}}{{end}}
`))
