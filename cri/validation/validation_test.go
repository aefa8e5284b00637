package validation

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// kubeletPod is a pod sandbox config shaped like the kubelet's.
func kubeletPod() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web-7d4b9c8f6-x2x9q", Namespace: "default", Uid: "4c3f1f2e-6a1b-4c8e-9d1e-2f3a4b5c6d7e", Attempt: 1},
		Hostname:     "web-7d4b9c8f6-x2x9q",
		LogDirectory: "/var/log/pods/default_web-7d4b9c8f6-x2x9q_4c3f1f2e-6a1b-4c8e-9d1e-2f3a4b5c6d7e",
		DnsConfig: &runtimeapi.DNSConfig{
			Servers:  []string{"10.96.0.10"},
			Searches: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
			Options:  []string{"ndots:5"},
		},
		PortMappings: []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: 30080, HostIp: "0.0.0.0"}},
		Labels: map[string]string{
			"io.kubernetes.pod.name": "web-7d4b9c8f6-x2x9q", "io.kubernetes.pod.namespace": "default",
			"io.kubernetes.pod.uid": "4c3f1f2e-6a1b-4c8e-9d1e-2f3a4b5c6d7e", "app": "web", "pod-template-hash": "7d4b9c8f6",
		},
		Annotations: map[string]string{
			"kubernetes.io/config.seen": "2026-12-03T10:00:00.000000000Z", "kubernetes.io/config.source": "api",
			"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat(`{"apiVersion":"v1"}`, 2000),
		},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/burstable/pod4c3f1f2e-6a1b-4c8e-9d1e-2f3a4b5c6d7e",
			Sysctls:      map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions:   &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER},
				RunAsUser:          &runtimeapi.Int64Value{Value: 1000},
				SupplementalGroups: []int64{2000},
				Seccomp:            &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			},
			Resources: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 256 << 20},
		},
	}
}

// kubeletContainer is a container config shaped like the kubelet's.
func kubeletContainer() *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: "nginx", Attempt: 2},
		Image:      &runtimeapi.ImageSpec{Image: "sha256:" + strings.Repeat("ab", 32), UserSpecifiedImage: "docker.io/library/nginx:1.27"},
		Command:    []string{"/docker-entrypoint.sh"},
		Args:       []string{"nginx", "-g", "daemon off;"},
		WorkingDir: "/usr/share/nginx/html",
		Envs:       []*runtimeapi.KeyValue{{Key: "KUBERNETES_SERVICE_HOST", Value: []byte("10.96.0.1")}, {Key: "EMPTY"}},
		Mounts: []*runtimeapi.Mount{
			{ContainerPath: "/var/run/secrets/kubernetes.io/serviceaccount", HostPath: "/var/lib/kubelet/pods/4c3f/volumes/kubernetes.io~projected/kube-api-access-abcde", Readonly: true, SelinuxRelabel: true},
			{ContainerPath: "/etc/hosts", HostPath: "/var/lib/kubelet/pods/4c3f/etc-hosts"},
			{ContainerPath: "/dev/termination-log", HostPath: "/var/lib/kubelet/pods/4c3f/containers/nginx/1a2b3c4d"},
			{ContainerPath: "/data", HostPath: "/mnt/disks/ssd0/", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		},
		Devices:     []*runtimeapi.Device{{ContainerPath: "/dev/fuse", HostPath: "/dev/fuse", Permissions: "rwm"}},
		LogPath:     "nginx/2.log",
		Labels:      map[string]string{"io.kubernetes.container.name": "nginx"},
		Annotations: map[string]string{"io.kubernetes.container.hash": "1a2b3c4d", "io.kubernetes.container.restartCount": "2"},
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: -1, CpuShares: 2, MemoryLimitInBytes: 1 << 30, OomScoreAdj: 1000, MemorySwapLimitInBytes: -1,
				HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}}, Unified: map[string]string{"memory.high": "max"}},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Capabilities:     &runtimeapi.Capability{DropCapabilities: []string{"ALL"}},
				RunAsUser:        &runtimeapi.Int64Value{Value: 0},
				MaskedPaths:      []string{"/proc/kcore", "/proc/keys"},
				ReadonlyPaths:    []string{"/proc/sys", "/proc/sysrq-trigger"},
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/var/lib/kubelet/seccomp/audit.json"},
				Apparmor:         &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-apparmor-example-deny-write"},
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: strings.Repeat("0f", 32)},
			},
		},
	}
}

