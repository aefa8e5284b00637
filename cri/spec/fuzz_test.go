package spec

import (
	"encoding/json"
	"testing"
	"testing/fstest"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzContainerSpec feeds arbitrary CRI requests, image configs and image
// user databases to Sandbox and Container: whatever a client or an image
// holds, spec generation must answer with a spec or an error, never panic,
// and every spec it returns must marshal to JSON for the runtime.
func FuzzContainerSpec(f *testing.F) {
	seed := func(c *runtimeapi.ContainerConfig, p *runtimeapi.PodSandboxConfig, img string) {
		cb, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		pb, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(cb, pb, []byte(img), []byte(testPasswd), []byte(testGroup))
	}
	seed(ctrConfig(), podConfig(), `{"User":"app","Entrypoint":["/bin/sh"],"Env":["A=1"]}`)

	c := ctrConfig()
	c.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/data", HostPath: "/data", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		{ContainerPath: "/ro", HostPath: "/private", Readonly: true, RecursiveReadOnly: true, MountOptions: []string{"noexec"}},
	}
	c.Devices = []*runtimeapi.Device{{HostPath: "/dev/dri", ContainerPath: "/dev/gpu", Permissions: "rw"}}
	c.Envs = []*runtimeapi.KeyValue{{Key: "K", Value: []byte("v")}}
	c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuQuota: 5000, MemoryLimitInBytes: 1 << 20, OomScoreAdj: -5, CpusetCpus: "0-1", HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB"}}}
	sc := c.Linux.SecurityContext
	sc.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	sc.RunAsGroup = &runtimeapi.Int64Value{Value: 1000}
	sc.SupplementalGroups = []int64{5}
	sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"NET_RAW"}, AddAmbientCapabilities: []string{"CHOWN"}}
	sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/var/lib/kubelet/seccomp/audit.json"}
	sc.MaskedPaths = DefaultMaskedPaths()
	sc.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "t"}
	p := podConfig()
	p.Linux.Sysctls = map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmax": "1"}
	p.Linux.SecurityContext.Privileged = true
	p.Annotations = map[string]string{"a": "b"}
	seed(c, p, `{"Cmd":["x"],"WorkingDir":"w","Volumes":{"/v":{}}}`)

	c2 := ctrConfig()
	c2.Linux.SecurityContext.Privileged = true
	c2.Linux.SecurityContext.RunAsUsername = "app"
	p2 := podConfig()
	p2.Linux.SecurityContext.Privileged = true
	p2.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_NODE}
	p2.Linux.CgroupParent = "kubepods-pod1.slice"
	seed(c2, p2, `{}`)
	f.Add([]byte{}, []byte{}, []byte{}, []byte{}, []byte{})

	f.Fuzz(func(t *testing.T, ctrBytes, podBytes, imgBytes, passwd, group []byte) {
		var cfg runtimeapi.ContainerConfig
		var pod runtimeapi.PodSandboxConfig
		// Bytes protobuf refuses (bad wire format, strings that are not
		// UTF-8) never reach corrald either: gRPC refuses them first.
		if proto.Unmarshal(ctrBytes, &cfg) != nil || proto.Unmarshal(podBytes, &pod) != nil {
			return
		}
		var img *imagespec.ImageConfig
		if json.Unmarshal(imgBytes, &img) != nil {
			img = nil
		}

		h := newFakeHost()
		h.cgroups = CgroupFeatures{Unified: len(passwd)%2 == 0, Swap: len(group)%2 == 0, Hugetlb: len(imgBytes)%2 == 0}
		users := UsersFromFS(fstest.MapFS{"etc/passwd": {Data: passwd}, "etc/group": {Data: group}})

		sopts := sandboxOpts(h)
		sopts.RestrictOOMScoreAdj = len(ctrBytes)%2 == 0
		sopts.SystemdCgroup = len(podBytes)%2 == 0
		if s, err := Sandbox(&pod, sopts); err == nil {
			if _, err := json.Marshal(s); err != nil {
				t.Fatalf("sandbox spec does not marshal: %v", err)
			}
		}
		copts := ctrOpts(h)
		copts.Users = users
		copts.TargetPID = 7
		copts.RestrictOOMScoreAdj = sopts.RestrictOOMScoreAdj
		copts.SystemdCgroup = sopts.SystemdCgroup
		if s, err := Container(&cfg, &pod, img, copts); err == nil {
			if _, err := json.Marshal(s); err != nil {
				t.Fatalf("container spec does not marshal: %v", err)
			}
		}
	})
}
