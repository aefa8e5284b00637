package spec

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Sandbox process settings, containerd's.
const (
	// sandboxOOMScoreAdj keeps the pause process alive until the very end:
	// if the OOM killer took it, the whole pod's namespaces would go.
	sandboxOOMScoreAdj = -998
	// sandboxCPUShares is the pause process's CPU weight: it does nothing,
	// and the lowest weight keeps it from counting against the pod's.
	sandboxCPUShares = 2
	// cgroupPrefix names corral's scopes under a systemd slice.
	cgroupPrefix = "corral"
)

// cgroupsPath is where the runtime puts a container's cgroup: "parent/id"
// for the cgroupfs driver, or "slice:corral:id" for the systemd driver,
// whose parent is a slice (runc's format for its systemd driver; the
// kubelet sends the whole slice path, /kubepods.slice/.../NAME.slice, and
// systemd only needs the last one, whose name encodes its parents). Empty
// means the runtime's default.
func cgroupsPath(field, parent, id string, systemd bool) (string, error) {
	if parent == "" {
		return "", nil
	}
	if err := checkString(field, parent); err != nil {
		return "", err
	}
	if hasDotDot(parent) {
		return "", invalidf(field, "%q contains a \"..\" element", parent)
	}
	if systemd {
		base := path.Base(parent)
		if !strings.HasSuffix(base, ".slice") || !validName(base) {
			return "", invalidf(field, "%q is not a systemd slice (NAME.slice), and corrald's cgroup_driver is systemd", parent)
		}
		return base + ":" + cgroupPrefix + ":" + id, nil
	}
	if !strings.HasPrefix(parent, "/") {
		// A relative path would be taken from wherever the runtime
		// happens to run.
		return "", invalidf(field, "%q is not an absolute cgroupfs path, and corrald's cgroup_driver is cgroupfs", parent)
	}
	return path.Join(parent, id), nil
}

// containerResources maps the CRI's resources onto the spec's, as
// containerd does: zero means "not set", and a memory limit without a swap
// limit also caps swap (memory+swap = limit), so a container does not
// swap by default.
// prefix is the field's name ending in ".".
func containerResources(prefix string, r *runtimeapi.LinuxContainerResources, cg CgroupFeatures) (*specs.LinuxResources, error) {
	out := &specs.LinuxResources{}
	if r == nil {
		return out, nil
	}
	cpu := &specs.LinuxCPU{}
	if p := r.GetCpuPeriod(); p != 0 {
		if p < 0 {
			return nil, invalidf(prefix+"cpu_period", "%d is negative", p)
		}
		v := uint64(p)
		cpu.Period = &v
	}
	if q := r.GetCpuQuota(); q != 0 {
		if q < -1 {
			return nil, invalidf(prefix+"cpu_quota", "%d is below -1 (unlimited)", q)
		}
		cpu.Quota = &q
	}
	if s := r.GetCpuShares(); s != 0 {
		if s < 0 {
			return nil, invalidf(prefix+"cpu_shares", "%d is negative", s)
		}
		v := uint64(s)
		cpu.Shares = &v
	}
	if c := r.GetCpusetCpus(); c != "" {
		if err := checkCPUList(prefix+"cpuset_cpus", c); err != nil {
			return nil, err
		}
		cpu.Cpus = c
	}
	if m := r.GetCpusetMems(); m != "" {
		if err := checkCPUList(prefix+"cpuset_mems", m); err != nil {
			return nil, err
		}
		cpu.Mems = m
	}
	if *cpu != (specs.LinuxCPU{}) {
		out.CPU = cpu
	}

	limit, swap := r.GetMemoryLimitInBytes(), r.GetMemorySwapLimitInBytes()
	if limit < 0 {
		return nil, invalidf(prefix+"memory_limit_in_bytes", "%d is negative", limit)
	}
	if swap < -1 {
		return nil, invalidf(prefix+"memory_swap_limit_in_bytes", "%d is below -1 (unlimited)", swap)
	}
	if limit > 0 && swap > 0 && swap < limit {
		return nil, invalidf(prefix+"memory_swap_limit_in_bytes", "%d is below memory_limit_in_bytes %d; it is the limit of memory and swap together", swap, limit)
	}
	if limit > 0 || swap != 0 {
		mem := &specs.LinuxMemory{}
		if limit > 0 {
			mem.Limit = &limit
			if swap == 0 && cg.Swap {
				mem.Swap = &limit
			}
		}
		if swap != 0 && cg.Swap {
			mem.Swap = &swap
		}
		if mem.Limit != nil || mem.Swap != nil {
			out.Memory = mem
		}
	}

	for i, h := range r.GetHugepageLimits() {
		field := fmt.Sprintf("%shugepage_limits[%d]", prefix, i)
		if h == nil {
			return nil, invalidf(field, "empty limit")
		}
		// The page size becomes part of a cgroup file name.
		if !validPageSize(h.GetPageSize()) {
			return nil, invalidf(field+".page_size", "%q is not a page size such as 2MB or 1GB", h.GetPageSize())
		}
		if cg.Hugetlb {
			out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
		}
	}

	if u := r.GetUnified(); len(u) > 0 {
		for k, v := range u {
			field := fmt.Sprintf("%sunified[%q]", prefix, k)
			// The key becomes a file name in the container's cgroup.
			if !validUnifiedKey(k) {
				return nil, invalidf(field, "%q is not a cgroup v2 file name such as memory.high", k)
			}
			if err := checkString(field, v); err != nil {
				return nil, err
			}
		}
		if !cg.Unified {
			return nil, preconditionf(prefix+"unified", "cgroup v2 settings given, but this node runs cgroup v1")
		}
		out.Unified = maps.Clone(u)
	}
	return out, nil
}

