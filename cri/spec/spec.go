package spec

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// OCIVersion is the ociVersion written into every spec. The Go types are
// runtime-spec v1.3.0, but Debian 12's crun 1.8 refuses any version above
// the 1.0.2 it knows, and runc 1.1 reports 1.0.2-dev as its maximum; every
// field corral sets exists in 1.0.2.
const OCIVersion = "1.0.2"

// The annotations containerd puts on its specs, which kubelet-side tools
// (and shims such as Kata's, and corral's own shim for grouping) read.
const (
	AnnotationContainerType    = "io.kubernetes.cri.container-type"
	AnnotationSandboxID        = "io.kubernetes.cri.sandbox-id"
	AnnotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	AnnotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	AnnotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	AnnotationSandboxLogDir    = "io.kubernetes.cri.sandbox-log-directory"
	AnnotationContainerName    = "io.kubernetes.cri.container-name"
	AnnotationImageName        = "io.kubernetes.cri.image-name"

	// ContainerTypeSandbox and ContainerTypeContainer are the values of
	// AnnotationContainerType.
	ContainerTypeSandbox   = "sandbox"
	ContainerTypeContainer = "container"
)

// SandboxOptions is what Sandbox needs beyond the CRI request.
type SandboxOptions struct {
	// ID is the sandbox's ID; it names its cgroup.
	ID string
	// PauseBinary is the infra program's path inside Rootfs, e.g. "/pause".
	PauseBinary string
	// Rootfs is the host path of the pause container's root filesystem.
	Rootfs string
	// NetNSPath is the pod's pinned network namespace; "" for a
	// host-network pod, or to have the runtime create one.
	NetNSPath string
	// UsernsPath is the pod's pinned user namespace, which owns NetNSPath,
	// for a pod with a user namespace of its own; "" has the runtime
	// create one.
	UsernsPath string
	// ResolvConfPath, HostnamePath and HostsPath are the pod's files on the
	// host, bound read-only at /etc/resolv.conf, /etc/hostname and
	// /etc/hosts; "" skips one.
	ResolvConfPath, HostnamePath, HostsPath string
	// ShmPath is the pod's /dev/shm directory on the host, which every
	// container of the pod shares; "" gives the pause process a tmpfs of
	// its own. It is ignored for ipc mode NODE, which gets the node's.
	ShmPath string
	// CgroupParent is the parent cgroup used when the CRI config names
	// none.
	CgroupParent string
	// SystemdCgroup says the runtime uses its systemd cgroup driver: the
	// parent must then be a slice.
	SystemdCgroup bool
	// RestrictOOMScoreAdj raises the pause process's oom_score_adj to
	// corrald's own when lower, for nodes where corrald lacks
	// CAP_SYS_RESOURCE.
	RestrictOOMScoreAdj bool
	// Hostname is used when the CRI config has none: the node's name.
	Hostname string
	// Host answers questions about the node. Required.
	Host Host
}

// ContainerOptions is what Container needs beyond the CRI request.
type ContainerOptions struct {
	// ID and SandboxID are the container's and its pod's IDs.
	ID, SandboxID string
	// SandboxPID is the pause process's PID on the host: the container
	// joins its namespaces through /proc/PID/ns.
	SandboxPID uint32
	// TargetPID is the PID of the container that pid mode TARGET names;
	// the caller resolves namespace_options.target_id to it.
	TargetPID uint32
	// Rootfs is the host path of the container's root filesystem.
	Rootfs string
	// ImageName names the image in the image-name annotation when the CRI
	// config has no user_specified_image: the name the image store knows.
	ImageName string
	// NetNSPath is the pod's pinned network namespace; "" to join the
	// sandbox process's.
	NetNSPath string
	// ResolvConfPath, HostnamePath and HostsPath are the pod's files on
	// the host; ShmPath its /dev/shm directory. "" skips one; ShmPath is
	// ignored for ipc mode NODE, which gets the node's /dev/shm.
	ResolvConfPath, HostnamePath, HostsPath, ShmPath string
	// CgroupParent is the parent cgroup used when the sandbox config names
	// none.
	CgroupParent string
	// SystemdCgroup says the runtime uses its systemd cgroup driver.
	SystemdCgroup bool
	// RestrictOOMScoreAdj raises the container's oom_score_adj to
	// corrald's own when lower.
	RestrictOOMScoreAdj bool
	// PidsLimit is the container's pids.max; 0 sets none.
	PidsLimit int64
	// Hostname is the HOSTNAME variable's value when the sandbox config
	// has no hostname: the node's name.
	Hostname string
	// Users resolves the image's users and groups; nil for an image
	// without /etc/passwd and /etc/group.
	Users UserLookup
	// ImageVolumes maps the index of each CRI mount that names an image
	// to the host path the caller mounted it at (cri/imagevolume); the
	// container gets a read-only bind of it.
	ImageVolumes map[int]string
	// Host answers questions about the node. Required.
	Host Host
}

