package integration

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestHostileInput is issue 11's hostile-input list: each request goes
// through the real CRI socket to a real corrald, and each must be answered
// with InvalidArgument and a message naming the field, and leave nothing
// behind: no record, file, directory, mount, process or runc container,
// nothing outside the directories the request aimed at. Meanwhile a pod
// shaped like the kubelet's, with volumes, devices, environment and limits,
// keeps running, and the hostile calls aimed at it leave it as it was.
func TestHostileInput(t *testing.T) {
	e := newPodEnv(t)

	// What a kubelet sends passes: host paths anywhere on the node, an
	// absolute log directory, limits, a device, labels and annotations.
	volume := filepath.Join(e.dir, "volumes", "data")
	if err := os.MkdirAll(volume, 0o755); err != nil {
		t.Fatal(err)
	}
	podCfg := e.podConfig("hostile-target")
	podCfg.Labels["app.kubernetes.io/name"] = "target"
	podCfg.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = strings.Repeat(`{"kind":"Pod"}`, 5000)
	podCfg.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"127.0.0.53"}, Searches: []string{"svc.cluster.local"}, Options: []string{"ndots:5"}}
	podID := e.runPod(t, podCfg)
	ctrCfg := e.containerConfig("healthy", "sleep", "1000")
	ctrCfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: volume + "/"}}
	ctrCfg.Devices = []*runtimeapi.Device{{ContainerPath: "/dev/mynull", HostPath: "/dev/null", Permissions: "rwm"}}
	ctrCfg.Envs = []*runtimeapi.KeyValue{{Key: "GREETING", Value: []byte("hello world")}}
	ctrCfg.WorkingDir = "/tmp"
	ctrCfg.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 256, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 500}
	healthy, healthyPid := e.runContainer(t, podID, podCfg, ctrCfg)

	// A sentinel the traversal cases aim next to: nothing may appear
	// beside it.
	outside := filepath.Join(e.dir, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	// Not filepath.Join: it would clean the ".." away.
	escape := func(rel string) string { return e.logs + "/../outside/" + rel }

	conn, err := grpc.NewClient("unix://"+e.d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := func(method string, body []byte) error {
		return conn.Invoke(e.ctx(), "/runtime.v1.RuntimeService/"+method, body, new([]byte), grpc.ForceCodecV2(rawBytes{}))
	}

	pod := func(mod func(*runtimeapi.PodSandboxConfig)) func() error {
		return func() error {
			c := proto.Clone(podCfg).(*runtimeapi.PodSandboxConfig)
			c.Metadata.Name, c.Metadata.Uid, c.Hostname = "hostile", uid(), "hostile"
			mod(c)
			_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: c})
			return err
		}
	}
	ctr := func(mod func(*runtimeapi.ContainerConfig)) func() error {
		return func() error {
			c := e.containerConfig("hostile", "sleep", "1000")
			mod(c)
			_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: c, SandboxConfig: podCfg})
			return err
		}
	}
	res := func(mod func(*runtimeapi.LinuxContainerResources)) func() error {
		return ctr(func(c *runtimeapi.ContainerConfig) {
			c.Linux.Resources = &runtimeapi.LinuxContainerResources{}
			mod(c.Linux.Resources)
		})
	}
	labels := map[string]string{}
	for i := range 5000 {
		labels[fmt.Sprintf("label-%d", i)] = "v"
	}
	var manyArgs []string
	for range 48 {
		manyArgs = append(manyArgs, strings.Repeat("a", 64<<10))
	}
	// Wire bytes no Go client would marshal: a name that is not UTF-8.
	badUTF8Pod := wireField(1, append(wireField(1, append(append(wireField(1, []byte("n\xff")), wireField(2, []byte(uid()))...), wireField(3, []byte("ns"))...)),
		wireField(3, []byte(e.logs))...))
	badUTF8Ctr := append(wireField(1, []byte(podID)), wireField(2, wireField(1, wireField(1, []byte("c\xc0"))))...)

	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"oversized pod name", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = strings.Repeat("n", 300) }), "metadata.name"},
		{"NUL in pod name", pod(func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "hostile\x00pod" }), "metadata.name"},
		{"pod name not UTF-8", func() error { return raw("RunPodSandbox", badUTF8Pod) }, "metadata.name"},
		{"5000 labels", pod(func(c *runtimeapi.PodSandboxConfig) { c.Labels = labels }), "labels"},
		{"2 MiB annotation", pod(func(c *runtimeapi.PodSandboxConfig) { c.Annotations["big"] = strings.Repeat("x", 2<<20) }), "annotations"},
		{"relative log directory", pod(func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "logs/pods" }), "log_directory"},
		{"log directory escaping", pod(func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = escape("pod-logs") }), "log_directory"},
		{"hostname with a path", pod(func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "../../etc/hostname" }), "hostname"},
		{"negative host port", pod(func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 80, HostPort: -1}}
		}), "host_port"},
		{"port past 65535", pod(func(c *runtimeapi.PodSandboxConfig) {
			c.PortMappings = []*runtimeapi.PortMapping{{ContainerPort: 70000}}
		}), "container_port"},
		{"resolv.conf injection", pod(func(c *runtimeapi.PodSandboxConfig) { c.DnsConfig.Servers = []string{"1.1.1.1\nnameserver 6.6.6.6"} }), "dns_config.servers"},
		{"negative run_as_user", pod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: -1}
		}), "run_as_user"},
		{"cgroup parent escaping", pod(func(c *runtimeapi.PodSandboxConfig) { c.Linux.CgroupParent = "/corral/../../../sys" }), "cgroup_parent"},

		{"log path escaping", ctr(func(c *runtimeapi.ContainerConfig) { c.LogPath = "../../outside/escape.log" }), "log_path"},
		{"absolute log path", ctr(func(c *runtimeapi.ContainerConfig) { c.LogPath = filepath.Join(outside, "abs.log") }), "log_path"},
		{"mount container path escaping", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/../../../" + outside + "/m", HostPath: volume}}
		}), "container_path"},
		{"relative mount host path", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "etc"}}
		}), "host_path"},
		{"mount host path with ..", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: volume + "/../../../../etc"}}
		}), "host_path"},
		{"device path escaping", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{ContainerPath: "/dev/x", HostPath: "/dev/../etc/shadow", Permissions: "r"}}
		}), "devices[0].host_path"},
		{"device container path escaping", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{ContainerPath: "/dev/../../x", HostPath: "/dev/null", Permissions: "r"}}
		}), "devices[0].container_path"},
		{"working dir escaping", ctr(func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "/tmp/../../.." }), "working_dir"},
		{"relative working dir", ctr(func(c *runtimeapi.ContainerConfig) { c.WorkingDir = "tmp" }), "working_dir"},
		{"negative memory limit", res(func(r *runtimeapi.LinuxContainerResources) { r.MemoryLimitInBytes = -1 }), "memory_limit_in_bytes"},
		{"absurd CPU shares", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuShares = 1 << 40 }), "cpu_shares"},
		{"negative CPU quota", res(func(r *runtimeapi.LinuxContainerResources) { r.CpuQuota = -5000 }), "cpu_quota"},
		{"oom_score_adj 5000", res(func(r *runtimeapi.LinuxContainerResources) { r.OomScoreAdj = 5000 }), "oom_score_adj"},
		// Fields that become file names on the node: a cgroup file, a
		// /proc/sys entry, a hugetlb file, a seccomp profile, a path
		// masked in the container, a path inside an image volume.
		{"cgroup v2 key as a path", res(func(r *runtimeapi.LinuxContainerResources) {
			r.Unified = map[string]string{"../../../../etc/motd": "x"}
		}), "unified"},
		{"hugepage size as a path", res(func(r *runtimeapi.LinuxContainerResources) {
			r.HugepageLimits = []*runtimeapi.HugepageLimit{{PageSize: "../../x", Limit: 1 << 21}}
		}), "page_size"},
		{"sysctl name as a path", pod(func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net/../../../../etc/motd": "x"}
		}), "sysctls"},
		{"relative seccomp profile", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "../../../../etc/shadow"}
		}), "localhost_ref"},
		{"masked path escaping", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Linux.SecurityContext.MaskedPaths = []string{"/proc/../../../etc"}
		}), "masked_paths"},
		{"image sub-path escaping", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Mounts = []*runtimeapi.Mount{{ContainerPath: "/img", Image: &runtimeapi.ImageSpec{Image: e.busyboxID}, ImageSubPath: "../../.."}}
		}), "image_sub_path"},
		{"NUL in an argument", ctr(func(c *runtimeapi.ContainerConfig) { c.Command = []string{"sleep", "1\x00000"} }), "command[1]"},
		{"3 MiB of arguments", ctr(func(c *runtimeapi.ContainerConfig) { c.Args = manyArgs }), "command"},
		{"env name with =", ctr(func(c *runtimeapi.ContainerConfig) {
			c.Envs = []*runtimeapi.KeyValue{{Key: "PATH=/x:", Value: []byte("y")}}
		}), "envs[0].key"},
		{"container name not UTF-8", func() error { return raw("CreateContainer", badUTF8Ctr) }, "metadata.name"},
		{"pod sandbox ID as a path", func() error {
			_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: "../../" + podID, Config: e.containerConfig("x", "true"), SandboxConfig: podCfg})
			return err
		}, "pod_sandbox_id"},

		{"negative stop timeout", func() error {
			_, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: healthy, Timeout: -1})
			return err
		}, "timeout"},
		{"stop timeout past any clock", func() error {
			_, err := e.rt.StopContainer(e.ctx(), &runtimeapi.StopContainerRequest{ContainerId: healthy, Timeout: 1 << 62})
			return err
		}, "timeout"},
		{"negative exec timeout", func() error {
			_, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: healthy, Cmd: []string{"touch", "/data/ran"}, Timeout: -1})
			return err
		}, "timeout"},
		{"container ID as a path", func() error {
			_, err := e.rt.RemoveContainer(e.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: "../" + healthy})
			return err
		}, "container_id"},
		{"pod ID as a path", func() error {
			_, err := e.rt.RemovePodSandbox(e.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID + "/.."})
			return err
		}, "pod_sandbox_id"},
		{"resource update below the kernel's minimum", func() error {
			_, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: healthy,
				Linux: &runtimeapi.LinuxContainerResources{CpuQuota: 10, CpuPeriod: 100000}})
			return err
		}, "cpu_quota"},
		{"negative memory update", func() error {
			_, err := e.rt.UpdateContainerResources(e.ctx(), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: healthy,
				Linux: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -(1 << 20)}})
			return err
		}, "memory_limit_in_bytes"},
		{"image name of a megabyte", func() error {
			_, err := e.images.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: strings.Repeat("a", 1<<20)}})
			return err
		}, "image.image"},
	}

	before := e.hostState(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			code, msg := grpcCode(err)
			if err == nil {
				t.Fatal("succeeded")
			}
			if code != codes.InvalidArgument || !strings.Contains(msg, tc.field) {
				t.Errorf("%s %q; want InvalidArgument naming %s", code, msg, tc.field)
			}
			if len(msg) > 1000 {
				t.Errorf("a message of %d bytes is not one a person reads", len(msg))
			}
			t.Logf("%s: %s", code, msg)
			e.expectHostState(t, before)
			if st, _ := e.containerStatus(t, healthy); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || !processAlive(healthyPid) {
				t.Errorf("the healthy container is %s (pid %d alive: %v)", st.State, healthyPid, processAlive(healthyPid))
			}
		})
	}
	if _, err := os.Stat(filepath.Join(volume, "ran")); err == nil {
		t.Error("the refused exec ran")
	}
	if entries, _ := os.ReadDir(outside); len(entries) > 0 {
		t.Errorf("the traversal cases made %v in %s", entries, outside)
	}

	e.removePod(t, podID)
	e.checkNoLeaks(t)
}

