package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// FuzzArchive feeds arbitrary bytes to the archive reader and the
// docker-archive and OCI layout parsers, the code that reads untrusted
// archives for `corralctl images import`. Whatever the bytes, nothing may
// panic, every file kept must be inside the spool directory, and closing
// the archive leaves nothing behind.
func FuzzArchive(f *testing.F) {
	// Small seeds: the fuzzer's minimization of large inputs takes minutes.
	img := testImageSized(f, 1, 64, nodePlatform())
	f.Add(dockerArchive(f, "example.com/app:1", img))
	f.Add(ociArchive(f, func(p layout.Path) error {
		return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "app:1"}))
	}))
	f.Add(tarOf(f,
		tarEntry{name: "manifest.json", body: `[{"Config":"c.json","RepoTags":["x:1"],"Layers":["l/layer.tar"]}]`},
		tarEntry{name: "c.json", body: `{"rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("a", 64) + `"]}}`},
		tarEntry{name: "l/layer.tar", link: "../blob", typ: tar.TypeSymlink},
		tarEntry{name: "blob", body: "layer"},
	))
	f.Add(tarOf(f,
		tarEntry{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`},
		tarEntry{name: "index.json", body: `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":2}]}`},
	))
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		a, err := readArchive(context.Background(), bytes.NewReader(data), parent)
		if err != nil {
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Fatalf("a failed read left %v", entries)
			}
			return
		}
		for name, file := range a.files {
			if rel, err := filepath.Rel(a.dir, file.path); err != nil || strings.HasPrefix(rel, "..") {
				t.Fatalf("%s spooled outside the archive's directory: %s", name, file.path)
			}
		}
		a.images(nodePlatform(), func(string) bool { return false })
		a.close()
		if entries, _ := os.ReadDir(parent); len(entries) != 0 {
			t.Fatalf("close left %v", entries)
		}
	})
}
