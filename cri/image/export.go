package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/registry"
	"github.com/corral-runtime/corral/metadata"
	"github.com/opencontainers/go-digest"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ArchiveFormat is the kind of archive Export writes.
type ArchiveFormat string

// The archive formats, named as skopeo names its transports.
const (
	// FormatOCI is an OCI image layout in a tar (skopeo's oci-archive:):
	// the manifests, configs and layers exactly as stored, so digests
	// stay those of the registry.
	FormatOCI ArchiveFormat = "oci-archive"
	// FormatDocker is what `docker save` writes and `docker load` reads
	// (skopeo's docker-archive:): uncompressed layers, tags in
	// manifest.json.
	FormatDocker ArchiveFormat = "docker-archive"
)

// ParseArchiveFormat accepts "oci-archive" ("oci") or "docker-archive"
// ("docker").
func ParseArchiveFormat(s string) (ArchiveFormat, error) {
	switch s {
	case "oci", string(FormatOCI):
		return FormatOCI, nil
	case "docker", string(FormatDocker):
		return FormatDocker, nil
	}
	return "", fmt.Errorf("archive format %q: use %s or %s: %w", s, FormatOCI, FormatDocker, errdefs.ErrInvalidArgument)
}

// exportImage is one image to export and the names to give it.
type exportImage struct {
	rec   metadata.Image
	names []string
}

