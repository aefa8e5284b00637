// Package validation checks every CRI request at the edge, before a handler
// makes anything: sizes, encodings, identifiers, paths and numeric ranges
// that no legitimate kubelet request breaks. A request that fails is
// answered with InvalidArgument naming the field, so a hostile or broken
// client gets a message it can act on and corrald is left as it was.
//
// The checks walk the request's protobuf fields generically, so a field a
// newer CRI adds is bounded too: every string is free of NUL bytes and
// bounded in length, every map and list is bounded in entries and bytes,
// and every enum holds a value corral knows. Field-specific rules (a path
// that must be absolute, an ID, a port, a cgroup range) are tables keyed by
// the field's protobuf name. What needs more than the request (a mount
// source that must exist, a user in the image) stays with the code that
// knows it, in cri/spec and the handlers.
package validation

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Limits. Each is far above what a kubelet sends, and each says why it
// stops there.
const (
	// maxString bounds a string with no limit of its own below.
	maxString = 64 << 10
	// maxName bounds pod and container names, namespaces and UIDs:
	// Kubernetes' longest name (a DNS subdomain) is 253.
	maxName = 253
	// maxID bounds an ID; corral makes 64 hex digits, and other packages
	// name directories after IDs.
	maxID = 255
	// maxPath is the kernel's PATH_MAX.
	maxPath = 4096
	// maxArg is the kernel's MAX_ARG_STRLEN less the NUL: exec refuses a
	// longer argument or environment string with E2BIG.
	maxArg = 128<<10 - 1
	// maxArgv bounds a command, its arguments and its environment
	// together, like the kernel's ARG_MAX with the default 8 MiB stack.
	maxArgv = 2 << 20
	// maxList bounds the elements of any repeated field.
	maxList = 1 << 16
	// maxMapEntries and maxMapBytes bound a map (labels, annotations,
	// sysctls): Kubernetes caps a pod's annotations at 256 KiB in all.
	maxMapEntries = 4096
	maxMapBytes   = 1 << 20
	// maxMapKey bounds one key: Kubernetes' longest label key is 317.
	maxMapKey = 1024
	// maxTimeout is the most seconds a time.Duration can hold.
	maxTimeout = math.MaxInt64 / int64(time.Second)
)

// Request checks req, a CRI request message. It returns nil for anything
// that is not a protobuf message.
func Request(req any) error {
	m, ok := req.(proto.Message)
	if !ok || m == nil {
		return nil
	}
	return walk(m.ProtoReflect(), "")
}

// invalid is the error for a bad field: path is where it sits in the
// request, as the CRI's field names spell it.
func invalid(path, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", path, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

func walk(msg protoreflect.Message, path string) error {
	if !msg.IsValid() {
		return nil
	}
	fields := msg.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !msg.Has(fd) {
			continue
		}
		p := string(fd.Name())
		if path != "" {
			p = path + "." + p
		}
		var err error
		switch v := msg.Get(fd); {
		case fd.IsMap():
			err = checkMap(fd, v.Map(), p)
		case fd.IsList():
			err = checkList(fd, v.List(), p)
		default:
			err = checkValue(fd, v, p)
		}
		if err != nil {
			return err
		}
	}
	if rule := messageRules[msg.Descriptor().FullName()]; rule != nil {
		return rule(msg, path)
	}
	return nil
}

func checkList(fd protoreflect.FieldDescriptor, l protoreflect.List, path string) error {
	if l.Len() > maxList {
		return invalid(path, "%d elements, more than %d", l.Len(), maxList)
	}
	for i := range l.Len() {
		if err := checkValue(fd, l.Get(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

func checkMap(fd protoreflect.FieldDescriptor, m protoreflect.Map, path string) error {
	if m.Len() > maxMapEntries {
		return invalid(path, "%d entries, more than %d", m.Len(), maxMapEntries)
	}
	// Sorted, so the same request always gets the same answer.
	var keys []string
	m.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k.String())
		return true
	})
	slices.Sort(keys)
	total := 0
	for _, k := range keys {
		entry := fmt.Sprintf("%s[%q]", path, truncate(k))
		switch {
		case k == "":
			return invalid(path, "an entry has an empty key")
		case len(k) > maxMapKey:
			return invalid(entry, "key of %d bytes, longer than %d", len(k), maxMapKey)
		}
		if err := checkText(entry+" key", k); err != nil {
			return err
		}
		v := m.Get(protoreflect.ValueOfString(k).MapKey())
		total += len(k)
		if fd.MapValue().Kind() == protoreflect.StringKind {
			total += len(v.String())
		}
		if err := checkValue(fd.MapValue(), v, entry); err != nil {
			return err
		}
	}
	if total > maxMapBytes {
		return invalid(path, "%d bytes of keys and values, more than %d", total, maxMapBytes)
	}
	return nil
}

func checkValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) error {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return walk(v.Message(), path)
	case protoreflect.StringKind:
		return checkString(fd, v.String(), path)
	case protoreflect.BytesKind:
		return checkBytes(fd, v.Bytes(), path)
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(v.Enum()) == nil {
			return invalid(path, "%d is not a value of %s", v.Enum(), fd.Enum().Name())
		}
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		if r, ok := intRules[fd.FullName()]; ok {
			return r.check(v.Int(), path)
		}
	}
	return nil
}

