package image

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/metadata"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

// fakeRegistry is go-containerregistry's in-memory registry behind a
// handler that counts blob downloads and can hold them back.
type fakeRegistry struct {
	srv       *httptest.Server
	blobGets  atomic.Int32
	stallBlob atomic.Bool
	failBlob  atomic.Value // a digest whose download answers 404
	release   chan struct{}
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{release: make(chan struct{})}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			f.blobGets.Add(1)
			if d, _ := f.failBlob.Load().(string); d != "" && strings.HasSuffix(r.URL.Path, d) {
				http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"cut"}]}`, http.StatusNotFound)
				return
			}
			if f.stallBlob.Load() {
				select {
				case <-f.release:
				case <-r.Context().Done():
					return
				}
			}
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		close(f.release)
		f.srv.Close()
	})
	return f
}

func (f *fakeRegistry) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// push puts a random image with layers layers at repo:tag and returns it.
func (f *fakeRegistry) push(t *testing.T, repo string, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(64<<10, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: nodePlatform().Architecture, RootFS: mustRootFS(t, img)})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(f.host()+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return img
}

func mustRootFS(t *testing.T, img v1.Image) v1.RootFS {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS
}

func newTestService(t *testing.T, timeout time.Duration) *Service {
	t.Helper()
	dir := t.TempDir()
	st, err := metadata.Open(filepath.Join(dir, "meta.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s, err := New(Options{Root: dir, Store: st, RegistryConfigPath: filepath.Join(dir, "certs.d"), ProgressTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestConcurrentPullsShareDownloads: 8 pulls of one image at once fetch
// each layer once, and all get the same image.
func TestConcurrentPullsShareDownloads(t *testing.T) {
	if testing.Short() {
		t.Skip("unpacks layers")
	}
	reg := newFakeRegistry(t)
	img := reg.push(t, "app:1", 3)
	s := newTestService(t, time.Minute)
	reg.stallBlob.Store(true)

	var wg sync.WaitGroup
	ids := make([]string, 8)
	errs := make([]error, 8)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, err := s.Pull(context.Background(), reg.host()+"/app:1", nil)
			ids[i], errs[i] = rec.ID, err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	reg.stallBlob.Store(false)
	reg.release <- struct{}{}
	wg.Wait()
	want, _ := img.ConfigName()
	for i := range ids {
		if errs[i] != nil || ids[i] != want.String() {
			t.Fatalf("pull %d: %q %v, want %s", i, ids[i], errs[i], want)
		}
	}
	// 3 layers; the config comes with the manifest fetch in ggcr's remote
	// (one blob GET), so at most 4 blob GETs for 8 pulls.
	t.Logf("%d blob downloads for 8 concurrent pulls", reg.blobGets.Load())
	if n := reg.blobGets.Load(); n > 4 {
		t.Errorf("%d blob downloads for 8 concurrent pulls of a 3-layer image, want at most 4", n)
	}

	// A second image sharing two of those layers downloads only its own.
	layers, _ := img.Layers()
	other, err := mutate.AppendLayers(img, mustRandomLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(reg.host()+"/other:1", name.Insecure)
	if err := remote.Write(ref, other); err != nil {
		t.Fatal(err)
	}
	before := reg.blobGets.Load()
	if _, err := s.Pull(context.Background(), reg.host()+"/other:1", nil); err != nil {
		t.Fatal(err)
	}
	if got := reg.blobGets.Load() - before; got > 2 {
		t.Errorf("pulling an image that adds 1 layer to %d known ones fetched %d blobs, want at most 2 (config, new layer)", len(layers), got)
	}
}

func mustRandomLayer(t *testing.T) v1.Layer {
	t.Helper()
	img, err := random.Image(32<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls[0]
}

// TestStalledPullIsCancelled: a registry that stops sending gets the pull
// cancelled after the progress timeout, with an error saying so.
func TestStalledPullIsCancelled(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.push(t, "slow:1", 1)
	s := newTestService(t, 500*time.Millisecond)
	reg.stallBlob.Store(true)
	start := time.Now()
	_, err := s.Pull(context.Background(), reg.host()+"/slow:1", nil)
	if err == nil || !strings.Contains(err.Error(), "pull_progress_timeout") {
		t.Fatalf("stalled pull: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stalled pull took %s to cancel with a 500ms timeout", d)
	}
}

// TestPullCancelledByCaller: a caller that gives up ends the pull.
func TestPullCancelledByCaller(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.push(t, "slow:1", 1)
	s := newTestService(t, 0)
	reg.stallBlob.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := s.Pull(ctx, reg.host()+"/slow:1", nil); err == nil {
		t.Fatal("pull outlived its context")
	}
}

// TestFailedPullLeavesNothing: a pull that fails after some of its blobs
// arrived (the registry lost a layer, the disk filled) leaves no blob or
// snapshot behind: no image names them, so nothing else would remove
// them before the next image removal. The chaos suite found them left.
func TestFailedPullLeavesNothing(t *testing.T) {
	reg := newFakeRegistry(t)
	img := reg.push(t, "partial:1", 3)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[2].Digest()
	if err != nil {
		t.Fatal(err)
	}
	reg.failBlob.Store(d.String())
	s := newTestService(t, time.Minute)
	if _, err := s.Pull(context.Background(), reg.host()+"/partial:1", nil); err == nil {
		t.Fatal("the pull succeeded without its last layer")
	}
	if blobs, err := s.content.list(); err != nil || len(blobs) > 0 {
		t.Errorf("blobs left: %v (%v)", blobs, err)
	}
	if snaps, err := s.snaps.List(); err != nil || len(snaps) > 0 {
		t.Errorf("snapshots left: %v (%v)", snaps, err)
	}
	// And the next pull, with the layer back, fetches it all again.
	reg.failBlob.Store("")
	if _, err := s.Pull(context.Background(), reg.host()+"/partial:1", nil); err != nil {
		t.Fatal(err)
	}
}

func TestPullErrors(t *testing.T) {
	reg := newFakeRegistry(t)
	s := newTestService(t, time.Minute)
	cases := []struct {
		ref  string
		kind func(error) bool
	}{
		{reg.host() + "/absent:1", errdefs.IsNotFound},
		{"UPPER/case", errdefs.IsInvalidArgument},
		{"", errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		_, err := s.Pull(context.Background(), tc.ref, nil)
		if !tc.kind(err) {
			t.Errorf("Pull(%q): %v", tc.ref, err)
		}
	}
}

func TestUser(t *testing.T) {
	cases := []struct {
		in   string
		uid  int64
		name string
		ok   bool
	}{
		{"", 0, "", false},
		{"0", 0, "", true},
		{"1000", 1000, "", true},
		{"1000:1000", 1000, "", true},
		{"www-data", 0, "www-data", true},
		{"www-data:1004", 0, "www-data", true},
	}
	for _, tc := range cases {
		uid, name, ok := User(tc.in)
		if uid != tc.uid || name != tc.name || ok != tc.ok {
			t.Errorf("User(%q) = %d %q %v", tc.in, uid, name, ok)
		}
	}
}

func TestStripTag(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/busybox:1@sha256:abc": "docker.io/library/busybox@sha256:abc",
		"127.0.0.1:5000/x@sha256:abc":            "127.0.0.1:5000/x@sha256:abc",
		"127.0.0.1:5000/x:tag@sha256:abc":        "127.0.0.1:5000/x@sha256:abc",
		"docker.io/library/busybox:latest":       "docker.io/library/busybox:latest",
	} {
		if got := stripTag(in); got != want {
			t.Errorf("stripTag(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNewCollectsCutShortPull: blobs a pull cut short by a crash left,
// named by no image, are gone once the service starts again; an image's
// own blobs stay.
func TestNewCollectsCutShortPull(t *testing.T) {
	dir := t.TempDir()
	st, err := metadata.Open(filepath.Join(dir, "meta.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	open := func() *Service {
		s, err := New(Options{Root: dir, Store: st, RegistryConfigPath: filepath.Join(dir, "certs.d")})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	kept := []byte(`{"kept":true}`)
	left := []byte(`{"left":true}`)
	keptD, leftD := digest.FromBytes(kept).String(), digest.FromBytes(left).String()
	for d, b := range map[string][]byte{keptD: kept, leftD: left} {
		if err := s.content.writeBytes(d, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateImage(metadata.Image{ID: keptD, RepoTags: []string{"example.com/kept:1"}}); err != nil {
		t.Fatal(err)
	}
	s = open()
	if !s.content.has(keptD) {
		t.Error("the image's blob went")
	}
	if s.content.has(leftD) {
		t.Error("the blob no image names is still there after a restart")
	}
}