// Sandbox builds the spec of a pod's infra (pause) container. The pause
// process holds the pod's namespaces and does nothing else, so it gets as
// little as possible: no capabilities, no new privileges, a read-only root,
// the default masked paths, and the lowest OOM score the node allows.
func Sandbox(cfg *runtimeapi.PodSandboxConfig, opts SandboxOptions) (*specs.Spec, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, invalidf("config", "missing")
	}
	if err := checkSandboxMetadata(cfg); err != nil {
		return nil, err
	}
	sc := cfg.GetLinux().GetSecurityContext()
	pod, err := checkPodNamespaces(sc.GetNamespaceOptions())
	if err != nil {
		return nil, err
	}
	if pod.userns != nil && opts.NetNSPath != "" && opts.UsernsPath == "" {
		// From inside the pod's user namespace, a network namespace of the
		// node's could be neither joined nor set up (sysfs, sysctls).
		return nil, errors.New("spec.SandboxOptions: a pod with a user namespace needs the one that owns its pinned network namespace (UsernsPath)")
	}

	hostname, err := podHostname(cfg, pod, opts.Hostname)
	if err != nil {
		return nil, err
	}
	cgroups, err := cgroupsPath("linux.cgroup_parent", or(cfg.GetLinux().GetCgroupParent(), opts.CgroupParent), opts.ID, opts.SystemdCgroup)
	if err != nil {
		return nil, err
	}
	sysctls, err := podSysctls(cfg.GetLinux().GetSysctls(), pod)
	if err != nil {
		return nil, err
	}
	// The pod-level resources only size the pod's cgroup, which the
	// kubelet manages; they are checked here, not applied, so the node's
	// features do not matter.
	for _, r := range []struct {
		field string
		res   *runtimeapi.LinuxContainerResources
	}{{"linux.overhead.", cfg.GetLinux().GetOverhead()}, {"linux.resources.", cfg.GetLinux().GetResources()}} {
		if _, err := containerResources(r.field, r.res, CgroupFeatures{Unified: true, Swap: true, Hugetlb: true}); err != nil {
			return nil, err
		}
	}

	req, err := sandboxUser(sc)
	if err != nil {
		return nil, err
	}
	user, err := resolveUser(req, nil, sc.GetSupplementalGroups(), sc.GetSupplementalGroupsPolicy())
	if err != nil {
		return nil, err
	}
	oom, err := oomScoreAdj("sandbox oom_score_adj", sandboxOOMScoreAdj, opts.RestrictOOMScoreAdj, opts.Host)
	if err != nil {
		return nil, err
	}
	caps := &specs.LinuxCapabilities{}
	seccomp, err := seccompProfile("linux.security_context.seccomp", sc.GetSeccomp(),
		"linux.security_context.seccomp_profile_path", sc.GetSeccompProfilePath(), sc.GetPrivileged(), caps, opts.Host)
	if err != nil {
		return nil, err
	}
	if err := checkAppArmor(sc.GetApparmor(), ""); err != nil {
		return nil, err
	}

	// The pause process needs /dev/shm only to hold the pod's; it is
	// read-only here and writable in the app containers.
	shm := opts.ShmPath
	if pod.hostIPC {
		shm = devShm
	}
	var extra []userMount
	if shm != "" {
		extra = append(extra, userMount{m: specs.Mount{Destination: devShm, Type: "bind", Source: shm, Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}}})
	}
	extra = append(extra, podFiles(opts.HostnamePath, opts.HostsPath, opts.ResolvConfPath, true)...)

	shares := uint64(sandboxCPUShares)
	s := &specs.Spec{
		Version: OCIVersion,
		Root:    &specs.Root{Path: opts.Rootfs, Readonly: true},
		Process: &specs.Process{
			Args:            []string{opts.PauseBinary},
			Env:             []string{defaultPath},
			Cwd:             "/",
			User:            user,
			Capabilities:    caps,
			NoNewPrivileges: true,
			OOMScoreAdj:     &oom,
		},
		Hostname: hostname,
		Mounts:   assembleMounts(defaultMounts(false), extra),
		Linux: &specs.Linux{
			Namespaces:  sandboxNamespaces(pod, opts.NetNSPath, opts.UsernsPath),
			CgroupsPath: cgroups,
			Sysctl:      sysctls,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				CPU:     &specs.LinuxCPU{Shares: &shares},
			},
			MaskedPaths:   DefaultMaskedPaths(),
			ReadonlyPaths: DefaultReadonlyPaths(),
			Seccomp:       seccomp,
		},
	}
	setUserns(s, pod.userns)
	annotations, err := passthrough(cfg.GetAnnotations())
	if err != nil {
		return nil, err
	}
	md := cfg.GetMetadata()
	annotations[AnnotationContainerType] = ContainerTypeSandbox
	annotations[AnnotationSandboxID] = opts.ID
	annotations[AnnotationSandboxName] = md.GetName()
	annotations[AnnotationSandboxNamespace] = md.GetNamespace()
	annotations[AnnotationSandboxUID] = md.GetUid()
	if d := cfg.GetLogDirectory(); d != "" {
		annotations[AnnotationSandboxLogDir] = d
	}
	s.Annotations = annotations
	return s, nil
}

