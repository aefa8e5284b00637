package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-runtime/corral/cri/cgroup"
)

func TestCPUSamples(t *testing.T) {
	var c cpuSamples
	t0 := time.Now()
	if _, ok := c.rate("a", t0, 1e9); ok {
		t.Error("a rate from one reading")
	}
	if r, ok := c.rate("a", t0.Add(2*time.Second), 2e9); !ok || r != 5e8 {
		t.Errorf("rate %d, %v; want half a core", r, ok)
	}
	// A reading at the same instant measures nothing and keeps the older.
	if _, ok := c.rate("a", t0.Add(2*time.Second), 3e9); ok {
		t.Error("a rate over no time")
	}
	// A counter that went back (a new cgroup of the same ID) starts over.
	if _, ok := c.rate("a", t0.Add(3*time.Second), 1); ok {
		t.Error("a rate from a counter that went back")
	}
	if r, ok := c.rate("a", t0.Add(4*time.Second), 1+2e9); !ok || r != 2e9 {
		t.Errorf("rate %d, %v; want two cores", r, ok)
	}
	c.last["old"] = cpuSample{at: time.Now().Add(-2 * sampleTTL)}
	c.prune()
	if _, ok := c.last["old"]; ok {
		t.Error("an old reading survived prune")
	}
	if _, ok := c.last["a"]; !ok {
		t.Error("prune dropped a recent reading")
	}
}

func TestMemoryUsage(t *testing.T) {
	now := time.Now()
	if memoryUsage(now, nil) != nil {
		t.Error("usage without figures")
	}
	m := memoryUsage(now, &cgroup.Memory{Usage: 100, WorkingSet: 70, RSS: 50, PageFaults: 9, MajorPageFaults: 1})
	if m.GetAvailableBytes() != nil || m.GetWorkingSetBytes().GetValue() != 70 || m.GetRssBytes().GetValue() != 50 || m.GetPageFaults().GetValue() != 9 {
		t.Errorf("unlimited: %v", m)
	}
	m = memoryUsage(now, &cgroup.Memory{Usage: 100, WorkingSet: 70, Limit: 64})
	if m.GetAvailableBytes() == nil || m.GetAvailableBytes().GetValue() != 0 {
		t.Errorf("over the limit: %v", m)
	}
	m = memoryUsage(now, &cgroup.Memory{WorkingSet: 70, Limit: 100})
	if m.GetAvailableBytes().GetValue() != 30 {
		t.Errorf("under the limit: %v", m)
	}
}

func TestSearchable(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o711)
	sub := filepath.Join(dir, "a", "b")
	os.MkdirAll(sub, 0o711)
	if err := searchable("/"); err != nil {
		t.Errorf("/: %v", err)
	}
	os.Chmod(filepath.Join(dir, "a"), 0o700)
	if err := searchable(sub); err == nil || !strings.Contains(err.Error(), "chmod o+x "+filepath.Join(dir, "a")) {
		t.Errorf("a private parent: %v", err)
	}
}
