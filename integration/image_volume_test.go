package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-runtime/corral/integration/testregistry"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestImageVolume mounts images into a container as read-only volumes
// (Kubernetes' image volumes): a two-layer image through a read-only
// overlay, whiteouts honoured; a sub path of a one-layer image; writes
// refused. ContainerStatus names each volume's image; the images' layers
// stay while the container lives, even with the images removed, and
// nothing stays mounted once it is gone.
func TestImageVolume(t *testing.T) {
	e := newPodEnv(t)
	if _, err := pushSome(e.ctx(), e.reg.Host, []string{testregistry.BusyboxWhiteout}); err != nil {
		t.Fatal(err)
	}
	pulled, err := e.images.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: e.ref(testregistry.BusyboxWhiteout)}})
	if err != nil {
		t.Fatal(err)
	}
	whiteoutID := pulled.ImageRef
	pod := e.podConfig("imagevol")
	podID := e.runPod(t, pod)

	volume := func(path, image, sub string, readonly bool) *runtimeapi.Mount {
		return &runtimeapi.Mount{ContainerPath: path, Readonly: readonly, ImageSubPath: sub,
			Image: &runtimeapi.ImageSpec{Image: image, UserSpecifiedImage: image}}
	}

	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			m    *runtimeapi.Mount
			code codes.Code
			msg  string
		}{
			{"writable", volume("/v", whiteoutID, "", false), codes.InvalidArgument, "read-only"},
			{"missing sub path", volume("/v", whiteoutID, "not-there", true), codes.InvalidArgument, `"not-there"`},
			{"climbing sub path", volume("/v", whiteoutID, "../..", true), codes.InvalidArgument, "image_sub_path"},
			{"image not pulled", volume("/v", e.ref("corral-test/absent:1"), "", true), codes.NotFound, "pull it first"},
		} {
			cfg := e.containerConfig("bad-"+strings.ReplaceAll(tc.name, " ", "-"), "sleep", "1000")
			cfg.Mounts = []*runtimeapi.Mount{tc.m}
			_, err := e.rt.CreateContainer(e.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			if code, msg := grpcCode(err); code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Errorf("%s: %v, want %s naming %q", tc.name, err, tc.code, tc.msg)
			}
		}
		if n := len(e.listContainers(t, &runtimeapi.ContainerFilter{PodSandboxId: podID})); n != 0 {
			t.Errorf("%d containers left by failed creations", n)
		}
		if m := mountsUnder(filepath.Join(e.state, "containers")); len(m) != 0 {
			t.Errorf("mounts left by failed creations: %q", m)
		}
	})

	cfg := e.containerConfig("app", "sleep", "1000")
	cfg.Mounts = []*runtimeapi.Mount{
		volume("/vol", whiteoutID, "", true),
		volume("/bin2", e.busyboxID, "bin", true),
	}
	cid, _ := e.runContainer(t, podID, pod, cfg)
	exec := func(cmd ...string) (string, int32) {
		t.Helper()
		resp, err := e.rt.ExecSync(e.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: cid, Cmd: cmd, Timeout: 10})
		if err != nil {
			t.Fatalf("exec %q: %v", cmd, err)
		}
		return string(resp.Stdout) + string(resp.Stderr), resp.ExitCode
	}
	checkContent := func() {
		t.Helper()
		for path, want := range testregistry.WhiteoutMerged() {
			if got, code := exec("cat", "/vol/"+path); code != 0 || got != want {
				t.Errorf("/vol/%s = %q (exit %d), want %q", path, got, code, want)
			}
		}
		for _, path := range testregistry.WhiteoutRemoved() {
			if _, code := exec("test", "-e", "/vol/"+path); code == 0 {
				t.Errorf("/vol/%s exists; the image's second layer deletes it", path)
			}
		}
		// The sub path "bin" of busybox: its programs run from the volume.
		if out, code := exec("/bin2/busybox", "echo", "from the volume"); code != 0 || out != "from the volume\n" {
			t.Errorf("/bin2/busybox: %q exit %d", out, code)
		}
	}
	checkContent()
	if _, code := exec("test", "-e", "/bin2/bin"); code == 0 {
		t.Error("/bin2 holds the whole image, not its sub path bin")
	}
	for _, p := range []string{"/vol/new", "/vol/data/keep.txt", "/bin2/new"} {
		if out, code := exec("touch", p); code == 0 {
			t.Errorf("touch %s succeeded on a read-only image volume: %s", p, out)
		}
	}

	st, _ := e.containerStatus(t, cid)
	refs := map[string]string{}
	for _, m := range st.Mounts {
		refs[m.ContainerPath] = m.GetImage().GetImageRef()
	}
	if refs["/vol"] != whiteoutID || refs["/bin2"] != e.busyboxID {
		t.Errorf("ContainerStatus image_ref of the volumes = %v, want /vol %s, /bin2 %s", refs, whiteoutID, e.busyboxID)
	}
	if out := e.mustCrictl(t, "inspect", cid); !strings.Contains(out, whiteoutID) {
		t.Errorf("crictl inspect does not name the volume's image %s", whiteoutID)
	}

	// Removing the images keeps their layers while the container uses them.
	snaps := filepath.Join(e.root, "snapshots")
	before := countDir(t, snaps)
	for _, id := range []string{whiteoutID, e.busyboxID} {
		if _, err := e.images.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: id}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := countDir(t, snaps); n != before {
		t.Errorf("snapshots went from %d to %d while a container mounts them", before, n)
	}
	checkContent()

	mounted := mountsUnder(filepath.Join(e.state, "containers", cid, "volumes"))
	if len(mounted) != 2 {
		t.Errorf("volumes mounted: %q, want 2", mounted)
	}
	e.removePod(t, podID)
	if m := mountsUnder(filepath.Join(e.state, "containers")); len(m) != 0 {
		t.Errorf("mounts left after the container was removed: %q", m)
	}
	waitUntil(t, 10*time.Second, "snapshots collected after the container went", func() (bool, string) {
		n := countDir(t, snaps)
		return n == 0, fmt.Sprintf("%d snapshots left", n)
	})
	e.checkNoLeaks(t)
}
