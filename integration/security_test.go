package integration

import (
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-runtime/corral/cri/spec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// execIn runs cmd in a running container and returns its output (stdout
// and stderr together) and exit code.
func (e *podEnv) execIn(t *testing.T, id string, cmd ...string) (string, int32) {
	t.Helper()
	resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 20})
	if err != nil {
		t.Fatalf("exec %v in %s: %v", cmd, id, err)
	}
	return string(resp.Stdout) + string(resp.Stderr), resp.ExitCode
}

// TestOOMKilledCrictl is issue 8's acceptance 1: a container with a
// 32 MiB memory limit that allocates 64 MiB is ended by the kernel's OOM
// killer, and its status, as crictl inspect prints it, says OOMKilled.
func TestOOMKilledCrictl(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("oom")
	podID := e.runPod(t, pod)
	cfg := e.containerConfig("hog", "sh", "-c", `x=$(head -c 67108864 /dev/zero | tr '\0' a); echo survived`)
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}
	cid := e.createContainer(t, podID, pod, cfg)
	e.startContainer(t, cid)
	st := e.waitContainer(t, cid, runtimeapi.ContainerState_CONTAINER_EXITED, 60*time.Second)
	if st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("exited with %d, reason %q; want 137, OOMKilled", st.ExitCode, st.Reason)
	}
	var inspected runtimeapi.ContainerStatus
	e.crictlInspect(t, &inspected, "inspect", "-o", "json", cid)
	if inspected.Reason != "OOMKilled" || inspected.ExitCode != 137 || inspected.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("crictl inspect: state %v, exit %d, reason %q", inspected.State, inspected.ExitCode, inspected.Reason)
	}
	if out := e.mustCrictl(t, "ps", "-a", "--id", cid); !strings.Contains(out, "Exited") {
		t.Errorf("crictl ps -a:\n%s", out)
	}
	e.removePod(t, podID)
}

