package metadata

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// The benchmarks write records as the CRI calls do, to a file in the temp
// dir (on a disk: every commit is an fsync), one client at a time and ten
// at once (a kubelet starting many pods):
//
//	go test -run '^$' -bench . -benchmem ./metadata/

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(filepath.Join(b.TempDir(), "meta.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// podWrites is what one pod costs the store from RunPodSandbox to
// RemovePodSandbox with one container: the records, their state changes,
// their removal.
func podWrites(s *Store, n int64) error {
	id := fmt.Sprintf("sb%d", n)
	sb := testSandbox(id, id)
	sb.State = SandboxNotReady
	if err := s.CreateSandbox(sb); err != nil {
		return err
	}
	if _, err := s.UpdateSandbox(id, func(sb *Sandbox) error { sb.State, sb.PID = SandboxReady, 42; return nil }); err != nil {
		return err
	}
	cid := "c" + id
	if err := s.CreateContainer(testContainer(cid, id, "app")); err != nil {
		return err
	}
	if _, err := s.UpdateContainer(cid, func(c *Container) error { c.State, c.PID = ContainerRunning, 43; return nil }); err != nil {
		return err
	}
	if _, err := s.UpdateContainer(cid, func(c *Container) error { c.State, c.ExitCode = ContainerExited, 137; return nil }); err != nil {
		return err
	}
	if _, err := s.UpdateSandbox(id, func(sb *Sandbox) error { sb.State = SandboxNotReady; return nil }); err != nil {
		return err
	}
	if err := s.DeleteContainer(cid); err != nil {
		return err
	}
	return s.DeleteSandbox(id)
}

// BenchmarkPodWrites reports the time of one pod's eight writes.
func BenchmarkPodWrites(b *testing.B) {
	s := benchStore(b)
	var n int64
	b.ReportAllocs()
	for b.Loop() {
		n++
		if err := podWrites(s, n); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPodWritesParallel is the same from ten clients at once: what
// batching commits can win.
func BenchmarkPodWritesParallel(b *testing.B) {
	s := benchStore(b)
	var n atomic.Int64
	b.SetParallelism(5) // × GOMAXPROCS (2 here): ten clients
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := podWrites(s, n.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGetSandbox(b *testing.B) {
	s := benchStore(b)
	for i := range 100 {
		if err := s.CreateSandbox(testSandbox(fmt.Sprintf("sb%d", i), fmt.Sprintf("pod%d", i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.GetSandbox("sb50"); err != nil {
			b.Fatal(err)
		}
	}
}
