package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
)

// testImage is a random image of layers layers for platform p.
func testImage(t testing.TB, layers int, p v1.Platform) v1.Image {
	t.Helper()
	return testImageSized(t, layers, 16<<10, p)
}

// testImageSized is testImage with layers of about size bytes.
func testImageSized(t testing.TB, layers int, size int64, p v1.Platform) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, RootFS: cf.RootFS})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// dockerArchive is what go-containerregistry's tarball (docker save's
// format, gzip layers) writes for img tagged ref.
func dockerArchive(t testing.TB, ref string, img v1.Image) []byte {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ociArchive is an OCI layout holding img (or an index) under the given
// annotations, in a tar as skopeo's oci-archive: writes it.
func ociArchive(t testing.TB, add func(layout.Path) error) []byte {
	t.Helper()
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := add(p); err != nil {
		t.Fatal(err)
	}
	return tarDir(t, dir)
}

func tarDir(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = rel
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}

// tarEntry is one entry of a hand-made archive.
type tarEntry struct {
	name, body, link string
	typ              byte
}

func tarOf(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Size: int64(len(e.body)), Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

func mustDigest(t testing.TB, f func() (v1.Hash, error)) string {
	t.Helper()
	h, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func TestImportDockerArchive(t *testing.T) {
	s := newTestService(t, 0)
	img := testImage(t, 3, nodePlatform())
	recs, err := s.Import(context.Background(), bytes.NewReader(dockerArchive(t, "example.com/team/app:1.0", img)))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("imported %d images, want 1", len(recs))
	}
	rec := recs[0]
	if want := mustDigest(t, img.ConfigName); rec.ID != want {
		t.Errorf("ID %s, want the config digest %s", rec.ID, want)
	}
	if !slices.Equal(rec.RepoTags, []string{"example.com/team/app:1.0"}) || len(rec.RepoDigests) != 0 {
		t.Errorf("tags %v digests %v: want the archive's tag and no repo digest (the manifest is made up)", rec.RepoTags, rec.RepoDigests)
	}
	if len(rec.ChainIDs) != 3 {
		t.Fatalf("chain IDs %v", rec.ChainIDs)
	}
	for _, c := range rec.ChainIDs {
		if _, err := s.snaps.Stat(digest.Digest(c)); err != nil {
			t.Errorf("snapshot %s: %v", c, err)
		}
	}
	got, err := s.Get("example.com/team/app:1.0")
	if err != nil || got.ID != rec.ID {
		t.Errorf("Get by tag: %v %v", got.ID, err)
	}
	if !s.content.has(rec.ManifestDigest) || !s.content.has(rec.ID) {
		t.Error("manifest or config not stored")
	}
	for _, l := range layersOf(rec) {
		if !s.content.has(l) {
			t.Errorf("layer blob %s not stored", l)
		}
	}
	assertIngestEmpty(t, s)

	// The same archive again, gzip-compressed as `docker save | gzip`
	// makes it: the same image, nothing duplicated.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(dockerArchive(t, "example.com/team/app:1.1", img))
	zw.Close()
	recs, err = s.Import(context.Background(), &gz)
	if err != nil || len(recs) != 1 || recs[0].ID != rec.ID {
		t.Fatalf("gzip archive: %v %v", recs, err)
	}
	if got := recs[0].RepoTags; !slices.Equal(got, []string{"example.com/team/app:1.0", "example.com/team/app:1.1"}) {
		t.Errorf("tags after the second import: %v", got)
	}
}

func TestImportOCIArchive(t *testing.T) {
	s := newTestService(t, 0)
	img := testImage(t, 2, nodePlatform())
	data := ociArchive(t, func(p layout.Path) error {
		return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "registry.test:5000/corral/busybox:latest"}))
	})
	recs, err := s.Import(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("imported %d images", len(recs))
	}
	rec := recs[0]
	md := mustDigest(t, img.Digest)
	if rec.ManifestDigest != md || rec.ID != mustDigest(t, img.ConfigName) {
		t.Errorf("manifest %s ID %s; want the layout's %s", rec.ManifestDigest, rec.ID, md)
	}
	if !slices.Equal(rec.RepoTags, []string{"registry.test:5000/corral/busybox:latest"}) ||
		!slices.Equal(rec.RepoDigests, []string{"registry.test:5000/corral/busybox@" + md}) {
		t.Errorf("tags %v digests %v", rec.RepoTags, rec.RepoDigests)
	}
	if _, err := s.Get("registry.test:5000/corral/busybox@" + md); err != nil {
		t.Errorf("Get by repo digest: %v", err)
	}
	assertIngestEmpty(t, s)
}

