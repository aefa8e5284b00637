package spec

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The benchmarks build specs as RunPodSandbox and CreateContainer do, JSON
// included (what goes into config.json), on this node (OSHost: /proc,
// mountinfo, the seccomp profile) and on the fake node (spec generation
// alone):
//
//	go test -run '^$' -bench . -benchmem ./cri/spec/

func benchHosts() map[string]Host {
	return map[string]Host{
		"node": OSHost{RuntimeDefault: DefaultSeccomp},
		"fake": newFakeHost(),
	}
}

func BenchmarkSandboxSpec(b *testing.B) {
	for name, h := range benchHosts() {
		b.Run(name, func(b *testing.B) {
			cfg, opts := podConfig(), sandboxOpts(h)
			opts.RestrictOOMScoreAdj = true
			b.ReportAllocs()
			for b.Loop() {
				s, err := Sandbox(cfg, opts)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := json.Marshal(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// kubeletContainer is a container as a kubelet sends one for a typical
// Deployment: RuntimeDefault seccomp, a service account and a config
// volume, service links in the environment, requests and limits.
func kubeletContainer(volumes string) *runtimeapi.ContainerConfig {
	c := ctrConfig()
	for i := range 20 {
		c.Envs = append(c.Envs, &runtimeapi.KeyValue{Key: fmt.Sprintf("SVC_%d_SERVICE_HOST", i), Value: []byte("10.96.0.1")})
	}
	c.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/var/run/secrets/kubernetes.io/serviceaccount", HostPath: volumes, Readonly: true},
		{ContainerPath: "/etc/config", HostPath: volumes},
		{ContainerPath: "/dev/termination-log", HostPath: filepath.Join(volumes, "termination-log")},
	}
	c.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuShares: 102, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 128 << 20, OomScoreAdj: 1000}
	c.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	c.Labels = map[string]string{"io.kubernetes.container.name": "app"}
	c.Annotations = map[string]string{"io.kubernetes.container.hash": "abcdef", "io.kubernetes.container.restartCount": "0"}
	return c
}

func BenchmarkContainerSpec(b *testing.B) {
	img := &imagespec.ImageConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: []string{"sh"}}
	for name, h := range benchHosts() {
		b.Run(name, func(b *testing.B) {
			vol := "/data" // the fake node's shared mount
			if name == "node" {
				vol = b.TempDir()
				if err := os.WriteFile(filepath.Join(vol, "termination-log"), nil, 0o644); err != nil {
					b.Fatal(err)
				}
			}
			cfg := kubeletContainer(vol)
			if name == "fake" {
				cfg.Mounts = cfg.Mounts[:2]
			}
			pod, opts := podConfig(), ctrOpts(h)
			opts.RestrictOOMScoreAdj = true
			b.ReportAllocs()
			for b.Loop() {
				s, err := Container(cfg, pod, img, opts)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := json.Marshal(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