const podID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestKubeletRequestsPass: what a kubelet, crictl and critest send must
// pass untouched.
func TestKubeletRequestsPass(t *testing.T) {
	for _, req := range []proto.Message{
		&runtimeapi.RunPodSandboxRequest{Config: kubeletPod(), RuntimeHandler: "runc"},
		&runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: kubeletContainer(), SandboxConfig: kubeletPod()},
		&runtimeapi.StopContainerRequest{ContainerId: podID, Timeout: 30},
		&runtimeapi.StopContainerRequest{ContainerId: podID},
		&runtimeapi.ExecSyncRequest{ContainerId: podID, Cmd: []string{"sh", "-c", "echo hi"}, Timeout: 1},
		&runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{80, 65535}},
		&runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: "0123", LabelSelector: map[string]string{"app": "web"}}},
		&runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "registry.k8s.io/pause:3.10"}, Auth: &runtimeapi.AuthConfig{Username: "u", Password: "p\tw"}},
		&runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.244.0.0/24,fd00:10:244::/64"}}},
		&runtimeapi.UpdateContainerResourcesRequest{ContainerId: podID, Linux: &runtimeapi.LinuxContainerResources{CpuQuota: 20000, CpuPeriod: 100000}},
		&runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "sha256:" + strings.Repeat("0", 64)}},
		&runtimeapi.VersionRequest{},
	} {
		if err := Request(req); err != nil {
			t.Errorf("%T: %v", req, err)
		}
	}
}