// rawBytes sends a request's wire bytes as they are.
type rawBytes struct{}

func (rawBytes) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawBytes) Unmarshal(mem.BufferSlice, any) error { return nil }
func (rawBytes) Name() string                         { return "proto" }

func wireField(num protowire.Number, b []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), b)
}

// hostState is what a refused request must not change: the records
// corrald lists, every path under the test's dir (records, bundles, logs,
// the sentinel), and the processes, mounts and runc containers of pods.
type hostState struct {
	pods, containers []string
	paths            []string
	host             string
}

func (e *podEnv) hostState(t *testing.T) hostState {
	t.Helper()
	var s hostState
	for _, p := range e.listPods(t, nil) {
		s.pods = append(s.pods, p.Id+" "+p.State.String())
	}
	for _, c := range e.listContainers(t, nil) {
		s.containers = append(s.containers, c.Id+" "+c.State.String())
	}
	filepath.WalkDir(e.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		// The image store and the CNI cache are not a pod's to change.
		if d.IsDir() && (d.Name() == "content" || d.Name() == "snapshots") {
			return filepath.SkipDir
		}
		s.paths = append(s.paths, p)
		return nil
	})
	s.host = e.snapshotHost().String()
	return s
}

func (s hostState) diff(o hostState) string {
	var out []string
	if !slices.Equal(s.pods, o.pods) {
		out = append(out, fmt.Sprintf("pods %v, were %v", o.pods, s.pods))
	}
	if !slices.Equal(s.containers, o.containers) {
		out = append(out, fmt.Sprintf("containers %v, were %v", o.containers, s.containers))
	}
	for _, p := range o.paths {
		if !slices.Contains(s.paths, p) {
			out = append(out, "new path "+p)
		}
	}
	for _, p := range s.paths {
		if !slices.Contains(o.paths, p) {
			out = append(out, "path gone "+p)
		}
	}
	if s.host != o.host {
		out = append(out, fmt.Sprintf("host:\n%s\nwas:\n%s", o.host, s.host))
	}
	return strings.Join(out, "\n")
}

// expectHostState waits a few seconds for the host to be as before.
func (e *podEnv) expectHostState(t *testing.T, before hostState) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		d := before.diff(e.hostState(t))
		if d == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("the refused request left something behind:\n%s", d)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