// An index with images for this node and another platform: the node's is
// taken, named by the index's annotation; the other's blobs need not be
// there (skopeo copy without --all leaves them out).
func TestImportOCIIndexChoosesPlatform(t *testing.T) {
	s := newTestService(t, 0)
	mine := testImage(t, 1, nodePlatform())
	other := v1.Platform{OS: "linux", Architecture: "s390x"}
	if nodePlatform().Architecture == "s390x" {
		other.Architecture = "ppc64le"
	}
	theirs := testImage(t, 1, other)
	mp := nodePlatform()
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: theirs, Descriptor: v1.Descriptor{Platform: &other}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &mp}},
	)
	data := ociArchive(t, func(p layout.Path) error {
		if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"io.containerd.image.name": "docker.io/library/multi:1"})); err != nil {
			return err
		}
		// Drop the other platform's blobs.
		m, err := theirs.Manifest()
		if err != nil {
			return err
		}
		for _, l := range m.Layers {
			if err := p.RemoveBlob(l.Digest); err != nil {
				return err
			}
		}
		return p.RemoveBlob(mustHash(theirs.Digest))
	})
	recs, err := s.Import(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].ManifestDigest != mustDigest(t, mine.Digest) {
		t.Fatalf("imported %+v, want the node platform's image", recs)
	}
	if want := mustDigest(t, idx.Digest); recs[0].Extra[extraIndex] != want ||
		!slices.Equal(recs[0].RepoDigests, []string{"docker.io/library/multi@" + recs[0].ManifestDigest}) {
		t.Errorf("index %q digests %v", recs[0].Extra[extraIndex], recs[0].RepoDigests)
	}
	if !slices.Equal(recs[0].RepoTags, []string{"docker.io/library/multi:1"}) {
		t.Errorf("tags %v", recs[0].RepoTags)
	}

	// An archive with only the other platform's image imports nothing.
	data = ociArchive(t, func(p layout.Path) error { return p.AppendImage(theirs) })
	if _, err := s.Import(context.Background(), bytes.NewReader(data)); !errdefs.IsNotFound(err) {
		t.Errorf("other platform only: %v, want NotFound", err)
	}
}

func mustHash(f func() (v1.Hash, error)) v1.Hash {
	h, err := f()
	if err != nil {
		panic(err)
	}
	return h
}

// A docker-archive as docker 25 and skopeo write it: layers reached through
// symlinks and hard links, uncompressed.
func TestImportDockerArchiveLinks(t *testing.T) {
	s := newTestService(t, 0)
	img := testImage(t, 2, nodePlatform())
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	var entries []tarEntry
	var names []string
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		d := digest.FromBytes(b).Encoded()
		entries = append(entries, tarEntry{name: "blobs/sha256/" + d, body: string(b)})
		if i == 0 {
			entries = append(entries, tarEntry{name: "l0/layer.tar", link: "../blobs/sha256/" + d, typ: tar.TypeSymlink})
			names = append(names, "l0/layer.tar")
		} else {
			entries = append(entries, tarEntry{name: "l1/layer.tar", link: "blobs/sha256/" + d, typ: tar.TypeLink})
			names = append(names, "./l1/layer.tar")
		}
	}
	manifest, _ := json.Marshal([]dockerManifestEntry{{Config: "config.json", RepoTags: []string{"busybox:linked"}, Layers: names}})
	entries = append([]tarEntry{{name: "manifest.json", body: string(manifest)}, {name: "config.json", body: string(cfg)}}, entries...)
	recs, err := s.Import(context.Background(), bytes.NewReader(tarOf(t, entries...)))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || !slices.Equal(recs[0].RepoTags, []string{"docker.io/library/busybox:linked"}) || len(recs[0].ChainIDs) != 2 {
		t.Fatalf("imported %+v", recs)
	}
}