// TestHostileRequests: each is refused with InvalidArgument, and the
// message names the field at fault.
func TestHostileRequests(t *testing.T) {
	pod := func(mod func(*runtimeapi.PodSandboxConfig)) proto.Message {
		c := kubeletPod()
		mod(c)
		return &runtimeapi.RunPodSandboxRequest{Config: c}
	}
	ctr := func(mod func(*runtimeapi.ContainerConfig)) proto.Message {
		c := kubeletContainer()
		mod(c)
		return &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: c, SandboxConfig: kubeletPod()}
	}
	res := func(mod func(*runtimeapi.LinuxContainerResources)) proto.Message {
		return ctr(func(c *runtimeapi.ContainerConfig) { mod(c.Linux.Resources) })
	}
	huge := strings.Repeat("x", 1<<20)
	bigMap := map[string]string{}
	for i := range maxMapEntries + 1 {
		bigMap[strings.Repeat("k", 10)+string(rune('a'+i%26))+strings.Repeat("z", i/26%20)+string(rune(0x4e00+i))] = "v"
	}
	cases := []struct {
		name  string
		req   proto.Message
		field string
	}{
		{"NUL in pod name", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "a\x00b" }), "config.metadata.name"},
		{"invalid UTF-8 in namespace", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "\xff\xfe" }), "config.metadata.namespace"},
		{"control character in uid", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "a\nb" }), "config.metadata.uid"},
		{"oversized pod name", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = strings.Repeat("n", 254) }), "config.metadata.name"},
		{"oversized hostname", pod(func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 65) }), "config.hostname"},
		{"slash in hostname", pod(func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "../../etc" }), "config.hostname"},
		{"relative log directory", pod(func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "var/log/pods/x" }), "config.log_directory"},
		{"log directory with ..", pod(func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "/var/log/pods/../../etc" }), "config.log_directory"},
		{"huge label map", pod(func(c *runtimeapi.PodSandboxConfig) { c.Labels = bigMap }), "config.labels"},
		{"huge annotation", pod(func(c *runtimeapi.PodSandboxConfig) { c.Annotations = map[string]string{"a": huge + "x"} }), "config.annotations"},
		{"empty label key", pod(func(c *runtimeapi.PodSandboxConfig) { c.Labels = map[string]string{"": "v"} }), "config.labels"},
		{"NUL in annotation value", pod(func(c *runtimeapi.PodSandboxConfig) { c.Annotations = map[string]string{"a": "\x00"} }), `config.annotations["a"]`},
		{"negative host port", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostPort = -1 }), "config.port_mappings[0].host_port"},
		{"port above 65535", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].ContainerPort = 70000 }), "config.port_mappings[0].container_port"},
		{"host IP not an IP", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].HostIp = "localhost" }), "config.port_mappings[0].host_ip"},
		{"unknown protocol", pod(func(c *runtimeapi.PodSandboxConfig) { c.PortMappings[0].Protocol = 42 }), "config.port_mappings[0].protocol"},
		{"DNS server not an IP", pod(func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"8.8.8.8\nnameserver 1.1.1.1"} }), "config.dns_config.servers[0]"},
		{"DNS search with a newline", pod(func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Searches = []string{"a\noptions debug"} }), "config.dns_config.searches[0]"},
		{"cgroup parent with ..", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/kubepods/../../system.slice" }), "config.linux.cgroup_parent"},
		{"negative uid", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.RunAsUser.Value = -1 }), "config.linux.security_context.run_as_user.value"},
		{"uid above 2^31", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.RunAsUser.Value = 1 << 40 }), "config.linux.security_context.run_as_user.value"},
		{"negative supplemental group", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.SecurityContext.SupplementalGroups = []int64{5, -5} }), "config.linux.security_context.supplemental_groups[1]"},
		{"runtime handler with a slash", &runtimeapi.RunPodSandboxRequest{Config: kubeletPod(), RuntimeHandler: "../runc"}, "runtime_handler"},

		{"bad pod sandbox ID", &runtimeapi.CreateContainerRequest{PodSandboxId: "../../x", Config: kubeletContainer()}, "pod_sandbox_id"},
		{"NUL in container name", ctr(func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "x\x00" }), "config.metadata.name"},
		{"relative working dir", ctr(func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "app" }), "config.working_dir"},
		{"working dir with ..", ctr(func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "/app/../../.." }), "config.working_dir"},
		{"absolute log path", ctr(func(c *runtimeapi.ContainerConfig) { c.LogPath = "/etc/passwd" }), "config.log_path"},
		{"log path with ..", ctr(func(c *runtimeapi.ContainerConfig) { c.LogPath = "nginx/../../../../etc/cron.d/x" }), "config.log_path"},
		{"relative mount container path", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].ContainerPath = "etc" }), "config.mounts[0].container_path"},
		{"mount container path with ..", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[1].ContainerPath = "/../../../etc" }), "config.mounts[1].container_path"},
		{"relative mount host path", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[2].HostPath = "var/lib/x" }), "config.mounts[2].host_path"},
		{"mount host path with ..", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[3].HostPath = "/var/lib/kubelet/../../../root" }), "config.mounts[3].host_path"},
		{"unknown propagation", ctr(func(c *runtimeapi.ContainerConfig) { c.Mounts[0].Propagation = 7 }), "config.mounts[0].propagation"},
		{"device path with ..", ctr(func(c *runtimeapi.ContainerConfig) { c.Devices[0].HostPath = "/dev/../etc/shadow" }), "config.devices[0].host_path"},
		{"relative device container path", ctr(func(c *runtimeapi.ContainerConfig) { c.Devices[0].ContainerPath = "dev/x" }), "config.devices[0].container_path"},
		{"masked path with ..", ctr(func(c *runtimeapi.ContainerConfig) { c.Linux.SecurityContext.MaskedPaths = []string{"/proc/../etc"} }), "config.linux.security_context.masked_paths[0]"},
		{"NUL in an argument", ctr(func(c *runtimeapi.ContainerConfig) { c.Args = []string{"a\x00b"} }), "config.args[0]"},
		{"argument too long for exec", ctr(func(c *runtimeapi.ContainerConfig) { c.Args = []string{strings.Repeat("a", 128<<10)} }), "config.args[0]"},
		{"arguments too long together", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Args = nil
			for range 40 {
				c.Args = append(c.Args, strings.Repeat("a", 64<<10))
			}
		}), "config.command"},
		{"env name with =", ctr(func(c *runtimeapi.ContainerConfig) { c.Envs[0].Key = "A=B" }), "config.envs[0].key"},
		{"NUL in an env value", ctr(func(c *runtimeapi.ContainerConfig) { c.Envs[1].Value = []byte("a\x00b") }), "config.envs[1].value"},
		{"env value not UTF-8", ctr(func(c *runtimeapi.ContainerConfig) { c.Envs[1].Value = []byte("\xff") }), "config.envs[1].value"},
		{"target ID not an ID", ctr(func(c *runtimeapi.ContainerConfig) { c.Linux.SecurityContext.NamespaceOptions.TargetId = "x/y" }), "config.linux.security_context.namespace_options.target_id"},
		{"negative CPU period", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = -1 }), "config.linux.resources.cpu_period"},
		{"CPU period above a second", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuPeriod = 2000000 }), "config.linux.resources.cpu_period"},
		{"CPU quota below -1", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = -2 }), "config.linux.resources.cpu_quota"},
		{"CPU quota below 1 ms", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = 10 }), "config.linux.resources.cpu_quota"},
		{"CPU shares of 1", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 1 }), "config.linux.resources.cpu_shares"},
		{"absurd CPU shares", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 1 << 40 }), "config.linux.resources.cpu_shares"},
		{"negative memory limit", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = -4096 }), "config.linux.resources.memory_limit_in_bytes"},
		{"swap below -1", res(func(r *runtimeapi.LinuxContainerResources) { r.MemorySwapLimitInBytes = -2 }), "config.linux.resources.memory_swap_limit_in_bytes"},
		{"oom_score_adj out of range", res(func(r *runtimeapi.LinuxContainerResources) { r.OomScoreAdj = -1001 }), "config.linux.resources.oom_score_adj"},
		{"NUL in a unified key", res(func(r *runtimeapi.LinuxContainerResources) { r.Unified = map[string]string{"memory.max\x00": "1"} }), "config.linux.resources.unified"},

		{"negative stop timeout", &runtimeapi.StopContainerRequest{ContainerId: podID, Timeout: -5}, "timeout"},
		{"stop timeout past time.Duration", &runtimeapi.StopContainerRequest{ContainerId: podID, Timeout: 1 << 62}, "timeout"},
		{"negative exec timeout", &runtimeapi.ExecSyncRequest{ContainerId: podID, Cmd: []string{"true"}, Timeout: -1}, "timeout"},
		{"port forward to port 0 or negative", &runtimeapi.PortForwardRequest{PodSandboxId: podID, Port: []int32{80, -1}}, "port[1]"},
		{"container ID with a slash", &runtimeapi.ContainerStatusRequest{ContainerId: "a/b"}, "container_id"},
		{"container ID of ..", &runtimeapi.RemoveContainerRequest{ContainerId: ".."}, "container_id"},
		{"oversized container ID", &runtimeapi.StartContainerRequest{ContainerId: strings.Repeat("a", 256)}, "container_id"},
		{"oversized image name", &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: huge}}, "image.image"},
		{"huge label selector", &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: bigMap}}, "filter.label_selector"},
		{"pod CIDR not a CIDR", &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.0.0.0/33"}}}, "runtime_config.network_config.pod_cidr"},
		{"oversized auth", &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "x"}, Auth: &runtimeapi.AuthConfig{Password: huge}}, "auth.password"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Request(tc.req)
			if err == nil {
				t.Fatal("passed")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("%v is not InvalidArgument", err)
			}
			if !strings.HasPrefix(err.Error(), tc.field) {
				t.Errorf("%v does not start with the field %s", err, tc.field)
			}
			if len(err.Error()) > 600 {
				t.Errorf("message of %d bytes", len(err.Error()))
			}
		})
	}
}

