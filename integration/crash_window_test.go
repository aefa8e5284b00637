package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-runtime/corral/metadata"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCorraldAdoptsShimOfCutShortPod: corrald killed in RunPodSandbox after
// it started the pod's shim but before it recorded the shim leaves a
// NotReady record with no shim address, and a shim (with the pause
// container) running. The chaos suite found that stopping and removing
// such a pod left the shim running forever. The record is made the way
// the crash leaves it; the restarted corrald must find the shim by the
// address file in the pod's bundle, and removing the pod must end it.
func TestCorraldAdoptsShimOfCutShortPod(t *testing.T) {
	e := newPodEnv(t)
	cfg := e.podConfig("cut-short")
	podID := e.runPod(t, cfg)
	shims := e.waitShims(t, 1)

	e.killDaemon(t)
	st, err := metadata.Open(filepath.Join(e.root, "meta.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateSandbox(podID, func(sb *metadata.Sandbox) error {
		sb.State, sb.ShimAddress, sb.ShimPID, sb.PID = metadata.SandboxNotReady, "", 0, 0
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	e.restart(t)

	if got := e.shims(); len(got) != 1 || got[0].pid != shims[0].pid {
		t.Fatalf("shims after the restart: %s; want the pod's, pid %d", describeShims(got), shims[0].pid)
	}
	if st, _ := e.podStatus(t, podID); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("the cut-short pod is %s, want NOTREADY", st.State)
	}
	e.removePod(t, podID)
	e.waitShims(t, 0)
	e.checkNoLeaks(t)
}

// TestHostPortTeardownWithoutCache: corrald killed in the middle of a pod's
// CNI ADD leaves the port mapping's iptables rules but no libcni cache to
// tell DEL about them, and portmap's DEL removes nothing it is not told
// of. The chaos suite found the rules outliving the pod. The cache is
// removed the way the crash leaves it; removing the pod must still remove
// the rules, the address and the veth.
func TestHostPortTeardownWithoutCache(t *testing.T) {
	n := newTestNetwork(t)
	e := newPodEnvWithCNI(t, n.conflist())
	cfg := e.podConfig("no-cache")
	cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: int32(freePort(t)), HostIp: "127.0.0.1"}}
	podID := e.runPod(t, cfg)
	if left := n.leftovers([]string{podID}); len(left) == 0 {
		t.Fatal("the pod's network left no trace on the host to remove; the test proves nothing")
	}

	e.killDaemon(t)
	cache, _ := filepath.Glob(filepath.Join(e.root, "cni", "results", "*"+podID+"*"))
	if len(cache) == 0 {
		t.Fatalf("no libcni cache for the pod under %s", filepath.Join(e.root, "cni"))
	}
	for _, f := range cache {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	e.restart(t)
	e.removePod(t, podID)
	if left := n.leftovers([]string{podID}); len(left) > 0 {
		t.Errorf("left after removing the pod: %v", left)
	}
	e.checkNoLeaks(t)
}

// TestCorraldSettlesDeadShim: a pod's shim killed with SIGKILL leaves its
// containers' processes running, reparented, with no one to report their
// exit. The chaos suite found such a container reported EXITED while its
// process ran on. Whether corrald is running when the shim dies or learns
// it at its next start, the containers must be reported exited, their
// processes killed, the pod not ready, and its removal must leave nothing.
func TestCorraldSettlesDeadShim(t *testing.T) {
	for _, whileDown := range []bool{false, true} {
		name := "while corrald runs"
		if whileDown {
			name = "while corrald is down"
		}
		t.Run(name, func(t *testing.T) {
			e := newPodEnv(t)
			cfg := e.podConfig("dead-shim")
			podID := e.runPod(t, cfg)
			ctr, pid := e.runContainer(t, podID, cfg, e.containerConfig("app", "sleep", "100000"))
			shim := e.waitShims(t, 1)[0]
			if whileDown {
				e.killDaemon(t)
			}
			killProcess(shim.pid)
			waitGone(t, shim.pid, 10*time.Second)
			if whileDown {
				e.restart(t)
			}
			waitUntil(t, 30*time.Second, "the container is exited and its process gone", func() (bool, string) {
				st, _ := e.containerStatus(t, ctr)
				return st.State == runtimeapi.ContainerState_CONTAINER_EXITED && !processAlive(pid),
					fmt.Sprintf("state %s, process %d alive %v", st.State, pid, processAlive(pid))
			})
			if st, _ := e.containerStatus(t, ctr); st.ExitCode != 255 || st.Reason != "Unknown" {
				t.Errorf("the dead shim's container exited with %d, %q; want 255, \"Unknown\" (its real exit went with the shim)", st.ExitCode, st.Reason)
			}
			if st, _ := e.podStatus(t, podID); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
				t.Errorf("the pod of the dead shim is %s, want NOTREADY", st.State)
			}
			// Settled means cleaned up on the host, before the kubelet
			// removes anything: no runc state, no rootfs mount, no
			// container cgroup (the pod's own goes with the pod, as
			// after a stop).
			waitUntil(t, 15*time.Second, "the dead shim's runc state, mounts and container cgroups are gone", func() (bool, string) {
				var left []string
				for _, root := range e.watch.runcRootsNow() {
					for _, id := range runcContainers(root) {
						if id == ctr || id == podID {
							left = append(left, "runc state "+filepath.Join(root, id))
						}
					}
				}
				for _, m := range mountsUnder(filepath.Join(e.state, "containers")) {
					left = append(left, "mount "+m)
				}
				left = append(left, cgroupsNamed(ctr)...)
				return len(left) == 0, fmt.Sprint(left)
			})
			e.removePod(t, podID)
			e.checkNoLeaks(t)
		})
	}
}