// Container builds the spec of an app container of the pod whose config is
// sandbox. img is the image's config; nil means an empty one.
func Container(cfg *runtimeapi.ContainerConfig, sandbox *runtimeapi.PodSandboxConfig, img *imagespec.ImageConfig, opts ContainerOptions) (*specs.Spec, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, invalidf("config", "missing")
	}
	if sandbox == nil {
		sandbox = &runtimeapi.PodSandboxConfig{}
	}
	if img == nil {
		img = &imagespec.ImageConfig{}
	}
	if cfg.GetMetadata().GetName() == "" {
		return nil, invalidf("metadata.name", "empty; a container needs a name")
	}
	if len(cfg.GetCDIDevices()) > 0 {
		return nil, unimplementedf("CDI_devices", "CDI devices are not supported by corral yet")
	}
	if err := checkImageName(cfg.GetImage()); err != nil {
		return nil, err
	}

	podSC := sandbox.GetLinux().GetSecurityContext()
	pod, err := checkPodNamespaces(podSC.GetNamespaceOptions())
	if err != nil {
		return nil, fmt.Errorf("sandbox config: %w", err)
	}
	sc := cfg.GetLinux().GetSecurityContext()
	privileged := sc.GetPrivileged()
	if privileged && !podSC.GetPrivileged() {
		return nil, invalidf("linux.security_context.privileged", "a privileged container needs a privileged pod sandbox (linux.security_context.privileged in the sandbox config)")
	}
	if privileged && pod.userns != nil {
		return nil, invalidf("linux.security_context.privileged", "a privileged container cannot run in a pod with a user namespace of its own")
	}
	cg := opts.Host.Cgroups()

	// process
	args, err := processArgs(cfg, img)
	if err != nil {
		return nil, err
	}
	hostname := sandbox.GetHostname()
	if hostname == "" || pod.hostNetwork {
		hostname = opts.Hostname
	}
	env, err := processEnv(cfg, img, hostname)
	if err != nil {
		return nil, err
	}
	cwd, err := processCwd(cfg, img)
	if err != nil {
		return nil, err
	}
	req, err := containerUser(sc, img)
	if err != nil {
		return nil, err
	}
	user, err := resolveUser(req, opts.Users, sc.GetSupplementalGroups(), sc.GetSupplementalGroupsPolicy())
	if err != nil {
		return nil, err
	}
	caps, err := containerCapabilities(sc.GetCapabilities(), privileged, opts.Host)
	if err != nil {
		return nil, err
	}
	seccomp, err := seccompProfile("linux.security_context.seccomp", sc.GetSeccomp(),
		"linux.security_context.seccomp_profile_path", sc.GetSeccompProfilePath(), privileged, caps, opts.Host)
	if err != nil {
		return nil, err
	}
	if err := checkAppArmor(sc.GetApparmor(), sc.GetApparmorProfile()); err != nil {
		return nil, err
	}
	masked, err := checkPaths("linux.security_context.masked_paths", sc.GetMaskedPaths())
	if err != nil {
		return nil, err
	}
	readonly, err := checkPaths("linux.security_context.readonly_paths", sc.GetReadonlyPaths())
	if err != nil {
		return nil, err
	}

	// linux
	namespaces, err := containerNamespaces(pod, sc.GetNamespaceOptions(), &opts, cg.Unified, privileged)
	if err != nil {
		return nil, err
	}
	res := cfg.GetLinux().GetResources()
	resources, err := containerResources("linux.resources.", res, cg)
	if err != nil {
		return nil, err
	}
	var oom *int
	if res != nil {
		v, err := oomScoreAdj("linux.resources.oom_score_adj", res.GetOomScoreAdj(), opts.RestrictOOMScoreAdj, opts.Host)
		if err != nil {
			return nil, err
		}
		oom = &v
	}
	cgroups, err := cgroupsPath("sandbox config linux.cgroup_parent", or(sandbox.GetLinux().GetCgroupParent(), opts.CgroupParent), opts.ID, opts.SystemdCgroup)
	if err != nil {
		return nil, err
	}
	devices, rules, err := containerDevices(cfg, opts.Host)
	if err != nil {
		return nil, err
	}
	resources.Devices = append([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, rules...)
	if opts.PidsLimit > 0 {
		limit := opts.PidsLimit
		resources.Pids = &specs.LinuxPids{Limit: &limit}
	}
	if privileged {
		all, err := opts.Host.AllDevices()
		if err != nil {
			return nil, fmt.Errorf("listing the node's devices for a privileged container: %w", err)
		}
		devices = slices.Concat(all, devices)
		resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		masked, readonly = nil, nil
	}

	// mounts
	cri, propagation, err := criMounts(cfg, opts.Host, opts.ImageVolumes, pod.userns)
	if err != nil {
		return nil, err
	}
	extra := append(cri, podFiles(opts.HostnamePath, opts.HostsPath, opts.ResolvConfPath, sc.GetReadonlyRootfs())...)
	switch {
	case pod.hostIPC:
		extra = append(extra, userMount{m: bind(devShm, devShm, false)})
	case opts.ShmPath != "":
		extra = append(extra, userMount{m: bind(opts.ShmPath, devShm, false)})
	}
	// Image volumes get nothing of their own: the path stays part of the
	// container's writable layer, with the image's files in it (CRI-O's
	// "mkdir" default). An anonymous volume outside the layer would need
	// a host directory, which a pure function cannot make.
	mounts := assembleMounts(append(defaultMounts(privileged), cgroupMount(privileged)), extra)

	s := &specs.Spec{
		Version: OCIVersion,
		Root:    &specs.Root{Path: opts.Rootfs, Readonly: sc.GetReadonlyRootfs()},
		Process: &specs.Process{
			Terminal:        cfg.GetTty(),
			Args:            args,
			Env:             env,
			Cwd:             cwd,
			User:            user,
			Capabilities:    caps,
			NoNewPrivileges: sc.GetNoNewPrivs(),
			OOMScoreAdj:     oom,
		},
		Mounts: mounts,
		Linux: &specs.Linux{
			Namespaces:        namespaces,
			CgroupsPath:       cgroups,
			Resources:         resources,
			Devices:           devices,
			MaskedPaths:       masked,
			ReadonlyPaths:     readonly,
			Seccomp:           seccomp,
			RootfsPropagation: propagation,
		},
	}
	setUserns(s, pod.userns)

	annotations, err := passthrough(cfg.GetAnnotations())
	if err != nil {
		return nil, err
	}
	md := sandbox.GetMetadata()
	annotations[AnnotationContainerType] = ContainerTypeContainer
	annotations[AnnotationSandboxID] = opts.SandboxID
	annotations[AnnotationSandboxName] = md.GetName()
	annotations[AnnotationSandboxNamespace] = md.GetNamespace()
	annotations[AnnotationSandboxUID] = md.GetUid()
	annotations[AnnotationContainerName] = cfg.GetMetadata().GetName()
	annotations[AnnotationImageName] = or(cfg.GetImage().GetUserSpecifiedImage(), opts.ImageName, cfg.GetImage().GetImage())
	s.Annotations = annotations
	return s, nil
}

