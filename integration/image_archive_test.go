package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-runtime/corral/integration/testregistry"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// skopeo runs Debian's skopeo (hack/install-deps.sh) and returns its
// standard output.
func skopeo(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("skopeo is missing (hack/install-deps.sh installs it): %v", err)
	}
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// corralctlStdin is mustCorralctl with stdin as the command's standard
// input.
func (e *podEnv) corralctlStdin(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "corralctl"), append([]string{"--state", e.state}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("corralctl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// skopeoDigest is the manifest digest `skopeo inspect` reports for ref.
func skopeoDigest(t *testing.T, ref string) string {
	t.Helper()
	var out struct{ Digest string }
	if err := json.Unmarshal(skopeo(t, "inspect", ref), &out); err != nil {
		t.Fatal(err)
	}
	return out.Digest
}

// TestImageArchives is issue 12's acceptance 2 and 3. Debian's skopeo
// copies busybox from the loopback registry into an oci-archive and a
// docker-archive, under names no registry serves; the registry stops and
// corrald forgets the pulled image. `corralctl images import` (a file, and
// stdin) loads both; crictl lists them by those names; a pod runs from
// each. `corralctl images export` writes archives skopeo reads back: the
// OCI one with the imported manifest's digest, the docker one with the
// image's config and layers.
func TestImageArchives(t *testing.T) {
	e := newPodEnv(t)
	dir := t.TempDir()
	src := "docker://" + e.reg.Host + "/" + testregistry.BusyboxLatest
	const ociName, dockerName = "offline.invalid/corral/busybox:oci", "offline.invalid/corral/busybox:docker"
	ociTar, dockerTar := filepath.Join(dir, "busybox-oci.tar"), filepath.Join(dir, "busybox-docker.tar")
	skopeo(t, "copy", "--src-tls-verify=false", src, "oci-archive:"+ociTar+":"+ociName)
	skopeo(t, "copy", "--src-tls-verify=false", src, "docker-archive:"+dockerTar+":"+dockerName)
	ociDigest := skopeoDigest(t, "oci-archive:"+ociTar)

	// No registry, and no trace of the pulled image.
	if err := e.reg.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.images.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: e.busybox}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.images.PullImage(e.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: e.busybox}}); err == nil {
		t.Fatal("a pull succeeded with the registry stopped")
	}

	out := e.mustCorralctl(t, "images", "import", ociTar)
	if !strings.Contains(out, ociName) {
		t.Errorf("import of the oci-archive says:\n%s", out)
	}
	docker, err := os.ReadFile(dockerTar)
	if err != nil {
		t.Fatal(err)
	}
	if out := e.corralctlStdin(t, docker, "images", "import", "-"); !strings.Contains(string(out), dockerName) {
		t.Errorf("import of the docker-archive from stdin says:\n%s", out)
	}

	listed := e.mustCrictl(t, "images")
	for _, tag := range []string{"oci", "docker"} {
		found := false
		for _, line := range strings.Split(listed, "\n") {
			f := strings.Fields(line)
			found = found || len(f) >= 2 && f[0] == "offline.invalid/corral/busybox" && f[1] == tag
		}
		if !found {
			t.Errorf("crictl images does not list offline.invalid/corral/busybox:%s:\n%s", tag, listed)
		}
	}

	// A pod runs from each, as the kubelet starts one: the image by name
	// to ImageStatus (no pull: it is present), then by ID to
	// CreateContainer.
	for _, name := range []string{ociName, dockerName} {
		st, err := e.images.ImageStatus(e.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: name}})
		if err != nil || st.Image == nil {
			t.Fatalf("ImageStatus %s: %v %v", name, st, err)
		}
		if name == ociName && (len(st.Image.RepoDigests) != 1 || !strings.HasSuffix(st.Image.RepoDigests[0], "@"+ociDigest)) {
			t.Errorf("%s: repo digests %v, want the archive's manifest %s", name, st.Image.RepoDigests, ociDigest)
		}
		podCfg := e.podConfig("offline-" + strings.TrimPrefix(name, "offline.invalid/corral/busybox:"))
		podID := e.runPod(t, podCfg)
		cfg := e.containerConfig("app", "sh", "-c", "echo from-archive; sleep 1000")
		cfg.Image = &runtimeapi.ImageSpec{Image: st.Image.Id, UserSpecifiedImage: name}
		id, _ := e.runContainer(t, podID, podCfg, cfg)
		waitUntil(t, 10*time.Second, name+": the container's output in its log", func() (bool, string) {
			b, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "app.log"))
			return strings.Contains(string(b), "from-archive"), string(b)
		})
		// ImageRef is the repo digest where there is one, as containerd
		// reports it, else the ID.
		status, _ := e.containerStatus(t, id)
		if ref := status.GetImageRef(); ref != st.Image.Id && !slices.Contains(st.Image.RepoDigests, ref) {
			t.Errorf("%s: container runs image %s, want %s or one of %v", name, ref, st.Image.Id, st.Image.RepoDigests)
		}
	}

	// Export: skopeo reads what corralctl writes.
	exported := filepath.Join(dir, "export-oci.tar")
	e.mustCorralctl(t, "images", "export", ociName, exported)
	if got := skopeoDigest(t, "oci-archive:"+exported); got != ociDigest {
		t.Errorf("skopeo inspect of the exported oci-archive: digest %s, want %s", got, ociDigest)
	}
	st, err := e.images.ImageStatus(e.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: dockerName}})
	if err != nil {
		t.Fatal(err)
	}
	exported = filepath.Join(dir, "export-docker.tar")
	e.mustCorralctl(t, "images", "export", "--format", "docker-archive", dockerName, exported)
	config := skopeo(t, "inspect", "--raw", "--config", "docker-archive:"+exported)
	sum := sha256.Sum256(config)
	if id := "sha256:" + hex.EncodeToString(sum[:]); id != st.Image.Id {
		t.Errorf("the exported docker-archive's config has digest %s, want the image ID %s", id, st.Image.Id)
	}
	var inspected struct{ Layers []string }
	json.Unmarshal(skopeo(t, "inspect", "docker-archive:"+exported), &inspected)
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	json.Unmarshal(config, &cfg)
	if strings.Join(inspected.Layers, ",") != strings.Join(cfg.RootFS.DiffIDs, ",") || len(cfg.RootFS.DiffIDs) == 0 {
		t.Errorf("the exported docker-archive's layers %v, want the diff IDs %v", inspected.Layers, cfg.RootFS.DiffIDs)
	}
	// And to stdout, which is what a pipe to ssh or docker load gets.
	stdout := e.mustCorralctl(t, "images", "export", ociName, "-")
	if b, _ := os.ReadFile(filepath.Join(dir, "export-oci.tar")); stdout != string(b) {
		t.Errorf("export to stdout: %d bytes, differs from the file's %d", len(stdout), len(b))
	}
}