// Export writes the images refs name to w as one archive in format. A
// ref naming a tag exports the image under that tag; one naming the image
// by ID or digest exports it under all its tags.
func (s *Service) Export(ctx context.Context, w io.Writer, refs []string, format ArchiveFormat) error {
	if len(refs) == 0 {
		return fmt.Errorf("export: no image named: %w", errdefs.ErrInvalidArgument)
	}
	var imgs []exportImage
	for _, ref := range refs {
		rec, err := s.Get(ref)
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		names := rec.RepoTags
		if n, err := normalizedTag(ref); err == nil && slices.Contains(rec.RepoTags, n) {
			names = []string{n}
		}
		imgs = append(imgs, exportImage{rec, names})
	}
	// The blobs stay while they are written, whatever a removal does.
	var keep []string
	for _, img := range imgs {
		keep = append(keep, img.rec.ID, img.rec.ManifestDigest)
		keep = append(keep, strings.Split(img.rec.Extra[extraLayers], ",")...)
	}
	release := s.hold(keep)
	defer release()

	tw := tar.NewWriter(w)
	aw := &archiveWriter{tw: tw, ctx: ctx, written: map[string]bool{}}
	var err error
	switch format {
	case FormatOCI:
		err = s.exportOCI(aw, imgs)
	case FormatDocker:
		err = s.exportDocker(aw, imgs)
	default:
		_, err = ParseArchiveFormat(string(format))
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return tw.Close()
}

// normalizedTag normalizes ref if it is a reference with a tag.
func normalizedTag(ref string) (string, error) {
	if strings.Contains(ref, "@") {
		return "", errdefs.ErrInvalidArgument
	}
	return registry.Normalize(ref)
}

// exportOCI writes an OCI image layout: oci-layout, the blobs, and an
// index.json with one entry per image and name, as containerd names them
// (io.containerd.image.name the full reference, ref.name the tag).
func (s *Service) exportOCI(aw *archiveWriter, imgs []exportImage) error {
	if err := aw.file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := aw.dir("blobs/"); err != nil {
		return err
	}
	if err := aw.dir("blobs/sha256/"); err != nil {
		return err
	}
	index := imagespec.Index{MediaType: imagespec.MediaTypeImageIndex, Manifests: []imagespec.Descriptor{}}
	index.SchemaVersion = 2
	for _, img := range imgs {
		manifest, err := s.readBlob(img.rec.ManifestDigest)
		if err != nil {
			return err
		}
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		json.Unmarshal(manifest, &probe)
		mt := probe.MediaType
		if mt == "" {
			mt = imagespec.MediaTypeImageManifest
		}
		for _, b := range append([]string{img.rec.ID}, layersOf(img.rec)...) {
			if err := s.writeBlob(aw, b); err != nil {
				return fmt.Errorf("image %s: %w", img.rec.ID, err)
			}
		}
		if err := s.writeBlob(aw, img.rec.ManifestDigest); err != nil {
			return err
		}
		desc := imagespec.Descriptor{MediaType: mt, Digest: digest.Digest(img.rec.ManifestDigest), Size: int64(len(manifest))}
		if len(img.names) == 0 {
			index.Manifests = append(index.Manifests, desc)
		}
		for _, n := range img.names {
			d := desc
			d.Annotations = map[string]string{annotationImageName: n, annotationRefName: tagOf(n)}
			index.Manifests = append(index.Manifests, d)
		}
	}
	b, err := json.Marshal(index)
	if err != nil {
		return err
	}
	return aw.file("index.json", b)
}

// exportDocker writes what `docker save` does: each image's config as
// HEX.json, each layer uncompressed as DIFFID/layer.tar, and manifest.json
// tying them to the tags.
func (s *Service) exportDocker(aw *archiveWriter, imgs []exportImage) error {
	var entries []dockerManifestEntry
	for _, img := range imgs {
		cfg, err := s.readBlob(img.rec.ID)
		if err != nil {
			return err
		}
		diffIDs, err := configDiffIDs(cfg, len(layersOf(img.rec)), "image "+img.rec.ID)
		if err != nil {
			return err
		}
		configName := strings.TrimPrefix(img.rec.ID, "sha256:") + ".json"
		if err := aw.file(configName, cfg); err != nil {
			return err
		}
		e := dockerManifestEntry{Config: configName, RepoTags: []string{}}
		for i, blob := range layersOf(img.rec) {
			name := strings.TrimPrefix(diffIDs[i], "sha256:") + "/layer.tar"
			e.Layers = append(e.Layers, name)
			if err := s.writeLayerTar(aw, name, blob, diffIDs[i]); err != nil {
				return fmt.Errorf("image %s: layer %d: %w", img.rec.ID, i, err)
			}
		}
		for _, n := range img.names {
			e.RepoTags = append(e.RepoTags, familiarName(n))
		}
		entries = append(entries, e)
	}
	b, err := json.Marshal(entries)
	if err != nil {
		return err
	}
	return aw.file("manifest.json", b)
}

// writeLayerTar writes layer blob, decompressed, as name. The uncompressed
// size must be known before the tar header, so the layer is decompressed
// into a temporary file first; its digest must be the diff ID.
func (s *Service) writeLayerTar(aw *archiveWriter, name, blob, diffID string) error {
	if aw.written[name] {
		return nil
	}
	rc, err := s.openBlob(blob)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr, err := decompressStream(rc)
	if err != nil {
		return err
	}
	defer tr.Close()
	tmp, err := os.CreateTemp(s.content.ingestDir(), "export-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	d := digest.SHA256.Digester()
	n, err := io.Copy(io.MultiWriter(tmp, d.Hash()), ctxReader{aw.ctx, tr})
	if err != nil {
		return fmt.Errorf("decompress %s: %w", blob, err)
	}
	if d.Digest().String() != diffID {
		return fmt.Errorf("layer %s decompresses to %s, its diff ID is %s: %w", blob, d.Digest(), diffID, errdefs.ErrDataLoss)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := aw.dir(name[:strings.LastIndex(name, "/")+1]); err != nil {
		return err
	}
	return aw.stream(name, n, tmp)
}

// writeBlob writes a blob of the content store under blobs/sha256/.
func (s *Service) writeBlob(aw *archiveWriter, d string) error {
	name := blobName(d)
	if aw.written[name] {
		return nil
	}
	rc, err := s.openBlob(d)
	if err != nil {
		return err
	}
	defer rc.Close()
	fi, err := rc.(*os.File).Stat()
	if err != nil {
		return err
	}
	return aw.stream(name, fi.Size(), rc)
}

// openBlob opens a stored blob, saying why one an image needs can be
// missing.
func (s *Service) openBlob(d string) (io.ReadCloser, error) {
	rc, err := s.content.open(d)
	if errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("blob %s is not in the store: its layer was unpacked from another image's copy; pull the image again to export it: %w", d, errdefs.ErrFailedPrecondition)
	}
	return rc, err
}

func (s *Service) readBlob(d string) ([]byte, error) {
	rc, err := s.openBlob(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, maxArchiveJSON))
}

// layersOf lists an image record's layer blobs, base first.
func layersOf(rec metadata.Image) []string {
	if rec.Extra[extraLayers] == "" {
		return nil
	}
	return strings.Split(rec.Extra[extraLayers], ",")
}

// tagOf is the tag of a normalized reference ("" if it has none).
func tagOf(ref string) string {
	if strings.Contains(ref, "@") {
		return ""
	}
	if colon := strings.LastIndex(ref, ":"); colon > strings.LastIndex(ref, "/") {
		return ref[colon+1:]
	}
	return ""
}

// familiarName is how docker writes a docker.io name: "busybox:latest",
// "user/app:1"; other registries keep their host.
func familiarName(ref string) string {
	rest, ok := strings.CutPrefix(ref, "docker.io/")
	if !ok {
		return ref
	}
	return strings.TrimPrefix(rest, "library/")
}

// archiveWriter writes tar entries with fixed owners, modes and times, so
// that an archive of the same images is the same bytes.
type archiveWriter struct {
	tw      *tar.Writer
	ctx     context.Context
	written map[string]bool
}

// archiveTime is the modification time of every entry.
var archiveTime = time.Unix(0, 0).UTC()

func (aw *archiveWriter) dir(name string) error {
	if aw.written[name] {
		return nil
	}
	aw.written[name] = true
	return aw.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: archiveTime, Format: tar.FormatPAX})
}

func (aw *archiveWriter) file(name string, b []byte) error {
	return aw.stream(name, int64(len(b)), strings.NewReader(string(b)))
}

func (aw *archiveWriter) stream(name string, size int64, r io.Reader) error {
	if err := aw.ctx.Err(); err != nil {
		return err
	}
	aw.written[name] = true
	if err := aw.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: archiveTime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	n, err := io.Copy(aw.tw, ctxReader{aw.ctx, r})
	if err == nil && n != size {
		err = errors.New("the file changed while it was written")
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
