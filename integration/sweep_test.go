package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-runtime/corral/cri/idmap"
	"github.com/corral-runtime/corral/cri/netns"
)

// TestCorraldSweepsCrashLeftovers plants what a crash in the middle of
// RunPodSandbox or RemoveContainer leaves (pinned network and user
// namespaces, pod and container dirs, a mounted rootfs, the ID-mapped image
// layer and volume of a pod with a user namespace) with no record naming
// them; a starting corrald removes them all, and never through a mount: the
// layer's own files stay.
func TestCorraldSweepsCrashLeftovers(t *testing.T) {
	dir := shortTempDir(t)
	root, state := filepath.Join(dir, "root"), filepath.Join(dir, "state")
	orphan := strings.Repeat("ab", 32)
	ns, err := netns.Create(filepath.Join(state, "netns"), orphan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(ns); unmountUnder(dir) })
	orphan2 := strings.Repeat("cd", 32)
	ns2, userns2, err := netns.CreateOwned(filepath.Join(state, "netns"), filepath.Join(state, "userns"), orphan2,
		netns.IDMap{Host: 200000, Size: 65536}, netns.IDMap{Host: 200000, Size: 65536})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(ns2); netns.Remove(userns2) })
	planted := []string{
		filepath.Join(state, "sandboxes", orphan),
		filepath.Join(root, "sandboxes", orphan),
		filepath.Join(state, "containers", orphan, "rootfs"),
		filepath.Join(root, "containers", orphan, "upper"),
	}
	for _, p := range planted {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rootfs := filepath.Join(state, "containers", orphan, "rootfs")
	if err := mountTmpfs(rootfs); err != nil {
		t.Fatal(err)
	}
	// An ID-mapped layer and volume, as CreateContainer makes them for a
	// pod with a user namespace; their sources are the image's and the
	// kubelet's and must lose nothing.
	layer, volume := filepath.Join(dir, "layer"), filepath.Join(dir, "volume")
	for _, d := range []string{layer, volume} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "keep"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	uf, err := os.Open(userns2)
	if err != nil {
		t.Fatal(err)
	}
	mapped := []string{filepath.Join(state, "containers", orphan, "l", "0"), filepath.Join(state, "containers", orphan, "v", "0")}
	for i, src := range []string{layer, volume} {
		if err := idmap.Mount(src, mapped[i], uf); err != nil {
			t.Fatal(err)
		}
	}
	uf.Close()
	// Something that is not corral's (a name that is no ID) stays.
	keep := filepath.Join(state, "sandboxes", "not-an-id")
	os.MkdirAll(keep, 0o755)

	d := startCorrald(t, state, "--root", root, "--state", state)
	defer d.stop(t, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := []string{}
		for _, p := range []string{ns, ns2, userns2} {
			if _, err := os.Stat(p); err == nil {
				left = append(left, p)
			}
		}
		for _, p := range planted {
			if _, err := os.Stat(p); err == nil {
				left = append(left, p)
			}
		}
		for _, m := range append([]string{rootfs}, mapped...) {
			if isMountPoint(m) {
				left = append(left, "mount "+m)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left after corrald started: %v\n%s", left, d.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a dir that is not corral's was removed: %v", err)
	}
	for _, d := range []string{layer, volume} {
		if _, err := os.Stat(filepath.Join(d, "keep")); err != nil {
			t.Errorf("the sweep removed through an ID-mapped mount: %v", err)
		}
	}
}

func mountTmpfs(dir string) error {
	return syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m")
}