// TestSecurityContextAcceptance is issue 8's acceptance 4, each part
// against a contrast that shows the setting is what made the difference.
func TestSecurityContextAcceptance(t *testing.T) {
	e := newPodEnv(t)
	pod := e.podConfig("secure")
	pod.Linux.SecurityContext.Privileged = true // the privileged container below needs a privileged pod
	pod.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "100", "kernel.shm_rmid_forced": "1"}
	podID := e.runPod(t, pod)

	run := func(name string, change func(sc *runtimeapi.LinuxContainerSecurityContext)) string {
		t.Helper()
		cfg := e.containerConfig(name, "sleep", "1000")
		change(cfg.Linux.SecurityContext)
		id, _ := e.runContainer(t, podID, pod, cfg)
		return id
	}
	plain := run("plain", func(*runtimeapi.LinuxContainerSecurityContext) {})
	keyctl := buildKeyctl(t, e.dir)
	withKeyctl := func(name string, p runtimeapi.SecurityProfile_ProfileType) string {
		cfg := e.containerConfig(name, "sleep", "1000")
		cfg.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: p}
		cfg.Mounts = []*runtimeapi.Mount{{HostPath: keyctl, ContainerPath: "/keyctl", Readonly: true}}
		id, _ := e.runContainer(t, podID, pod, cfg)
		return id
	}
	keyctlDefault, keyctlUnconfined := withKeyctl("keyctl", runtimeapi.SecurityProfile_RuntimeDefault), withKeyctl("keyctlfree", runtimeapi.SecurityProfile_Unconfined)

	t.Run("run_as_user", func(t *testing.T) {
		id := run("uid1000", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
		})
		if out, _ := e.execIn(t, id, "id", "-u"); strings.TrimSpace(out) != "1000" {
			t.Errorf("id -u = %q, want 1000", out)
		}
		if out, _ := e.execIn(t, plain, "id", "-u"); strings.TrimSpace(out) != "0" {
			t.Errorf("id -u without run_as_user = %q, want 0", out)
		}
		st, _ := e.containerStatus(t, id)
		if u := st.GetUser().GetLinux(); u.GetUid() != 1000 {
			t.Errorf("ContainerStatus user %v, want uid 1000", u)
		}
	})

	t.Run("users and groups", func(t *testing.T) {
		ids := func(id string) string {
			out, code := e.execIn(t, id, "sh", "-c", `echo $(id -u) $(id -g) $(id -G | tr ' ' '\n' | sort -n | tr '\n' ' ')`)
			if code != 0 {
				t.Fatalf("id: exit %d, %s", code, out)
			}
			return strings.TrimSpace(out)
		}
		// run_as_username from the image's /etc/passwd; its groups in
		// /etc/group join the supplemental ones (policy Merge, the default).
		merged := run("byname", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUsername = "user"
			sc.SupplementalGroups = []int64{5000}
		})
		if got := ids(merged); got != "1000 1000 33 1000 5000" {
			t.Errorf("run_as_username user, Merge: uid gid groups = %q, want 1000 1000 33 1000 5000", got)
		}
		strict := run("strict", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUsername = "user"
			sc.SupplementalGroups = []int64{5000}
			sc.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Strict
		})
		if got := ids(strict); got != "1000 1000 1000 5000" {
			t.Errorf("policy Strict: uid gid groups = %q, want 1000 1000 1000 5000 (not the image's 33)", got)
		}
		st, _ := e.containerStatus(t, strict)
		if u := st.GetUser().GetLinux(); u.GetUid() != 1000 || u.GetGid() != 1000 || !slices.Equal(u.GetSupplementalGroups(), []int64{1000, 5000}) {
			t.Errorf("ContainerStatus user of the Strict container: %v", u)
		}
		group := run("group", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
			sc.RunAsGroup = &runtimeapi.Int64Value{Value: 2000}
		})
		if got := ids(group); !strings.HasPrefix(got, "1000 2000 ") {
			t.Errorf("run_as_user 1000, run_as_group 2000: %q", got)
		}
		cfg := e.containerConfig("nosuchuser", "sleep", "1000")
		cfg.Linux.SecurityContext.RunAsUsername = "nosuch"
		_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if code, msg := grpcCode(err); code.String() != "InvalidArgument" || !strings.Contains(msg, "nosuch") {
			t.Errorf("a user the image does not have: %v; want InvalidArgument naming it", err)
		}
	})

	t.Run("no_new_privs", func(t *testing.T) {
		id := run("nnp", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.NoNewPrivs = true })
		if out, _ := e.execIn(t, id, "grep", "^NoNewPrivs:", "/proc/1/status"); !strings.HasSuffix(strings.TrimSpace(out), "1") {
			t.Errorf("no_new_privs: %q", out)
		}
		if out, _ := e.execIn(t, plain, "grep", "^NoNewPrivs:", "/proc/1/status"); !strings.HasSuffix(strings.TrimSpace(out), "0") {
			t.Errorf("without no_new_privs: %q", out)
		}
	})

	t.Run("AppArmor and SELinux", func(t *testing.T) {
		// Neither is applied: Status says so, a Localhost AppArmor profile
		// is refused rather than silently ignored, RuntimeDefault and
		// SELinux options are accepted as on any node without them.
		st, err := e.rt.Status(e.ctx(), &runtimeapi.StatusRequest{Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		if sec := st.GetInfo()["security"]; !strings.Contains(sec, `"apparmor":"unsupported`) || !strings.Contains(sec, `"selinux":"unsupported`) {
			t.Errorf("Status info security = %s", sec)
		}
		run("lsmdefault", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
			sc.SelinuxOptions = &runtimeapi.SELinuxOption{Type: "spc_t"}
		})
		cfg := e.containerConfig("aaprofile", "sleep", "1000")
		cfg.Linux.SecurityContext.Apparmor = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-deny-write"}
		_, err = e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if code, msg := grpcCode(err); code.String() != "Unimplemented" || !strings.Contains(msg, "k8s-deny-write") || !strings.Contains(msg, "AppArmor") {
			t.Errorf("a Localhost AppArmor profile: %v; want Unimplemented naming it", err)
		}
	})

	t.Run("drop NET_RAW", func(t *testing.T) {
		id := run("noraw", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Capabilities = &runtimeapi.Capability{DropCapabilities: []string{"NET_RAW"}}
		})
		if out, code := e.execIn(t, plain, "ping", "-c", "1", "-W", "2", "127.0.0.1"); code != 0 {
			t.Fatalf("ping with the default capabilities failed (%d): %s", code, out)
		}
		out, code := e.execIn(t, id, "ping", "-c", "1", "-W", "2", "127.0.0.1")
		if code == 0 || !strings.Contains(strings.ToLower(out), "permission denied") && !strings.Contains(strings.ToLower(out), "not permitted") {
			t.Errorf("ping without CAP_NET_RAW: exit %d, %q; want a permission error", code, out)
		}
		if caps := capEff(t, e, id); caps&(1<<13) != 0 {
			t.Errorf("CapEff %x still has CAP_NET_RAW", caps)
		}
	})

	t.Run("readonly rootfs", func(t *testing.T) {
		id := run("ro", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.ReadonlyRootfs = true })
		out, code := e.execIn(t, id, "touch", "/written")
		if code == 0 || !strings.Contains(out, "Read-only file system") {
			t.Errorf("touch on a read-only root: exit %d, %q", code, out)
		}
		if _, code := e.execIn(t, plain, "touch", "/written"); code != 0 {
			t.Error("touch on a writable root failed")
		}
	})

	t.Run("RuntimeDefault seccomp", func(t *testing.T) {
		id := run("seccomp", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		})
		unconfined := run("unconfined", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
		})
		// unshare(2) of a user namespace needs no capability, so only the
		// profile stands in its way.
		if out, code := e.execIn(t, unconfined, "busybox", "unshare", "-U", "true"); code != 0 {
			t.Fatalf("unshare -U unconfined: exit %d, %s", code, out)
		}
		out, code := e.execIn(t, id, "busybox", "unshare", "-U", "true")
		if code == 0 || !strings.Contains(out, "not permitted") {
			t.Errorf("unshare -U under RuntimeDefault: exit %d, %q; want EPERM", code, out)
		}
		if out, _ := e.execIn(t, id, "grep", "^Seccomp:", "/proc/self/status"); !strings.Contains(out, "2") {
			t.Errorf("no seccomp filter: %s", out)
		}
		// keyctl(2): the kernel's keyrings are not namespaced, so the
		// default profile refuses the whole family to every container.
		if out, _ := e.execIn(t, keyctlUnconfined, "/keyctl"); strings.TrimSpace(out) != "ok" {
			t.Fatalf("keyctl unconfined: %q", out)
		}
		if out, _ := e.execIn(t, keyctlDefault, "/keyctl"); !strings.Contains(out, "Operation not permitted") {
			t.Errorf("keyctl under RuntimeDefault: %q; want EPERM", out)
		}
	})

	t.Run("Localhost seccomp", func(t *testing.T) {
		// A profile of the node's own: everything but mkdir.
		profile := filepath.Join(e.dir, "no-mkdir.json")
		if err := os.WriteFile(profile, []byte(`{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
			{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		id := run("localhost", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: profile}
		})
		if out, code := e.execIn(t, id, "mkdir", "/tmp/d"); code == 0 || !strings.Contains(out, "not permitted") {
			t.Errorf("mkdir under a profile refusing it: exit %d, %q", code, out)
		}
		if out, code := e.execIn(t, id, "touch", "/tmp/f"); code != 0 {
			t.Errorf("touch under a profile refusing only mkdir: exit %d, %q", code, out)
		}
		if _, code := e.execIn(t, plain, "mkdir", "/tmp/d"); code != 0 {
			t.Error("mkdir without the profile failed")
		}
		cfg := e.containerConfig("noprofile", "sleep", "1000")
		missing := filepath.Join(e.dir, "missing.json")
		cfg.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: missing}
		_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if code, msg := grpcCode(err); code.String() != "InvalidArgument" || !strings.Contains(msg, missing) {
			t.Errorf("a missing Localhost profile: %v; want InvalidArgument naming it", err)
		}
	})

	t.Run("privileged and ALL get corrald's capabilities", func(t *testing.T) {
		// Not every capability the kernel knows: runc cannot grant one its
		// caller lacks, and this node's root has no CAP_SYS_RESOURCE.
		own := procCapEff(t, e.d.cmd.Process.Pid)
		priv := run("privcaps", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.Privileged = true })
		all := run("allcaps", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"ALL"}}
		})
		for name, id := range map[string]string{"privileged": priv, "add ALL": all} {
			if got := capEff(t, e, id); got != own {
				t.Errorf("%s: CapEff %x, corrald holds %x", name, got, own)
			}
		}
		if got := capEff(t, e, plain); got&^own != 0 || got == own {
			t.Errorf("default capabilities %x: want a strict subset of corrald's %x", got, own)
		}
		if own&(1<<24) == 0 {
			t.Log("corrald lacks CAP_SYS_RESOURCE on this node; the containers do too")
		}
	})

	t.Run("procMount Unmasked", func(t *testing.T) {
		// The kubelet sends the default lists for procMount Default and
		// empty ones for Unmasked; corral applies what it is sent.
		masked := run("procdefault", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.MaskedPaths, sc.ReadonlyPaths = spec.DefaultMaskedPaths(), spec.DefaultReadonlyPaths()
		})
		unmasked := run("procunmasked", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.MaskedPaths, sc.ReadonlyPaths = []string{}, []string{}
		})
		const write = "echo 1 > /proc/sys/kernel/shm_rmid_forced"
		if out, _ := e.execIn(t, masked, "sh", "-c", "wc -c < /proc/interrupts"); strings.TrimSpace(out) != "0" {
			t.Errorf("procMount Default: /proc/interrupts has %q bytes", out)
		}
		if _, code := e.execIn(t, masked, "sh", "-c", write); code == 0 {
			t.Error("procMount Default: wrote to /proc/sys")
		}
		if out, _ := e.execIn(t, unmasked, "sh", "-c", "wc -c < /proc/interrupts"); strings.TrimSpace(out) == "0" {
			t.Error("procMount Unmasked: /proc/interrupts is still masked")
		}
		if out, code := e.execIn(t, unmasked, "sh", "-c", write); code != 0 {
			t.Errorf("procMount Unmasked: writing an IPC sysctl of the pod's own: exit %d, %q", code, out)
		}
		if out, _ := e.execIn(t, unmasked, "grep", "-c", " /proc/", "/proc/self/mounts"); strings.TrimSpace(out) != "0" {
			t.Errorf("procMount Unmasked: %s mounts over /proc", strings.TrimSpace(out))
		}
	})

	t.Run("privileged", func(t *testing.T) {
		id := run("priv", func(sc *runtimeapi.LinuxContainerSecurityContext) { sc.Privileged = true })
		dev := hostBlockDevice(t)
		if out, code := e.execIn(t, id, "ls", dev); code != 0 {
			t.Errorf("privileged container does not see the node's %s: %s", dev, out)
		}
		if _, code := e.execIn(t, plain, "ls", dev); code == 0 {
			t.Errorf("an unprivileged container sees the node's %s", dev)
		}
	})

	t.Run("devices", func(t *testing.T) {
		// A device outside runc's default allow list (null, zero, tty...),
		// so the permissions are the CRI's alone.
		if _, err := os.Stat("/dev/loop-control"); err != nil {
			t.Skip("the node has no /dev/loop-control")
		}
		cfg := e.containerConfig("dev", "sleep", "1000")
		cfg.Devices = []*runtimeapi.Device{{HostPath: "/dev/loop-control", ContainerPath: "/dev/xloop", Permissions: "r"}}
		id, _ := e.runContainer(t, podID, pod, cfg)
		if out, code := e.execIn(t, id, "sh", "-c", ": < /dev/xloop"); code != 0 {
			t.Errorf("opening the CRI device for reading: %d %s", code, out)
		}
		// "r" only: the device cgroup refuses opening it for writing.
		if out, code := e.execIn(t, id, "sh", "-c", ": > /dev/xloop"); code == 0 || !strings.Contains(out, "not permitted") {
			t.Errorf("opening a read-only device for writing: exit %d, %q", code, out)
		}
		if _, code := e.execIn(t, plain, "ls", "/dev/xloop"); code == 0 {
			t.Error("a container without the device has it")
		}
	})

	t.Run("sysctls", func(t *testing.T) {
		if out, _ := e.execIn(t, plain, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); strings.TrimSpace(out) != "100" {
			t.Errorf("pod sysctl net.ipv4.ip_unprivileged_port_start = %q, want 100", out)
		}
		if out, _ := e.execIn(t, plain, "cat", "/proc/sys/kernel/shm_rmid_forced"); strings.TrimSpace(out) != "1" {
			t.Errorf("pod sysctl kernel.shm_rmid_forced = %q, want 1", out)
		}
		bad := e.podConfig("badsysctl")
		bad.Linux.Sysctls = map[string]string{"kernel.panic": "1"}
		_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: bad})
		if code, msg := grpcCode(err); code.String() != "InvalidArgument" || !strings.Contains(msg, "kernel.panic") || !strings.Contains(msg, "not a namespaced sysctl") {
			t.Errorf("a non-namespaced sysctl: %v, want InvalidArgument naming it", err)
		}
	})

	t.Run("masked paths", func(t *testing.T) {
		id := run("masked", func(sc *runtimeapi.LinuxContainerSecurityContext) {
			sc.MaskedPaths = []string{"/proc/interrupts"}
			sc.ReadonlyPaths = []string{"/proc/sys"}
		})
		if out, _ := e.execIn(t, id, "sh", "-c", "wc -c < /proc/interrupts"); strings.TrimSpace(out) != "0" {
			t.Errorf("masked /proc/interrupts has %q bytes", out)
		}
		if out, _ := e.execIn(t, plain, "sh", "-c", "wc -c < /proc/interrupts"); strings.TrimSpace(out) == "0" {
			t.Error("/proc/interrupts is empty where nothing masks it")
		}
		if _, code := e.execIn(t, id, "sh", "-c", "echo 1 > /proc/sys/kernel/shm_rmid_forced"); code == 0 {
			t.Error("wrote to a read-only /proc/sys")
		}
	})
	e.removePod(t, podID)
}

// capEff reads the effective capabilities of a container's first process.
func capEff(t *testing.T, e *podEnv, id string) uint64 {
	t.Helper()
	out, _ := e.execIn(t, id, "grep", "^CapEff:", "/proc/1/status")
	var v uint64
	fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "CapEff:")), "%x", &v)
	return v
}

// procCapEff reads the effective capabilities of a host process.
func procCapEff(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no CapEff in /proc/%d/status", pid)
	return 0
}

// buildKeyctl compiles a static program that asks keyctl(2) for its
// session keyring and prints "ok" or why not: busybox has no keyctl.
func buildKeyctl(t *testing.T, dir string) string {
	t.Helper()
	src, bin := filepath.Join(dir, "keyctl.c"), filepath.Join(dir, "keyctl")
	const prog = `#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
	/* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, creating it */
	if (syscall(SYS_keyctl, 0, -3, 1) < 0) { printf("%s\n", strerror(errno)); return 1; }
	printf("ok\n");
	return 0;
}
`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-static", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return bin
}

// hostBlockDevice is a block device node of the host's /dev, which only a
// privileged container gets.
func hostBlockDevice(t *testing.T) string {
	t.Helper()
	entries, err := os.ReadDir("/dev")
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if en.Type()&fs.ModeDevice != 0 && en.Type()&fs.ModeCharDevice == 0 {
			return filepath.Join("/dev", en.Name())
		}
	}
	t.Skip("the node has no block device in /dev")
	return ""
}

// TestPodShmSize: a pod's /dev/shm is 64 MiB, or the size its
// io.corral.shm-size annotation asks for, shared by its containers; a size
// that is not one is refused.
func TestPodShmSize(t *testing.T) {
	e := newPodEnv(t)
	shmKiB := func(pod *runtimeapi.PodSandboxConfig, podID, name string) string {
		id, _ := e.runContainer(t, podID, pod, e.containerConfig(name, "sleep", "1000"))
		out, _ := e.execIn(t, id, "sh", "-c", "df -k /dev/shm | tail -1")
		f := strings.Fields(out)
		if len(f) < 2 {
			t.Fatalf("df: %q", out)
		}
		return f[1]
	}
	def := e.podConfig("shm-default")
	defID := e.runPod(t, def)
	if got := shmKiB(def, defID, "a"); got != "65536" {
		t.Errorf("default /dev/shm is %s KiB, want 65536", got)
	}
	big := e.podConfig("shm-big")
	big.Annotations = map[string]string{"io.corral.shm-size": "16Mi"}
	bigID := e.runPod(t, big)
	if got := shmKiB(big, bigID, "a"); got != "16384" {
		t.Errorf("/dev/shm is %s KiB, want 16384 (16Mi)", got)
	}
	bad := e.podConfig("shm-bad")
	bad.Annotations = map[string]string{"io.corral.shm-size": "lots"}
	_, err := e.rt.RunPodSandbox(e.ctx(), &runtimeapi.RunPodSandboxRequest{Config: bad})
	if code, msg := grpcCode(err); code.String() != "InvalidArgument" || !strings.Contains(msg, "io.corral.shm-size") {
		t.Errorf("a bad shm size: %v, want InvalidArgument naming the annotation", err)
	}
	e.removePod(t, defID)
	e.removePod(t, bigID)
}

// TestUserNamespacePod: a pod with a user namespace of its own runs its
// containers' root as an unprivileged host ID, and yet its image, its
// writable layer and its volumes behave as root's: corrald ID-maps the
// image layers and the volumes, and the pod's network namespace belongs to
// its user namespace (a port below 1024 can be bound, a net sysctl set).
// Removing the pod leaves no mount and no namespace pin.
func TestUserNamespacePod(t *testing.T) {
	e := newPodEnv(t)
	// The pod's root, an unprivileged host ID, must reach its rootfs below
	// corrald's root and state, as below /var/lib and /run.
	if err := os.Chmod(e.dir, 0o711); err != nil {
		t.Fatal(err)
	}
	host := uint32(300000 + 65536*rand.IntN(100))
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: host, Length: 65536}}
	pod := e.podConfig("userns")
	pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m}
	pod.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "2000"}
	podID := e.runPod(t, pod)

	vol := filepath.Join(e.dir, "vol")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(vol, "from-host"), []byte("x"), 0o644)
	cfg := e.containerConfig("app", "sleep", "1000")
	cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = pod.Linux.SecurityContext.NamespaceOptions.UsernsOptions
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol, UidMappings: m, GidMappings: m}}
	cid, pid := e.runContainer(t, podID, pod, cfg)

	if out, _ := e.execIn(t, cid, "cat", "/proc/self/uid_map"); !strings.Contains(strings.Join(strings.Fields(out), " "), fmt.Sprintf("0 %d 65536", host)) {
		t.Errorf("uid_map %q, want 0 %d 65536", out, host)
	}
	if uid := procUID(t, pid); uid != host {
		t.Errorf("the container's process runs as host uid %d, want %d", uid, host)
	}
	// The image's files are root's inside, and root may change them.
	if out, _ := e.execIn(t, cid, "stat", "-c", "%u:%g", "/bin/busybox"); strings.TrimSpace(out) != "0:0" {
		t.Errorf("/bin/busybox is owned by %q inside, want 0:0", out)
	}
	if out, code := e.execIn(t, cid, "sh", "-c", "echo hi > /etc/written && cat /etc/written"); code != 0 || strings.TrimSpace(out) != "hi" {
		t.Errorf("root writing into the image's /etc: exit %d, %q", code, out)
	}
	// The volume is root's inside; what root writes is owned by the node's
	// root on disk, as without a user namespace.
	if out, _ := e.execIn(t, cid, "stat", "-c", "%u", "/vol/from-host"); strings.TrimSpace(out) != "0" {
		t.Errorf("a root-owned volume file is owned by %q inside", out)
	}
	if out, code := e.execIn(t, cid, "sh", "-c", "echo x > /vol/from-pod"); code != 0 {
		t.Errorf("root writing to its volume: %d %s", code, out)
	} else {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(vol, "from-pod"), &st); err != nil || st.Uid != 0 {
			t.Errorf("the file the pod wrote is owned by %d on the node (%v), want 0", st.Uid, err)
		}
	}
	// The pod's network namespace is its own: a sysctl set in it, a
	// privileged port bound by its root.
	if out, _ := e.execIn(t, cid, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"); strings.TrimSpace(out) != "2000" {
		t.Errorf("net sysctl %q, want 2000", out)
	}
	if out, code := e.execIn(t, cid, "sh", "-c", "nc -l -p 80 & p=$!; sleep 0.3; kill $p"); code != 0 || strings.Contains(out, "denied") {
		t.Errorf("binding port 80: %d %s", code, out)
	}
	// Root of the pod is nobody to the node: it cannot reach the node's
	// files beyond what all may.
	if out, code := e.execIn(t, cid, "sh", "-c", "echo x > /proc/sys/kernel/panic"); code == 0 {
		t.Errorf("the pod's root wrote a node-wide sysctl: %s", out)
	}

	bundle := filepath.Join(e.state, "containers", cid)
	if len(mountsUnder(bundle)) < 2 {
		t.Errorf("no ID-mapped mounts under %s: %v", bundle, mountsUnder(bundle))
	}
	e.removePod(t, podID)
	if left := mountsUnder(bundle); len(left) > 0 {
		t.Errorf("mounts left under the bundle: %v", left)
	}
	for _, d := range []string{"netns", "userns"} {
		if _, err := os.Stat(filepath.Join(e.state, d, podID)); !os.IsNotExist(err) {
			t.Errorf("the pod's %s pin is still there: %v", d, err)
		}
	}
}

// procUID is the real uid of a process on the node.
func procUID(t *testing.T, pid int) uint32 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			var uid uint32
			fmt.Sscan(v, &uid)
			return uid
		}
	}
	t.Fatalf("no Uid in /proc/%d/status", pid)
	return 0
}
