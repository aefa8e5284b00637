package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestShimUpgrade is acceptance 3: containerd-shim-corral-v2 is replaced
// on disk by a rebuilt copy (a new file renamed over the old, as a package
// upgrade does) while a pod runs. That pod stays on its shim process, which
// keeps serving; a new pod's shim runs the new file; and a restarted
// corrald reconnects to both.
func TestShimUpgrade(t *testing.T) {
	shimDir := shortTempDir(t)
	shimPath := filepath.Join(shimDir, corralShim)
	copyFile(t, filepath.Join(binDir, corralShim), shimPath)
	e := newPodEnvWithConfig(t, loopbackConflist, func(string) string {
		return fmt.Sprintf("[runtimes.upgradable]\nshim = %q\nruntime = \"/usr/sbin/runc\"\n", shimPath)
	})
	runOn := func(name string) (string, *runtimeapi.PodSandboxConfig, string) {
		pod := e.podConfig(name)
		resp, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "upgradable"})
		if err != nil {
			t.Fatalf("RunPodSandbox %s: %v", name, err)
		}
		e.watch.trackID(resp.PodSandboxId)
		main, _ := e.runContainer(t, resp.PodSandboxId, pod, e.containerConfig("main", "sleep", "3600"))
		return resp.PodSandboxId, pod, main
	}
	execWorks := func(what, id string) {
		t.Helper()
		resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"echo", "served"}, Timeout: 30})
		if err != nil || string(resp.Stdout) != "served\n" {
			t.Errorf("%s: ExecSync: %v, %v", what, resp, err)
		}
	}

	oldPod, oldCfg, oldMain := runOn("old")
	oldShim := e.listedShims(t)[oldPod]
	if oldShim.Binary != shimPath || oldShim.Replaced {
		t.Fatalf("before the upgrade the pod's shim runs %q (replaced %v), want %s", oldShim.Binary, oldShim.Replaced, shimPath)
	}
	oldStart := procStartTime(oldShim.PID)

	// A rebuilt shim, told apart by the version its Connect reports.
	const newVersion = "upgrade-test"
	staged := filepath.Join(shimDir, "."+corralShim+".new")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X github.com/corral-runtime/corral/shim.Version="+newVersion, "-o", staged, "../cmd/containerd-shim-corral-v2")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("rebuild the shim: %v\n%s", err, out)
	}
	if err := os.Rename(staged, shimPath); err != nil {
		t.Fatal(err)
	}

	// The running pod keeps its shim process, which still serves it.
	listed := e.listedShims(t)
	if s := listed[oldPod]; s.PID != oldShim.PID || procStartTime(s.PID) != oldStart {
		t.Errorf("the running pod's shim is pid %d now, was %d", s.PID, oldShim.PID)
	}
	if s := listed[oldPod]; !s.Replaced || s.Version == newVersion {
		t.Errorf("the running pod's shim: binary %q replaced %v version %q; want the old process on the replaced file", s.Binary, s.Replaced, s.Version)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", oldShim.PID)); exe != shimPath+" (deleted)" {
		t.Errorf("/proc/%d/exe of the old shim is %q, want the replaced file", oldShim.PID, exe)
	}
	execWorks("old pod after the upgrade", oldMain)
	second, _ := e.runContainer(t, oldPod, oldCfg, e.containerConfig("second", "sleep", "3600"))
	if p := parentOf(e.containerPid(t, second)); p != oldShim.PID {
		t.Errorf("a new container of the old pod is a child of %d, want the old shim %d", p, oldShim.PID)
	}

	// A new pod's shim runs the new file.
	newPod, _, newMain := runOn("new")
	newShim := e.listedShims(t)[newPod]
	if newShim.PID == oldShim.PID || newShim.PID <= 0 {
		t.Fatalf("the new pod's shim is pid %d (the old pod's is %d)", newShim.PID, oldShim.PID)
	}
	if newShim.Replaced || newShim.Version != newVersion {
		t.Errorf("the new pod's shim: binary %q replaced %v version %q; want the new file, version %s", newShim.Binary, newShim.Replaced, newShim.Version, newVersion)
	}
	if !sameFile(fmt.Sprintf("/proc/%d/exe", newShim.PID), shimPath) {
		t.Errorf("/proc/%d/exe of the new pod's shim is not the new %s", newShim.PID, shimPath)
	}

	// A restarted corrald finds both, each on its own binary.
	if err := e.d.stop(t, 20*time.Second); err != nil {
		t.Fatalf("corrald stopped with %v", err)
	}
	e.restart(t)
	execWorks("old pod after the restart", oldMain)
	execWorks("old pod's second container after the restart", second)
	execWorks("new pod after the restart", newMain)
	listed = e.listedShims(t)
	if listed[oldPod].PID != oldShim.PID || listed[newPod].PID != newShim.PID {
		t.Errorf("after the restart the shims are %d and %d, were %d and %d", listed[oldPod].PID, listed[newPod].PID, oldShim.PID, newShim.PID)
	}
	table := e.mustCorralctl(t, "shims")
	if !strings.Contains(table, "(replaced)") {
		t.Errorf("corralctl shims does not mark the old shim's binary as replaced:\n%s", table)
	}
	t.Logf("corralctl shims after the upgrade and a restart:\n%s", table)

	e.removePod(t, oldPod)
	e.removePod(t, newPod)
	e.checkNoLeaks(t)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