// Broken and hostile archives fail with the right kind, store nothing and
// leave nothing behind.
func TestImportRejects(t *testing.T) {
	img := testImage(t, 1, nodePlatform())
	good := ociArchive(t, func(p layout.Path) error { return p.AppendImage(img) })
	layer := mustHash(func() (v1.Hash, error) { ls, _ := img.Layers(); return ls[0].Digest() })
	corrupt := func(name string, edit func([]byte) []byte) []byte {
		var out bytes.Buffer
		tw := tar.NewWriter(&out)
		tr := tar.NewReader(bytes.NewReader(good))
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			b, _ := io.ReadAll(tr)
			if hdr.Name == name {
				b = edit(b)
				if b == nil {
					continue
				}
				hdr.Size = int64(len(b))
			}
			tw.WriteHeader(hdr)
			tw.Write(b)
		}
		tw.Close()
		return out.Bytes()
	}
	flip := func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 1; return c }
	drop := func([]byte) []byte { return nil }
	badDiffIDs := func() []byte {
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.RootFS.DiffIDs[0] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
		bad, err := mutate.ConfigFile(img, cf)
		if err != nil {
			t.Fatal(err)
		}
		return ociArchive(t, func(p layout.Path) error { return p.AppendImage(bad) })
	}()
	for _, tc := range []struct {
		name string
		data []byte
		kind func(error) bool
	}{
		{"not a tar", []byte("this is no archive"), errdefs.IsInvalidArgument},
		{"empty tar", tarOf(t), errdefs.IsInvalidArgument},
		{"tampered layer", corrupt("blobs/sha256/"+layer.Hex, flip), errdefs.IsDataLoss},
		{"missing layer", corrupt("blobs/sha256/"+layer.Hex, drop), errdefs.IsInvalidArgument},
		{"missing index", corrupt("index.json", drop), errdefs.IsInvalidArgument},
		{"broken index", corrupt("index.json", func([]byte) []byte { return []byte("{") }), errdefs.IsInvalidArgument},
		{"config diff IDs lie", badDiffIDs, errdefs.IsDataLoss},
		{"entry climbs out", tarOf(t, tarEntry{name: "../../etc/evil", body: "x"}), errdefs.IsInvalidArgument},
		{"duplicate entry", tarOf(t, tarEntry{name: "manifest.json", body: "[]"}, tarEntry{name: "./manifest.json", body: "[]"}), errdefs.IsInvalidArgument},
		{"docker manifest names a missing layer", tarOf(t,
			tarEntry{name: "manifest.json", body: `[{"Config":"c.json","RepoTags":["x:1"],"Layers":["nope/layer.tar"]}]`},
			tarEntry{name: "c.json", body: `{"rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("a", 64) + `"]}}`}), errdefs.IsInvalidArgument},
		{"symlink out of the archive", tarOf(t,
			tarEntry{name: "manifest.json", body: `[{"Config":"c.json","Layers":[]}]`},
			tarEntry{name: "c.json", link: "../../../etc/passwd", typ: tar.TypeSymlink}), errdefs.IsInvalidArgument},
		{"link loop", tarOf(t,
			tarEntry{name: "manifest.json", body: `[{"Config":"a","Layers":[]}]`},
			tarEntry{name: "a", link: "b", typ: tar.TypeSymlink}, tarEntry{name: "b", link: "a", typ: tar.TypeSymlink}), errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestService(t, 0)
			_, err := s.Import(context.Background(), bytes.NewReader(tc.data))
			if !tc.kind(err) {
				t.Fatalf("error %v: wrong kind", err)
			}
			if imgs, _ := s.List(); len(imgs) != 0 {
				t.Errorf("recorded %d images", len(imgs))
			}
			if err := s.GC(context.Background()); err != nil {
				t.Fatal(err)
			}
			if blobs, _ := s.content.list(); len(blobs) != 0 {
				t.Errorf("blobs left after GC: %v", blobs)
			}
			assertIngestEmpty(t, s)
		})
	}
}

func assertIngestEmpty(t *testing.T, s *Service) {
	t.Helper()
	if entries, _ := os.ReadDir(s.content.ingestDir()); len(entries) != 0 {
		t.Errorf("left in ingest: %v", entries)
	}
}

// Export writes archives that go-containerregistry's readers (an
// independent implementation) read back to the same image, and that Import
// loads again.
func TestExportRoundTrip(t *testing.T) {
	s := newTestService(t, 0)
	img := testImage(t, 2, nodePlatform())
	if _, err := s.Import(context.Background(), bytes.NewReader(ociArchive(t, func(p layout.Path) error {
		return p.AppendImage(img, layout.WithAnnotations(map[string]string{"io.containerd.image.name": "docker.io/library/app:2"}))
	}))); err != nil {
		t.Fatal(err)
	}
	want := mustDigest(t, img.Digest)
	wantID := mustDigest(t, img.ConfigName)

	t.Run("oci-archive", func(t *testing.T) {
		var buf bytes.Buffer
		if err := s.Export(context.Background(), &buf, []string{"app:2"}, FormatOCI); err != nil {
			t.Fatal(err)
		}
		dir := untar(t, buf.Bytes())
		ii, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatal(err)
		}
		im, err := ii.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != want ||
			im.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/app:2" ||
			im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "2" {
			t.Fatalf("index.json: %+v", im.Manifests)
		}
		got, err := ii.Image(im.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateImage(got); err != nil {
			t.Fatal(err)
		}
		s2 := newTestService(t, 0)
		recs, err := s2.Import(context.Background(), bytes.NewReader(buf.Bytes()))
		if err != nil || len(recs) != 1 || recs[0].ManifestDigest != want || !slices.Equal(recs[0].RepoTags, []string{"docker.io/library/app:2"}) {
			t.Fatalf("re-import: %+v %v", recs, err)
		}
		// The same images, the same bytes.
		var again bytes.Buffer
		s.Export(context.Background(), &again, []string{"app:2"}, FormatOCI)
		if !bytes.Equal(again.Bytes(), buf.Bytes()) {
			t.Error("two exports of one image differ")
		}
	})

	t.Run("docker-archive", func(t *testing.T) {
		var buf bytes.Buffer
		if err := s.Export(context.Background(), &buf, []string{wantID}, FormatDocker); err != nil {
			t.Fatal(err)
		}
		tag, _ := name.NewTag("app:2")
		got, err := tarball.Image(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil }, &tag)
		if err != nil {
			t.Fatal(err)
		}
		if id := mustDigest(t, got.ConfigName); id != wantID {
			t.Errorf("config digest %s, want %s", id, wantID)
		}
		if err := validateImage(got); err != nil {
			t.Fatal(err)
		}
		// docker save's layers: DIFFID/layer.tar, uncompressed, so their
		// digest is their diff ID.
		dir := untar(t, buf.Bytes())
		cf, _ := img.ConfigFile()
		for _, d := range cf.RootFS.DiffIDs {
			b, err := os.ReadFile(filepath.Join(dir, d.Hex, "layer.tar"))
			if err != nil || digest.FromBytes(b).String() != d.String() {
				t.Errorf("layer %s: %v, or not the uncompressed layer", d, err)
			}
		}
		s2 := newTestService(t, 0)
		recs, err := s2.Import(context.Background(), bytes.NewReader(buf.Bytes()))
		if err != nil || len(recs) != 1 || recs[0].ID != wantID || !slices.Equal(recs[0].RepoTags, []string{"docker.io/library/app:2"}) {
			t.Fatalf("re-import: %+v %v", recs, err)
		}
	})

	if err := s.Export(context.Background(), io.Discard, []string{"nope:1"}, FormatOCI); !errdefs.IsNotFound(err) {
		t.Errorf("export of an unknown image: %v, want NotFound", err)
	}
	if _, err := ParseArchiveFormat("zip"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("format zip: %v", err)
	}
}

// validateImage reads every layer of img to its end, checking digests and
// diff IDs.
func validateImage(img v1.Image) error {
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		for _, open := range []func() (io.ReadCloser, error){l.Compressed, l.Uncompressed} {
			rc, err := open()
			if err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				return err
			}
			if err := rc.Close(); err != nil {
				return err
			}
		}
	}
	return nil
}

func untar(t *testing.T, data []byte) string {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		b, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
