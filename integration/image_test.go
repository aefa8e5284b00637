package integration

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-runtime/corral/integration/testregistry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageEnv is a test registry with the test images, and a corrald whose
// registry config mirrors registry.k8s.io to it.
type imageEnv struct {
	reg    *testregistry.Registry
	d      *corraldRun
	dir    string // the test's short temp dir, holding all of the below
	root   string
	state  string
	config string            // corrald's config file
	pushed map[string]string // ref on the registry → digest
	images runtimeapi.ImageServiceClient
}

// imageEnvOptions tune newImageEnvWith; the zero value is what
// newImageEnv(t, nil) sets up.
type imageEnvOptions struct {
	// Htpasswd makes the registry want basic auth; no image is pushed then.
	Htpasswd map[string]string
	// Images limits the pushed test images to these names
	// (testregistry.Busybox*); nil pushes the whole catalog.
	Images []string
	// ExtraConfig, given the env's dir, returns TOML for corrald's config
	// file. It goes before the env's own tables, so it may set top-level
	// keys; tables of its own must come after those.
	ExtraConfig func(dir string) string
}

func newImageEnv(t *testing.T, htpasswd map[string]string) *imageEnv {
	t.Helper()
	return newImageEnvWith(t, imageEnvOptions{Htpasswd: htpasswd})
}