// checkText refuses what cannot travel on: a NUL ends a C string early
// (paths, arguments, environment), and bytes that are not UTF-8 cannot be
// written as JSON into a spec or a record. gRPC refuses the latter on the
// wire already; this also covers requests built in the process.
func checkText(path, s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return invalid(path, "contains a NUL byte at offset %d", i)
	}
	if !utf8.ValidString(s) {
		return invalid(path, "is not valid UTF-8")
	}
	return nil
}

func checkString(fd protoreflect.FieldDescriptor, s, path string) error {
	if err := checkText(path, s); err != nil {
		return err
	}
	rule, ok := stringRules[fd.FullName()]
	if !ok {
		rule = idRules[fd.Name()]
	}
	limit := rule.max
	if limit == 0 {
		limit = maxString
	}
	if len(s) > limit {
		return invalid(path, "%d bytes, longer than %d", len(s), limit)
	}
	if rule.check != nil {
		if err := rule.check(s); err != nil {
			return invalid(path, "%q %v", truncate(s), err)
		}
	}
	return nil
}

// checkBytes checks a bytes field. The one in CRI requests is an
// environment variable's value, which the kernel passes as a C string.
func checkBytes(fd protoreflect.FieldDescriptor, b []byte, path string) error {
	rule := stringRules[fd.FullName()]
	limit := rule.max
	if limit == 0 {
		limit = maxString
	}
	if len(b) > limit {
		return invalid(path, "%d bytes, longer than %d", len(b), limit)
	}
	if rule.check != nil {
		if err := rule.check(string(b)); err != nil {
			return invalid(path, "%q %v", truncate(string(b)), err)
		}
	}
	return nil
}

// truncate keeps an error message readable when the value is huge.
func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	return s[:64] + "..."
}

// stringRule is what one string field must be: at most max bytes (zero
// means maxString), and whatever check says.
type stringRule struct {
	max   int
	check func(string) error
}

var (
	absolute = stringRule{maxPath, absolutePath}
	relative = stringRule{maxPath, relativePath}
	name     = stringRule{maxName, plainName}
	id       = stringRule{maxID, validID}
	arg      = stringRule{maxArg, nil}
)