// TestCreateCutShort: a shim killed while its runtime creates the
// pause container or starts a container leaves the runtime process working on
// alone; the chaos suite found it making the container after corrald had
// rolled the call back, and its runc state, process, cgroups, network
// namespace and mounts outliving every record. The runtime here is runc
// behind a wrapper that, while ARM exists, holds create and run for two
// seconds after runc made the container: the shim is killed in that
// window, with the container made and the shim not told. Each failed call must leave
// nothing with its ID once it returns, and the pod around the container
// must still go cleanly.
func TestCreateCutShort(t *testing.T) {
	var dir string
	e := newPodEnvWithConfig(t, loopbackConflist, func(d string) string {
		dir = d
		wrapper := fmt.Sprintf(`#!/bin/sh
# runc; while %[1]s/ARM exists, create and run are held up for two seconds
# after runc made the container, before the shim hears of it.
for last; do :; done
for a in "$@"; do
	case "$a" in
	create|run)
		if [ -e %[1]s/ARM ]; then
			runc "$@"
			rc=$?
			echo "$$ $last" > %[1]s/STARTED.tmp && mv %[1]s/STARTED.tmp %[1]s/STARTED
			sleep 2
			exit $rc
		fi
		break ;;
	esac
done
exec runc "$@"
`, d)
		os.WriteFile(filepath.Join(d, "slow-runc"), []byte(wrapper), 0o755)
		return fmt.Sprintf("[runtimes.slow-runc]\nshim = \"containerd-shim-corral-v2\"\nruntime = %q\n", filepath.Join(d, "slow-runc"))
	})
	arm := func(on bool) {
		os.Remove(filepath.Join(dir, "STARTED"))
		if on {
			os.WriteFile(filepath.Join(dir, "ARM"), nil, 0o644)
		} else {
			os.Remove(filepath.Join(dir, "ARM"))
		}
	}
	// inWindow waits for the wrapper to hold a create up, and returns the
	// wrapper's pid and the ID being created.
	inWindow := func(t *testing.T) (int, string) {
		var pid int
		var id string
		waitUntil(t, 30*time.Second, "the runtime wrapper holding a create", func() (bool, string) {
			b, err := os.ReadFile(filepath.Join(dir, "STARTED"))
			if err != nil {
				return false, err.Error()
			}
			_, err = fmt.Sscan(string(b), &pid, &id)
			return err == nil, string(b)
		})
		e.watch.trackID(id)
		return pid, id
	}
	// killShimInWindow kills the shim whose runtime the wrapper holds up,
	// and returns the ID being created.
	killShimInWindow := func(t *testing.T) string {
		pid, id := inWindow(t)
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatalf("the wrapper %d: %v", pid, err)
		}
		s := string(stat)
		var ppid int
		fmt.Sscan(strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[1], &ppid)
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ppid)); !strings.Contains(string(cmd), "containerd-shim-corral-v2") {
			t.Fatalf("the wrapper's parent %d is not a shim: %q", ppid, cmd)
		}
		syscall.Kill(ppid, syscall.SIGKILL)
		return id
	}
	// nothingNamed checks, once the call has returned, that nothing on
	// the host carries id: no runc state, process, mount, cgroup or
	// file under corrald's dirs.
	nothingNamed := func(t *testing.T, id string) {
		t.Helper()
		expectWithin(t, 10*time.Second, "nothing left by "+id[:12], func() (bool, string) {
			var left []string
			for _, root := range e.watch.runcRootsNow() {
				if slices.Contains(runcContainers(root), id) {
					left = append(left, "runc state in "+root)
				}
			}
			for _, m := range mountsUnder(e.dir) {
				if strings.Contains(m, id) {
					left = append(left, "mount "+m)
				}
			}
			if cg := cgroupsNamed(id); len(cg) > 0 {
				left = append(left, fmt.Sprintf("cgroups %v", cg))
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				if b, _ := os.ReadFile(p); strings.Contains(string(b), id) {
					left = append(left, fmt.Sprintf("process %s: %q", filepath.Base(filepath.Dir(p)), b))
				}
			}
			for _, d := range []string{"sandboxes", "containers", "netns"} {
				for _, base := range []string{e.state, e.root} {
					if _, err := os.Stat(filepath.Join(base, d, id)); err == nil {
						left = append(left, filepath.Join(base, d, id))
					}
				}
			}
			return len(left) == 0, strings.Join(left, "; ")
		})
	}

	t.Run("pause container", func(t *testing.T) {
		arm(true)
		defer arm(false)
		errc := make(chan error, 1)
		go func() {
			_, err := e.rt.RunPodSandbox(ctxTimeout(t, time.Minute), &runtimeapi.RunPodSandboxRequest{Config: e.podConfig("cut-pause"), RuntimeHandler: "slow-runc"})
			errc <- err
		}()
		id := killShimInWindow(t)
		if err := <-errc; err == nil {
			t.Fatal("RunPodSandbox succeeded with its shim killed")
		} else {
			t.Logf("RunPodSandbox: %v", err)
		}
		if pods := e.listPods(t, nil); len(pods) != 0 {
			t.Errorf("pods listed: %v", pods)
		}
		nothingNamed(t, id)
	})

	// corral makes a container's runtime state at StartContainer (one
	// runc run), so that is where a shim killed under the runtime leaves
	// it working alone.
	t.Run("container, at start", func(t *testing.T) {
		pod := e.podConfig("cut-container")
		resp, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "slow-runc"})
		if err != nil {
			t.Fatal(err)
		}
		podID := resp.PodSandboxId
		e.watch.trackID(podID)
		c, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: e.containerConfig("cut", "sleep", "3600"), SandboxConfig: pod})
		if err != nil {
			t.Fatal(err)
		}
		arm(true)
		defer arm(false)
		errc := make(chan error, 1)
		go func() {
			_, err := e.rt.StartContainer(ctxTimeout(t, time.Minute), &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
			errc <- err
		}()
		id := killShimInWindow(t)
		if id != c.ContainerId {
			t.Fatalf("the wrapper holds %s, not the container %s", id, c.ContainerId)
		}
		if err := <-errc; err == nil {
			t.Fatal("StartContainer succeeded with its shim killed")
		} else {
			t.Logf("StartContainer: %v", err)
		}
		st, _ := e.containerStatus(t, id)
		if st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			t.Errorf("after the failed start: %s; want EXITED", st.State)
		}
		e.removePod(t, podID)
		nothingNamed(t, id)
	})

	// corrald killed while the shim starts a container: the shim
	// finishes the start, and the restarted corrald, finding the
	// container running, records it as running rather than created or
	// exited.
	t.Run("corrald killed under StartContainer", func(t *testing.T) {
		pod := e.podConfig("cut-daemon")
		resp, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "slow-runc"})
		if err != nil {
			t.Fatal(err)
		}
		podID := resp.PodSandboxId
		e.watch.trackID(podID)
		c, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: e.containerConfig("cut", "sleep", "3600"), SandboxConfig: pod})
		if err != nil {
			t.Fatal(err)
		}
		arm(true)
		defer arm(false)
		errc := make(chan error, 1)
		go func() {
			_, err := e.rt.StartContainer(ctxTimeout(t, time.Minute), &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
			errc <- err
		}()
		_, id := inWindow(t)
		e.killDaemon(t)
		<-errc
		e.restart(t)
		st, _ := e.containerStatus(t, id)
		runcHas := false
		for _, root := range e.watch.runcRootsNow() {
			runcHas = runcHas || slices.Contains(runcContainers(root), id)
		}
		t.Logf("after the restart: %s, runc state: %v", st.State, runcHas)
		if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || !runcHas {
			t.Errorf("after the restart: %s (%s), runc state %v; want RUNNING, as the shim finished the start", st.State, st.Reason, runcHas)
		}
		e.removePod(t, podID)
		nothingNamed(t, id)
	})
	e.checkNoLeaks(t)
}