func newImageEnvWith(t *testing.T, o imageEnvOptions) *imageEnv {
	t.Helper()
	if _, err := os.Stat(testregistry.DefaultBinary); err != nil {
		t.Skipf("docker-registry is not installed (hack/install-deps.sh): %v", err)
	}
	ctx := ctxTimeout(t, 2*time.Minute)
	reg, err := testregistry.Start(ctx, testregistry.Options{Htpasswd: o.Htpasswd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("registry log:\n%s", tail(reg.Logs(), 30))
		}
		reg.Stop()
	})
	env := &imageEnv{reg: reg}
	if o.Htpasswd == nil {
		if o.Images == nil {
			env.pushed, err = testregistry.PushAll(ctx, reg.Host)
		} else {
			env.pushed, err = pushSome(ctx, reg.Host, o.Images)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := shortTempDir(t)
	env.dir = dir
	env.root = filepath.Join(dir, "root")
	env.state = filepath.Join(dir, "state")
	certs := filepath.Join(dir, "certs.d")
	hosts := fmt.Sprintf("server = \"https://registry.k8s.io\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.Host)
	os.MkdirAll(filepath.Join(certs, "registry.k8s.io"), 0o755)
	if err := os.WriteFile(filepath.Join(certs, "registry.k8s.io", "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	env.config = filepath.Join(dir, "corral.toml")
	cfg := fmt.Sprintf("[registry]\nconfig_path = %q\n[image]\npull_progress_timeout = \"30s\"\n", certs)
	if o.ExtraConfig != nil {
		cfg = o.ExtraConfig(dir) + "\n" + cfg
	}
	if err := os.WriteFile(env.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	env.startDaemon(t)
	t.Cleanup(func() {
		// The last corrald started; a test may have killed it already.
		select {
		case <-env.d.exited:
		default:
			env.d.stop(t, 10*time.Second)
		}
	})
	return env
}

// startDaemon starts corrald on the env's config, root and state, as the
// env's daemon: at first, and again after a test stopped or killed it.
func (e *imageEnv) startDaemon(t *testing.T) *corraldRun {
	t.Helper()
	e.d = startCorrald(t, e.state, "--config", e.config, "--root", e.root, "--state", e.state, "--log-level", "debug")
	e.images = imageClient(t, e.d.socket)
	return e.d
}

// pushSome pushes the named images of the test catalog to host.
func pushSome(ctx context.Context, host string, names []string) (map[string]string, error) {
	entries, err := testregistry.Catalog()
	if err != nil {
		return nil, err
	}
	var some []testregistry.Entry
	for _, e := range entries {
		if slices.Contains(names, e.Name) {
			some = append(some, e)
		}
	}
	if len(some) != len(names) {
		return nil, fmt.Errorf("push %v: only %d of them are in the test catalog", names, len(some))
	}
	return testregistry.PushEntries(ctx, host, some)
}

// crictlBinary finds the crictl that make bin/crictl builds: next to the
// binaries under test, in the checkout's bin/, or on PATH.
func crictlBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{filepath.Join(binDir, "crictl"), "../bin/crictl"} {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	bin, err := exec.LookPath("crictl")
	if err != nil {
		t.Skipf("crictl is not built (make bin/crictl): %v", err)
	}
	return bin
}

// crictl runs crictl against the env's corrald. It gives up after two
// minutes, so that a call that hangs fails the test instead of stalling it.
func (e *imageEnv) crictl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := crictlBinary(t)
	ep := "unix://" + e.d.socket
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "60s"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		err = fmt.Errorf("crictl %v still running after 2m: %w", args, ctx.Err())
	}
	if err != nil {
		// What crictl says on failure is on stderr; keep it with the output.
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

func (e *imageEnv) mustCrictl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.crictl(t, args...)
	if err != nil {
		t.Fatalf("crictl %v: %v\n%s", args, err, out)
	}
	return out
}

func (e *imageEnv) ref(name string) string { return e.reg.Host + "/" + name }

// TestImagePullCrictl pulls every kind of test image with crictl (by tag,
// by digest, through a registry.k8s.io mirror), inspects, lists and removes
// them, and checks the CRI contract for absent images.
func TestImagePullCrictl(t *testing.T) {
	env := newImageEnv(t, nil)
	ctx := ctxTimeout(t, 3*time.Minute)

	for _, name := range []string{testregistry.BusyboxLatest, testregistry.BusyboxGzip, testregistry.BusyboxZstd,
		testregistry.BusyboxPlain, testregistry.BusyboxWhiteout, testregistry.BusyboxUser, testregistry.BusyboxWWWData,
		testregistry.BusyboxMultiarch, testregistry.BusyboxDockerList} {
		out := env.mustCrictl(t, "pull", env.ref(name))
		if !strings.Contains(out, "Image is up to date for sha256:") {
			t.Errorf("crictl pull %s: %q", name, out)
		}
	}

	// By digest, and through the mirror of registry.k8s.io.
	digestRef := env.reg.Host + "/corral-test/busybox@" + env.pushed[env.ref(testregistry.BusyboxGzip)]
	env.mustCrictl(t, "pull", digestRef)
	env.mustCrictl(t, "pull", "registry.k8s.io/"+testregistry.BusyboxLatest)

	list := env.mustCrictl(t, "images", "-o", "json")
	var images struct {
		Images []struct {
			ID          string   `json:"id"`
			RepoTags    []string `json:"repoTags"`
			RepoDigests []string `json:"repoDigests"`
			UID         *struct {
				Value string `json:"value"`
			} `json:"uid"`
			Username string `json:"username"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(list), &images); err != nil {
		t.Fatalf("crictl images -o json: %v\n%s", err, list)
	}
	tags := map[string]bool{}
	for _, img := range images.Images {
		for _, tag := range img.RepoTags {
			tags[tag] = true
		}
		for _, rd := range img.RepoDigests {
			tags[rd] = true
		}
	}
	for _, want := range []string{env.ref(testregistry.BusyboxZstd), "registry.k8s.io/" + testregistry.BusyboxLatest, digestRef} {
		if !tags[want] {
			t.Errorf("crictl images lacks %s; has %v", want, tags)
		}
	}

	// inspecti reports the image's USER.
	var inspect struct {
		Status struct {
			ID  string `json:"id"`
			UID *struct {
				Value string `json:"value"`
			} `json:"uid"`
			Username string `json:"username"`
		} `json:"status"`
		Info map[string]json.RawMessage `json:"info"`
	}
	out := env.mustCrictl(t, "inspecti", "-o", "json", env.ref(testregistry.BusyboxUser))
	if err := json.Unmarshal([]byte(out), &inspect); err != nil {
		t.Fatalf("inspecti: %v\n%s", err, out)
	}
	if inspect.Status.UID == nil || inspect.Status.UID.Value != "1000" {
		t.Errorf("inspecti of the USER 1000 image: uid %+v", inspect.Status.UID)
	}
	out = env.mustCrictl(t, "inspecti", "-o", "json", env.ref(testregistry.BusyboxWWWData))
	json.Unmarshal([]byte(out), &inspect)
	if inspect.Status.Username != "www-data" {
		t.Errorf("inspecti of the USER www-data image: username %q", inspect.Status.Username)
	}

	// The CRI contract: an absent image is an empty status and removing it
	// is no error.
	st, err := env.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: env.ref("corral-test/nosuch:1")}})
	if err != nil || st.Image != nil {
		t.Errorf("ImageStatus of an absent image: %v, %v; want empty, nil", st, err)
	}
	if _, err := env.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: env.ref("corral-test/nosuch:1")}}); err != nil {
		t.Errorf("RemoveImage of an absent image: %v", err)
	}
	if _, err := env.crictl(t, "pull", env.ref("corral-test/nosuch:1")); err == nil {
		t.Error("pulling an absent image succeeded")
	}

	// rmi removes the image and what only it used: the zstd image shares
	// its unpacked layer (same diff ID) with the gzip and plain images, so
	// its blobs go but the snapshot stays until they go too.
	blobsBefore := countDir(t, filepath.Join(env.root, "content", "blobs", "sha256"))
	snapsBefore := countDir(t, filepath.Join(env.root, "snapshots"))
	env.mustCrictl(t, "rmi", env.ref(testregistry.BusyboxZstd))
	if out, _ := env.crictl(t, "images", "-q", env.ref(testregistry.BusyboxZstd)); strings.TrimSpace(out) != "" {
		t.Errorf("image still listed after rmi: %q", out)
	}
	if n := countDir(t, filepath.Join(env.root, "content", "blobs", "sha256")); n >= blobsBefore {
		t.Errorf("blobs: %d before rmi, %d after: the zstd image's blobs were kept", blobsBefore, n)
	}
	if n := countDir(t, filepath.Join(env.root, "snapshots")); n != snapsBefore {
		t.Errorf("snapshots: %d before rmi, %d after: a shared snapshot was removed", snapsBefore, n)
	}
	fs, err := env.images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) != 1 || fs.ImageFilesystems[0].UsedBytes.GetValue() == 0 {
		t.Errorf("ImageFsInfo: %v %v", fs, err)
	}

	// Removing every image frees every blob and snapshot.
	env.mustCrictl(t, "rmi", "--all")
	if out := env.mustCrictl(t, "images", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("images left after rmi --all: %q", out)
	}
	for _, d := range []string{"snapshots", "content/blobs/sha256"} {
		if n := countDir(t, filepath.Join(env.root, d)); n != 0 {
			t.Errorf("%d entries left in %s after removing every image", n, d)
		}
	}
}

func countDir(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestImageSnapshotsMountAsOverlay mounts the unpacked layers of the
// whiteout image as overlay lowerdirs: the merged view is what the image
// should contain.
func TestImageSnapshotsMountAsOverlay(t *testing.T) {
	env := newImageEnv(t, nil)
	ctx := ctxTimeout(t, time.Minute)
	ref := env.ref(testregistry.BusyboxWhiteout)
	if _, err := env.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		t.Fatal(err)
	}
	st, err := env.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		ChainIDs []string `json:"chainIDs"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || len(info.ChainIDs) < 2 {
		t.Fatalf("verbose info %q: %v", st.Info["info"], err)
	}
	var lower []string
	for i := len(info.ChainIDs) - 1; i >= 0; i-- {
		lower = append(lower, filepath.Join(env.root, "snapshots", strings.TrimPrefix(info.ChainIDs[i], "sha256:"), "fs"))
	}
	target := filepath.Join(shortTempDir(t), "merged")
	os.MkdirAll(target, 0o755)
	if err := syscall.Mount("overlay", target, "overlay", syscall.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
		t.Fatalf("mount overlay of %v: %v", lower, err)
	}
	defer syscall.Unmount(target, syscall.MNT_DETACH)
	for path, want := range testregistry.WhiteoutMerged() {
		got, err := os.ReadFile(filepath.Join(target, path))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", path, got, err, want)
		}
	}
	for _, path := range testregistry.WhiteoutRemoved() {
		if _, err := os.Lstat(filepath.Join(target, path)); err == nil {
			t.Errorf("%s is still there: the whiteout was not honoured", path)
		}
	}
}

// TestImagePullAuth pulls from a registry that wants basic auth: with the
// credentials it works, without them it fails and says why.
func TestImagePullAuth(t *testing.T) {
	env := newImageEnv(t, map[string]string{"corral": "s3cret"})
	ctx := ctxTimeout(t, time.Minute)
	img, err := testregistry.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	ref := env.ref("private/busybox:1")
	if err := testregistry.Push(ctx, ref, img, testregistry.WithBasicAuth("corral", "s3cret")); err != nil {
		t.Fatal(err)
	}
	out, err := env.crictl(t, "pull", ref)
	if err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Errorf("pull without credentials: %v\n%s", err, out)
	}
	env.mustCrictl(t, "pull", "--creds", "corral:s3cret", ref)
	if _, err := env.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref},
		Auth: &runtimeapi.AuthConfig{Username: "corral", Password: "wrong"}}); err == nil {
		t.Error("pull with a wrong password succeeded")
	}
}

// TestImagePullMaliciousLayers pulls images whose layers try to write
// outside their snapshot; nothing outside changes and corrald keeps serving.
func TestImagePullMaliciousLayers(t *testing.T) {
	env := newImageEnv(t, nil)
	ctx := ctxTimeout(t, 2*time.Minute)
	outside := filepath.Join(shortTempDir(t), "outside")
	os.MkdirAll(outside, 0o755)
	sentinel := filepath.Join(outside, "sentinel")
	os.WriteFile(sentinel, []byte("untouched"), 0o644)
	rel, _ := filepath.Rel("/", outside)

	cases := map[string][]testregistry.File{
		"traversal": {{Path: "../../../../../../" + rel + "/sentinel", Type: tar.TypeReg, Mode: 0o644, Content: []byte("pwned")}},
		"absolute":  {{Path: outside + "/sentinel", Type: tar.TypeReg, Mode: 0o644, Content: []byte("pwned")}},
		"symlink": {
			{Path: "escape", Type: tar.TypeSymlink, Linkname: outside},
			{Path: "escape/sentinel", Type: tar.TypeReg, Mode: 0o644, Content: []byte("pwned")},
		},
		"hardlink": {{Path: "link", Type: tar.TypeLink, Linkname: "../../../../../../" + rel + "/sentinel"}},
		"device":   {{Path: "dev/evil", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1}},
	}
	for name, files := range cases {
		layer, err := testregistry.NewLayer(files, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			t.Fatal(err)
		}
		ref := env.ref("evil/" + name + ":1")
		if err := testregistry.Push(ctx, ref, img); err != nil {
			t.Fatal(err)
		}
		_, err = env.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		t.Logf("%s: pull error: %v", name, err)
		if b, _ := os.ReadFile(sentinel); string(b) != "untouched" {
			t.Fatalf("%s: the sentinel outside the snapshot changed: %q", name, b)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 1 {
			t.Fatalf("%s: files appeared outside the snapshot", name)
		}
	}
	if err := filepath.Walk(filepath.Join(env.root, "snapshots"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&(os.ModeDevice|os.ModeCharDevice) != 0 && fi.Sys().(*syscall.Stat_t).Rdev != 0 {
			return fmt.Errorf("device node %s in a snapshot", p)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	// Still serving.
	if _, err := env.images.ListImages(ctx, &runtimeapi.ListImagesRequest{}); err != nil {
		t.Fatalf("corrald stopped serving: %v", err)
	}
}

func imageClient(t *testing.T, socket string) runtimeapi.ImageServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return runtimeapi.NewImageServiceClient(conn)
}
