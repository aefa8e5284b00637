package integration

import (
	"fmt"
	"os"
	"path/filepath"
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