// stringRules holds the rules of particular fields, by protobuf name.
var stringRules = map[protoreflect.FullName]stringRule{
	// Paths on the node, and paths in the container: the node's are the
	// client's choice (a kubelet mounts volumes from anywhere), but must
	// say plainly where; the container's are resolved in its root.
	"runtime.v1.PodSandboxConfig.log_directory":                         absolute,
	"runtime.v1.ContainerConfig.log_path":                               relative,
	"runtime.v1.ContainerConfig.working_dir":                            absolute,
	"runtime.v1.Mount.container_path":                                   absolute,
	"runtime.v1.Mount.host_path":                                        absolute,
	"runtime.v1.Mount.image_sub_path":                                   relative,
	"runtime.v1.Device.container_path":                                  absolute,
	"runtime.v1.Device.host_path":                                       absolute,
	"runtime.v1.LinuxContainerSecurityContext.masked_paths":             absolute,
	"runtime.v1.LinuxContainerSecurityContext.readonly_paths":           absolute,
	"runtime.v1.LinuxPodSandboxConfig.cgroup_parent":                    {maxPath, noDotDot},
	"runtime.v1.CheckpointContainerRequest.location":                    absolute,
	"runtime.v1.CheckpointPodRequest.output_path":                       absolute,
	"runtime.v1.RestorePodRequest.checkpoint_path":                      absolute,
	"runtime.v1.PodSandboxConfig.hostname":                              {64, hostname},
	"runtime.v1.PodSandboxMetadata.name":                                name,
	"runtime.v1.PodSandboxMetadata.namespace":                           name,
	"runtime.v1.PodSandboxMetadata.uid":                                 name,
	"runtime.v1.ContainerMetadata.name":                                 name,
	"runtime.v1.RunPodSandboxRequest.runtime_handler":                   name,
	"runtime.v1.ContainerFilter.id":                                     id,
	"runtime.v1.PodSandboxFilter.id":                                    id,
	"runtime.v1.ContainerStatsFilter.id":                                id,
	"runtime.v1.PodSandboxStatsFilter.id":                               id,
	"runtime.v1.ImageSpec.image":                                        {maxPath, nil},
	"runtime.v1.ContainerConfig.command":                                arg,
	"runtime.v1.ContainerConfig.args":                                   arg,
	"runtime.v1.ExecSyncRequest.cmd":                                    arg,
	"runtime.v1.ExecRequest.cmd":                                        arg,
	"runtime.v1.KeyValue.key":                                           {maxArg, envName},
	"runtime.v1.KeyValue.value":                                         {maxArg, cString},
	"runtime.v1.DNSConfig.servers":                                      {maxName, ipAddress},
	"runtime.v1.DNSConfig.searches":                                     {maxName, resolvWord},
	"runtime.v1.DNSConfig.options":                                      {maxName, resolvWord},
	"runtime.v1.PortMapping.host_ip":                                    {maxName, ipAddress},
	"runtime.v1.NetworkConfig.pod_cidr":                                 {maxString, cidrs},
	"runtime.v1.LinuxContainerResources.cpuset_cpus":                    {maxName, nil},
	"runtime.v1.LinuxContainerResources.cpuset_mems":                    {maxName, nil},
	"runtime.v1.LinuxContainerResources.UnifiedEntry.value":             {maxName, nil},
	"runtime.v1.PodSandboxConfig.AnnotationsEntry.value":                {maxMapBytes, nil},
	"runtime.v1.ContainerConfig.AnnotationsEntry.value":                 {maxMapBytes, nil},
	"runtime.v1.UpdateContainerResourcesRequest.AnnotationsEntry.value": {maxMapBytes, nil},
}

// idRules apply to every string field of these names, whatever message
// holds it: they all name a pod or a container.
var idRules = map[protoreflect.Name]stringRule{
	"container_id":   id,
	"pod_sandbox_id": id,
	"target_id":      id,
	"container_ids":  id,
}

// intRule bounds an integer field. Zero always passes: it is how the CRI
// says "not set".
type intRule struct {
	min, max int64
	why      string
}

func (r intRule) check(v int64, path string) error {
	switch {
	case v == 0 || (v >= r.min && v <= r.max):
		return nil
	case v < 0 && r.min >= 0:
		return invalid(path, "%d is negative (%s)", v, r.why)
	}
	return invalid(path, "%d is outside %d..%d (%s)", v, r.min, r.max, r.why)
}

var intRules = map[protoreflect.FullName]intRule{
	"runtime.v1.LinuxContainerResources.cpu_period":                 {1000, 1000000, "the kernel's CFS period, in microseconds"},
	"runtime.v1.LinuxContainerResources.cpu_quota":                  {-1, math.MaxInt64 / 1000, "-1 for no limit, else at least the kernel's 1000 microseconds"},
	"runtime.v1.LinuxContainerResources.cpu_shares":                 {2, 262144, "the kernel's range of CPU shares"},
	"runtime.v1.LinuxContainerResources.memory_limit_in_bytes":      {1, math.MaxInt64, "bytes"},
	"runtime.v1.LinuxContainerResources.memory_swap_limit_in_bytes": {-1, math.MaxInt64, "-1 for no limit, else bytes"},
	"runtime.v1.LinuxContainerResources.oom_score_adj":              {-1000, 1000, "the kernel's range of oom_score_adj"},
	"runtime.v1.Int64Value.value":                                   {0, math.MaxInt32, "a user or group ID"},
	"runtime.v1.LinuxSandboxSecurityContext.supplemental_groups":    {0, math.MaxInt32, "a group ID"},
	"runtime.v1.LinuxContainerSecurityContext.supplemental_groups":  {0, math.MaxInt32, "a group ID"},
	"runtime.v1.PortMapping.container_port":                         {1, 65535, "a port"},
	"runtime.v1.PortMapping.host_port":                              {1, 65535, "a port"},
	"runtime.v1.PortForwardRequest.port":                            {1, 65535, "a port"},
	"runtime.v1.StopContainerRequest.timeout":                       {1, maxTimeout, "seconds; 0 means at once"},
	"runtime.v1.ExecSyncRequest.timeout":                            {1, maxTimeout, "seconds; 0 means no timeout"},
	"runtime.v1.CheckpointContainerRequest.timeout":                 {1, maxTimeout, "seconds"},
}

