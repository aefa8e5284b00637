package config

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// runcShims are the shims that take containerd's runc options
// (containerd.runc.v1.Options): corral's own and containerd's runc shims.
// Every other shim gets containerd's generic runtimeoptions.v1.Options, the
// type containerd sends to Kata and other shims it knows nothing about.
var runcShims = []string{DefaultShim, "containerd-shim-runc-v2", "containerd-shim-runc-v1"}

// ShimBinaryName is the file name of the shim: the name as configured, or
// containerd-shim-NAME-vN for containerd's io.containerd.NAME.vN spelling.
func (r Runtime) ShimBinaryName() string {
	if parts := strings.Split(r.Shim, "."); len(parts) == 4 && parts[0] == "io" && parts[1] == "containerd" {
		return fmt.Sprintf("containerd-shim-%s-%s", parts[2], parts[3])
	}
	return filepath.Base(r.Shim)
}

// TakesRuncOptions reports whether the handler's shim is a runc shim: one
// that drives an OCI runtime binary named by runtime, with its state under
// root.
func (r Runtime) TakesRuncOptions() bool {
	return slices.Contains(runcShims, r.ShimBinaryName())
}

// ShimOptions encodes what the shim gets with every container, as
// containerd encodes a runtime's options: the [options] table decoded into
// the shim's options type. For a runc shim, runtime and root fill
// BinaryName and Root; an empty root becomes defaultRoot, so every
// container corrald runs keeps its runtime state under one directory. For
// other shims an options table without ConfigPath is passed whole as
// ConfigBody, as containerd does.
func (r Runtime) ShimOptions(defaultRoot string) (*anypb.Any, error) {
	if r.TakesRuncOptions() {
		var o runcoptions.Options
		if err := decodeOptions(r.Options, &o, true); err != nil {
			return nil, err
		}
		if r.Runtime != "" {
			o.BinaryName = r.Runtime
		}
		switch {
		case r.Root != "":
			o.Root = r.Root
		case o.Root == "":
			o.Root = defaultRoot
		}
		return marshalAny("containerd.runc.v1.Options", &o)
	}
	if len(r.Options) == 0 {
		return nil, nil
	}
	var o runtimeoptions.Options
	if err := decodeOptions(r.Options, &o, false); err != nil {
		return nil, err
	}
	if o.ConfigPath == "" {
		body, err := toml.Marshal(r.Options)
		if err != nil {
			return nil, err
		}
		o.ConfigBody = body
	}
	return marshalAny("runtimeoptions.v1.Options", &o)
}

// decodeOptions reads the [options] table into a protobuf options message
// the way containerd does (TOML keys match the Go field names, case
// insensitively: BinaryName, SystemdCgroup, ConfigPath). Strict, a key the
// type does not have is an error naming it, not a silent no-op.
func decodeOptions(opts map[string]any, into proto.Message, strict bool) error {
	if len(opts) == 0 {
		return nil
	}
	b, err := toml.Marshal(opts)
	if err != nil {
		return err
	}
	dec := toml.NewDecoder(strings.NewReader(string(b)))
	if strict {
		dec.DisallowUnknownFields()
	}
	err = dec.Decode(into)
	var missing *toml.StrictMissingError
	if errors.As(err, &missing) {
		var keys []string
		for _, e := range missing.Errors {
			keys = append(keys, strings.Join(e.Key(), "."))
		}
		return fmt.Errorf("unknown option %s for %s (its fields: %s)", strings.Join(keys, ", "),
			into.ProtoReflect().Descriptor().FullName(), optionFields(into))
	}
	return err
}

// optionFields lists the Go field names of an options message, the keys
// the [options] table may use.
func optionFields(m proto.Message) string {
	fields := m.ProtoReflect().Descriptor().Fields()
	names := make([]string, 0, fields.Len())
	for i := range fields.Len() {
		// The Go name is the CamelCase of the proto name.
		var b strings.Builder
		for part := range strings.SplitSeq(string(fields.Get(i).Name()), "_") {
			if part != "" {
				b.WriteString(strings.ToUpper(part[:1]) + part[1:])
			}
		}
		names = append(names, b.String())
	}
	return strings.Join(names, ", ")
}

func marshalAny(typeURL string, m proto.Message) (*anypb.Any, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &anypb.Any{TypeUrl: typeURL, Value: b}, nil
}

// PassThrough returns the pod annotations that pod_annotations lets into
// the OCI specs of the pod and its containers: those whose key matches one
// of the patterns (path.Match globs, e.g. "io.katacontainers.*"), as
// containerd's pod_annotations does. Nil when none match.
func (r Runtime) PassThrough(annotations map[string]string) map[string]string {
	var out map[string]string
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		for _, pattern := range r.PodAnnotations {
			if ok, _ := path.Match(pattern, k); ok {
				if out == nil {
					out = map[string]string{}
				}
				out[k] = annotations[k]
				break
			}
		}
	}
	return out
}

// validateRuntime checks one handler's table; key is "runtimes.NAME".
func validateRuntime(key string, r Runtime, bad func(key, format string, args ...any)) {
	for i, p := range r.PodAnnotations {
		if _, err := path.Match(p, ""); err != nil || p == "" {
			bad(fmt.Sprintf("%s.pod_annotations[%d]", key, i), "%q is not a pattern: give an annotation key or a glob such as \"io.katacontainers.*\"", p)
		}
	}
	if r.TakesRuncOptions() {
		var o runcoptions.Options
		if err := decodeOptions(r.Options, &o, true); err != nil {
			bad(key+".options", "%v", err)
			return
		}
		if o.BinaryName != "" && r.Runtime != "" && o.BinaryName != r.Runtime {
			bad(key+".options", "BinaryName %q contradicts runtime %q; set only runtime", o.BinaryName, r.Runtime)
		}
		if o.Root != "" && r.Root != "" && o.Root != r.Root {
			bad(key+".options", "Root %q contradicts root %q; set only root", o.Root, r.Root)
		}
		return
	}
	if r.Runtime != "" || r.Root != "" {
		bad(key, "runtime and root are for runc shims (%s); %s takes its settings from options, e.g. options = { ConfigPath = \"/etc/kata-containers/configuration.toml\" }",
			strings.Join(runcShims, ", "), r.ShimBinaryName())
	}
	// Keys other than runtimeoptions' go to the shim whole, in ConfigBody;
	// only a wrong type for a known key is an error.
	var o runtimeoptions.Options
	if err := decodeOptions(r.Options, &o, false); err != nil {
		bad(key+".options", "%v", err)
	}
}