// TestRulesNameRealFields: a rule keyed by a name no field has would
// silently check nothing.
func TestRulesNameRealFields(t *testing.T) {
	var names []protoreflect.FullName
	for n := range stringRules {
		names = append(names, n)
	}
	for n := range intRules {
		names = append(names, n)
	}
	for _, n := range names {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(n)
		if err != nil {
			// Map entries are not registered by their own name.
			parent, _ := protoregistry.GlobalFiles.FindDescriptorByName(n.Parent().Parent())
			if md, ok := parent.(protoreflect.MessageDescriptor); ok {
				if fd := md.Fields().ByName(protoreflect.Name(strings.TrimSuffix(strings.ToLower(string(n.Parent().Name())), "entry"))); fd != nil && fd.IsMap() {
					continue
				}
			}
			t.Errorf("rule for %s: no such field", n)
			continue
		}
		if _, ok := d.(protoreflect.FieldDescriptor); !ok {
			t.Errorf("rule for %s: not a field", n)
		}
	}
	for n := range messageRules {
		if _, err := protoregistry.GlobalTypes.FindMessageByName(n); err != nil {
			t.Errorf("message rule for %s: %v", n, err)
		}
	}
}

func TestNotAMessage(t *testing.T) {
	if err := Request("x"); err != nil {
		t.Error(err)
	}
	if err := Request((*runtimeapi.RunPodSandboxRequest)(nil)); err != nil {
		t.Error(err)
	}
}