// messageRules check what spans the fields of one message, or what a
// range cannot say.
var messageRules = map[protoreflect.FullName]func(protoreflect.Message, string) error{
	"runtime.v1.LinuxContainerResources": func(m protoreflect.Message, path string) error {
		if q := m.Get(m.Descriptor().Fields().ByName("cpu_quota")).Int(); q > 0 && q < 1000 {
			return invalid(prefixed(path, "cpu_quota"), "%d is below the kernel's minimum of 1000 microseconds (or -1 for no limit)", q)
		}
		return nil
	},
	"runtime.v1.ContainerConfig": func(m protoreflect.Message, path string) error {
		n := 0
		for _, f := range []protoreflect.Name{"command", "args"} {
			l := m.Get(m.Descriptor().Fields().ByName(f)).List()
			for i := range l.Len() {
				n += len(l.Get(i).String()) + 1
			}
		}
		envs := m.Get(m.Descriptor().Fields().ByName("envs")).List()
		for i := range envs.Len() {
			kv := envs.Get(i).Message()
			fields := kv.Descriptor().Fields()
			n += len(kv.Get(fields.ByName("key")).String()) + len(kv.Get(fields.ByName("value")).Bytes()) + 2
		}
		if n > maxArgv {
			return invalid(prefixed(path, "command"), "command, args and envs together take %d bytes, more than the %d the kernel passes to a program", n, maxArgv)
		}
		return nil
	},
}

func prefixed(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

func absolutePath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("is not an absolute path")
	}
	return noDotDot(p)
}

// relativePath is a path below a directory the request names elsewhere
// (the pod's log directory, an image's root): clean, and not leaving it.
func relativePath(p string) error {
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("must be relative to its directory, not absolute")
	}
	return noDotDot(p)
}

func noDotDot(p string) error {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return fmt.Errorf("contains a \"..\" element, which would leave its directory")
		}
	}
	return nil
}

// plainName refuses control characters and path separators in a name:
// names end up in log lines, annotations and, by kubelet convention, file
// names.
func plainName(s string) error {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("contains the control character %U", r)
		}
	}
	if strings.Contains(s, "/") {
		return fmt.Errorf("contains \"/\"")
	}
	return nil
}

// validID accepts what corral generates and what the metadata store
// accepts (see metadata.validateID).
func validID(s string) error {
	if s == "." || s == ".." {
		return fmt.Errorf("is not an ID")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._-:+=", c) >= 0 {
			continue
		}
		return fmt.Errorf("is not an ID: character %q is not allowed (letters, digits and ._-:+= only)", c)
	}
	return nil
}

func hostname(s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' {
			continue
		}
		return fmt.Errorf("is not a host name: character %q is not allowed (letters, digits, '-', '.')", c)
	}
	return nil
}

// cString is text a program gets as a C string.
func cString(s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("contains a NUL byte at offset %d", i)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("is not valid UTF-8")
	}
	return nil
}

// envName refuses what cannot be an environment variable's name.
func envName(s string) error {
	if strings.Contains(s, "=") {
		return fmt.Errorf("contains \"=\", which ends an environment variable's name")
	}
	return nil
}

func ipAddress(s string) error {
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("is not an IP address")
	}
	return nil
}

// resolvWord is one word of resolv.conf: a search domain or an option.
func resolvWord(s string) error {
	if strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("contains white space, which would split it in resolv.conf")
	}
	return nil
}

func cidrs(s string) error {
	for _, c := range strings.Split(s, ",") {
		if _, err := netip.ParsePrefix(strings.TrimSpace(c)); err != nil {
			return fmt.Errorf("is not a CIDR or a comma-separated list of them")
		}
	}
	return nil
}
