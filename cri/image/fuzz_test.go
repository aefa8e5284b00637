package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-runtime/corral/metadata"
	"github.com/opencontainers/go-digest"
)

// FuzzPull serves arbitrary bytes as what a tag resolves to (a manifest or
// an index) and as the blobs it may point at (child manifests, configs,
// layers), each addressable by its own digest, and pulls the tag: the
// manifest, index and config parsing corral feeds untrusted registry bytes
// into, end to end. A pull must answer, never panic or hang; and an image
// it records must hold together: its ID is its config's digest, the config
// decodes, there is one snapshot per layer, and it can be found by the
// tag it was pulled by.
func FuzzPull(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("unpacking layers needs root")
	}
	layer := tarGz(f, map[string]string{"etc/hello": "hi\n", "bin/x": "#!/bin/sh\n"})
	diffID := sha256Of(gunzip(f, layer))
	config := mustJSON(f, map[string]any{
		"architecture": nodePlatform().Architecture, "os": "linux",
		"config": map[string]any{"User": "1000", "Env": []string{"A=1"}, "Cmd": []string{"/bin/x"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	manifest := func(mt, configMT, layerMT string) []byte {
		return mustJSON(f, map[string]any{
			"schemaVersion": 2, "mediaType": mt,
			"config": desc(configMT, config),
			"layers": []any{desc(layerMT, layer)},
		})
	}
	oci := manifest(ociManifest, "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip")
	docker := manifest(dockerManifest, "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip")
	index := func(mt string, child []byte, arch string) []byte {
		d := desc(ociManifest, child)
		d["platform"] = map[string]string{"architecture": arch, "os": "linux"}
		other := desc(ociManifest, []byte("{}"))
		other["platform"] = map[string]string{"architecture": "s390x", "os": "linux"}
		return mustJSON(f, map[string]any{"schemaVersion": 2, "mediaType": mt, "manifests": []any{other, d}})
	}
	arch := nodePlatform().Architecture
	f.Add(oci, config, layer, []byte{})
	f.Add(docker, config, layer, []byte{})
	f.Add(index(ociIndex, oci, arch), oci, config, layer)
	f.Add(index(dockerList, oci, arch), oci, config, layer)
	f.Add(index(ociIndex, oci, "arm"), oci, config, layer)
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"`+ociManifest+`","layers":[]}`), config, []byte{}, []byte{})
	f.Add([]byte(`{"schemaVersion":1,"name":"x","tag":"t","fsLayers":[]}`), []byte{}, []byte{}, []byte{})
	f.Add([]byte(`{"mediaType":"`+ociIndex+`","manifests":[{"digest":"sha256:`+strings.Repeat("0", 64)+`","size":-1}]}`), []byte{}, []byte{}, []byte{})

	quiet := slog.New(slog.DiscardHandler)
	reg := &fuzzRegistry{}
	srv := httptest.NewUnstartedServer(reg)
	// Each iteration's Service has its own HTTP transport; connections it
	// kept alive would pile up as open files over a long run.
	srv.Config.SetKeepAlivesEnabled(false)
	srv.Start()
	f.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")

	f.Fuzz(func(t *testing.T, top, b1, b2, b3 []byte) {
		reg.serve(top, b1, b2, b3)
		dir := memTempDir(t)
		st, err := metadata.Open(filepath.Join(dir, "meta.db"), metadata.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		s, err := New(Options{Root: dir, Store: st, RegistryConfigPath: filepath.Join(dir, "certs.d"), Log: quiet})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ref := host + "/fuzz:t"
		img, err := s.Pull(ctx, ref, nil)
		if ctx.Err() != nil {
			t.Fatalf("pull still running after 30s (%v)", err)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("pull failed without a message")
			}
			return
		}
		cfg, err := Config(img)
		if err != nil {
			t.Fatalf("recorded image's config does not decode: %v", err)
		}
		if !reg.has(img.ID) {
			t.Fatalf("image ID %s is not the digest of a blob the registry served", img.ID)
		}
		if len(img.ChainIDs) != len(cfg.RootFS.DiffIDs) {
			t.Fatalf("%d snapshots for %d layers", len(img.ChainIDs), len(cfg.RootFS.DiffIDs))
		}
		for _, c := range img.ChainIDs {
			if _, err := s.Snapshots().Stat(digest.Digest(c)); err != nil {
				t.Fatalf("snapshot %s of the recorded image: %v", c, err)
			}
		}
		got, err := s.Get(ref)
		if err != nil || got.ID != img.ID {
			t.Fatalf("Get(%s) = %s, %v; want %s", ref, got.ID, err, img.ID)
		}
	})
}

const (
	ociManifest    = "application/vnd.oci.image.manifest.v1+json"
	ociIndex       = "application/vnd.oci.image.index.v1+json"
	dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	dockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// fuzzRegistry answers the registry API from the current input: the tag
// "t" is the first blob, and every blob is served by its digest as a
// manifest and as a blob.
type fuzzRegistry struct {
	mu    sync.Mutex
	top   []byte
	blobs map[string][]byte
}

func (r *fuzzRegistry) serve(top []byte, blobs ...[]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.top = top
	r.blobs = map[string][]byte{sha256Of(top): top}
	for _, b := range blobs {
		r.blobs[sha256Of(b)] = b
	}
}

func (r *fuzzRegistry) has(d string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.blobs[d]
	return ok
}

func (r *fuzzRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	top, blobs := r.top, r.blobs
	r.mu.Unlock()
	path := req.URL.Path
	if path == "/v2/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	var body []byte
	var ok, manifest bool
	switch {
	case path == "/v2/fuzz/manifests/t":
		body, ok, manifest = top, true, true
	case strings.HasPrefix(path, "/v2/fuzz/manifests/"):
		body, ok = blobs[strings.TrimPrefix(path, "/v2/fuzz/manifests/")]
		manifest = true
	case strings.HasPrefix(path, "/v2/fuzz/blobs/"):
		body, ok = blobs[strings.TrimPrefix(path, "/v2/fuzz/blobs/")]
	}
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}`)
		return
	}
	if manifest {
		// What a registry says the manifest is: its own mediaType field.
		var m struct {
			MediaType string `json:"mediaType"`
		}
		json.Unmarshal(body, &m)
		if m.MediaType == "" {
			m.MediaType = ociManifest
		}
		w.Header().Set("Content-Type", m.MediaType)
		w.Header().Set("Docker-Content-Digest", sha256Of(body))
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if req.Method != http.MethodHead {
		w.Write(body)
	}
}

func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func desc(mt string, b []byte) map[string]any {
	return map[string]any{"mediaType": mt, "digest": sha256Of(b), "size": len(b)}
}

func mustJSON(f *testing.F, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func tarGz(f *testing.F, files map[string]string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg})
		tw.Write([]byte(content))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func gunzip(f *testing.F, b []byte) []byte {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		f.Fatal(err)
	}
	var out bytes.Buffer
	out.ReadFrom(r)
	return out.Bytes()
}

// memTempDir is a temporary directory in memory where the system has one,
// so a fuzz run measures the code rather than the disk's flushes.
func memTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "corral-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