func (o *SandboxOptions) check() error {
	var errs []error
	if o.Host == nil {
		errs = append(errs, errors.New("no Host"))
	}
	if !validName(o.ID) {
		errs = append(errs, fmt.Errorf("ID %q is not a valid name", o.ID))
	}
	if !strings.HasPrefix(o.PauseBinary, "/") {
		errs = append(errs, fmt.Errorf("PauseBinary %q is not an absolute path", o.PauseBinary))
	}
	if !strings.HasPrefix(o.Rootfs, "/") {
		errs = append(errs, fmt.Errorf("rootfs %q is not an absolute path", o.Rootfs))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spec.SandboxOptions: %w", err)
	}
	return nil
}

func (o *ContainerOptions) check() error {
	var errs []error
	if o.Host == nil {
		errs = append(errs, errors.New("no Host"))
	}
	if !validName(o.ID) {
		errs = append(errs, fmt.Errorf("ID %q is not a valid name", o.ID))
	}
	if !strings.HasPrefix(o.Rootfs, "/") {
		errs = append(errs, fmt.Errorf("rootfs %q is not an absolute path", o.Rootfs))
	}
	if o.PidsLimit < 0 {
		errs = append(errs, fmt.Errorf("PidsLimit %d is negative", o.PidsLimit))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spec.ContainerOptions: %w", err)
	}
	return nil
}