// checkCPUList validates a cpuset list such as "0-3,6".
func checkCPUList(field, s string) error {
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return invalidf(field, "%q is not a list such as 0-3,6", s)
		}
		if isRange {
			b, err := strconv.ParseUint(hi, 10, 16)
			if err != nil || b < a {
				return invalidf(field, "%q is not a list such as 0-3,6", s)
			}
		}
	}
	return nil
}

func validPageSize(s string) bool {
	num, ok := strings.CutSuffix(s, "B")
	if !ok || len(num) < 2 || len(num) > 12 {
		return false
	}
	if !strings.ContainsRune("KMGTP", rune(num[len(num)-1])) {
		return false
	}
	num = num[:len(num)-1]
	return isNumber(num) && num[0] != '0'
}

func validUnifiedKey(k string) bool {
	ctrl, file, ok := strings.Cut(k, ".")
	if !ok || ctrl == "" || file == "" || len(k) > 128 {
		return false
	}
	for _, r := range k {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.':
		default:
			return false
		}
	}
	return !strings.Contains(k, "..")
}

// oomScoreAdj checks a requested oom_score_adj and, when restrict is set,
// raises it to corrald's own: a process without CAP_SYS_RESOURCE cannot
// lower a score below its own, and runc would fail the container.
func oomScoreAdj(field string, adj int64, restrict bool, host Host) (int, error) {
	if adj < -1000 || adj > 1000 {
		return 0, invalidf(field, "%d is outside -1000..1000", adj)
	}
	v := int(adj)
	if restrict {
		cur, err := host.OOMScoreAdj()
		if err != nil {
			return 0, fmt.Errorf("reading corrald's oom_score_adj: %w", err)
		}
		v = max(v, cur)
	}
	return v, nil
}

// containerDevices maps the CRI devices: each host device node (or every
// node below a host directory) appears at the container path and is
// allowed in the device cgroup with the permissions asked.
func containerDevices(cfg *runtimeapi.ContainerConfig, host Host) ([]specs.LinuxDevice, []specs.LinuxDeviceCgroup, error) {
	var (
		devs  []specs.LinuxDevice
		rules []specs.LinuxDeviceCgroup
	)
	for i, d := range cfg.GetDevices() {
		field := fmt.Sprintf("devices[%d]", i)
		if d == nil {
			return nil, nil, invalidf(field, "empty device")
		}
		src, err := hostPath(field+".host_path", d.GetHostPath())
		if err != nil {
			return nil, nil, err
		}
		if src == "/" {
			return nil, nil, invalidf(field+".host_path", "the node's root is not a device")
		}
		dst := src
		if d.GetContainerPath() != "" {
			if dst, err = containerPath(field+".container_path", d.GetContainerPath()); err != nil {
				return nil, nil, err
			}
		}
		perms := d.GetPermissions()
		if perms == "" || strings.Trim(perms, "rwm") != "" {
			return nil, nil, invalidf(field+".permissions", "%q is not made of r, w and m", perms)
		}
		found, err := host.Devices(src)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, invalidf(field+".host_path", "%q does not exist on the node", src)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s.host_path %q: %w", field, src, err)
		}
		if len(found) == 0 {
			return nil, nil, invalidf(field+".host_path", "%q is not a device and holds none", src)
		}
		for _, dev := range found {
			// A node below a directory keeps its place below the
			// container path.
			if !within(dev.Path, src) {
				return nil, nil, fmt.Errorf("%s: device lookup of %q returned %q, which is not below it", field, src, dev.Path)
			}
			dev.Path = dst + strings.TrimPrefix(dev.Path, src)
			if dev.Type != "c" && dev.Type != "b" {
				return nil, nil, invalidf(field+".host_path", "%q is not a character or block device", src)
			}
			major, minor := dev.Major, dev.Minor
			devs = append(devs, dev)
			rules = append(rules, specs.LinuxDeviceCgroup{Allow: true, Type: dev.Type, Major: &major, Minor: &minor, Access: perms})
		}
	}
	return devs, rules, nil
}

// Resources converts the resources of an UpdateContainerResources request
// with the same rules and checks as at creation, so an update cannot set
// what a new container could not have.
func Resources(r *runtimeapi.LinuxContainerResources, host Host) (*specs.LinuxResources, error) {
	return containerResources("linux", r, host.Cgroups())
}
