package network

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The benchmarks run corral's side of CNI: finding the config (a readdir
// and a stat per call, to notice changes), ADD and DEL with libcni writing
// and reading its result cache, with stand-in plugins (a shell script that
// prints a result) so that no root, namespace or bridge is needed and the
// figures are corral's and libcni's, plus two plugin executions each way:
//
//	go test -run '^$' -bench . -benchmem ./cri/network/

// fakePlugin answers ADD with one address on eth0 in the pod's namespace.
const fakePlugin = `#!/bin/sh
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"address":"10.1.2.3/24","interface":0}]}' "$CNI_IFNAME" "$CNI_NETNS" ;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
`

func benchManager(b *testing.B) *Manager {
	b.Helper()
	dir := b.TempDir()
	bin, conf := filepath.Join(dir, "bin"), filepath.Join(dir, "net.d")
	for _, d := range []string{bin, conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range []string{"fake"} {
		if err := os.WriteFile(filepath.Join(bin, p), []byte(fakePlugin), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	list := `{"cniVersion":"1.0.0","name":"bench","plugins":[{"type":"fake"}]}`
	if err := os.WriteFile(filepath.Join(conf, "10-bench.conflist"), []byte(list), 0o644); err != nil {
		b.Fatal(err)
	}
	return New(conf, []string{bin}, filepath.Join(dir, "cache"), quietLog())
}

func benchPod(n int) Pod {
	return Pod{
		ID: fmt.Sprintf("%064x", n), Name: "web", Namespace: "default", UID: "uid", NetNSPath: "/run/corral/netns/bench",
		PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}},
	}
}

// BenchmarkConfig is the config lookup every Setup and Status makes.
func BenchmarkConfig(b *testing.B) {
	m := benchManager(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.config(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetupTeardown is one pod's ADD and DEL.
func BenchmarkSetupTeardown(b *testing.B) {
	m := benchManager(b)
	ctx := context.Background()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		n++
		pod := benchPod(n)
		if _, err := m.Setup(ctx, pod); err != nil {
			b.Fatal(err)
		}
		if err := m.Teardown(ctx, pod); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCachedAttachments reads back what an ADD cached, as Teardown
// does, with 100 pods in the cache.
func BenchmarkCachedAttachments(b *testing.B) {
	m := benchManager(b)
	ctx := context.Background()
	for n := range 100 {
		if _, err := m.Setup(ctx, benchPod(n)); err != nil {
			b.Fatal(err)
		}
	}
	id := benchPod(50).ID
	b.ReportAllocs()
	for b.Loop() {
		atts, err := m.cni.GetCachedAttachments(id)
		if err != nil || len(atts) != 1 {
			b.Fatalf("%d attachments, %v", len(atts), err)
		}
	}
}