// checkSandboxMetadata checks what the kubelet always sends: a pod has a
// name; and the hostname and log directory must be usable.
func checkSandboxMetadata(cfg *runtimeapi.PodSandboxConfig) error {
	md := cfg.GetMetadata()
	if md.GetName() == "" {
		return invalidf("metadata.name", "empty; a pod sandbox needs a name")
	}
	if d := cfg.GetLogDirectory(); d != "" {
		if _, err := hostPath("log_directory", d); err != nil {
			return err
		}
	}
	return nil
}

// podHostname is the pod's hostname: the CRI's, else the node's name. A
// host-network pod shares the node's UTS namespace and so its hostname;
// setting one there would rename the node, and runc refuses it.
func podHostname(cfg *runtimeapi.PodSandboxConfig, pod podNamespaces, fallback string) (string, error) {
	h := cfg.GetHostname()
	if h != "" && !validHostname(h) {
		return "", invalidf("hostname", "%q is not a host name (letters, digits, '-', '.', at most 64)", h)
	}
	if pod.hostNetwork {
		return "", nil
	}
	return or(h, fallback), nil
}

func validHostname(h string) bool {
	if h == "" || len(h) > 64 || strings.HasPrefix(h, "-") || strings.HasPrefix(h, ".") {
		return false
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-', r == '.', r == '_':
		default:
			return false
		}
	}
	return true
}

// checkImageName checks the image reference fields that end up in the
// spec's annotations.
func checkImageName(img *runtimeapi.ImageSpec) error {
	if err := checkString("image.image", img.GetImage()); err != nil {
		return err
	}
	return checkString("image.user_specified_image", img.GetUserSpecifiedImage())
}

// passthrough copies the CRI annotations into the spec, where shims and
// hooks read them. corral's own keys are set after, so a client cannot
// forge the container type or the sandbox a container belongs to.
func passthrough(in map[string]string) (map[string]string, error) {
	for _, k := range slices.Sorted(maps.Keys(in)) {
		if k == "" {
			return nil, invalidf("annotations", "an annotation has an empty key")
		}
		if err := checkString(fmt.Sprintf("annotations[%q]", k), in[k]); err != nil {
			return nil, err
		}
	}
	out := make(map[string]string, len(in)+8)
	maps.Copy(out, in)
	return out, nil
}

// or returns the first non-empty string.
func or(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// setUserns gives a spec the ID mappings of the pod's user namespace,
// which the runtime needs also when the process joins the namespace: it
// owns what it makes for the container (/dev, the console) by them.
func setUserns(s *specs.Spec, u *Userns) {
	if u == nil {
		return
	}
	s.Linux.UIDMappings = []specs.LinuxIDMapping{u.UID}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{u.GID}
}
