package image

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/snapshot"
	"github.com/corral-runtime/corral/metadata"
	"github.com/opencontainers/go-digest"
)

// Import loads the images of an archive read from r: a docker-archive
// (`docker save`, `skopeo copy … docker-archive:`) or an OCI layout in a tar
// (`skopeo copy … oci-archive:`, `buildah push … oci-archive:`), plain or
// gzip- or zstd-compressed. It takes the images for this node's platform,
// checks every blob's digest and size, stores the blobs, unpacks the layers
// as a pull does, and records each image under the names the archive gives
// it, so that the kubelet finds them without a registry. It returns the
// records written. An archive that cannot be read whole imports nothing.
func (s *Service) Import(ctx context.Context, r io.Reader) (_ []metadata.Image, retErr error) {
	defer func() { s.metrics.ObserveImport(retErr) }()
	a, err := readArchive(ctx, r, s.content.ingestDir())
	if err != nil {
		return nil, err
	}
	defer a.close()
	found, err := a.images(s.platform, s.content.has)
	if err != nil {
		return nil, err
	}
	var recs []metadata.Image
	for _, img := range found {
		rec, err := s.importImage(ctx, a, img)
		if err != nil {
			return recs, fmt.Errorf("import %s: %w", img.description, err)
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// importImage stores and unpacks one image of an archive and records it.
func (s *Service) importImage(ctx context.Context, a *archive, img archiveImage) (metadata.Image, error) {
	start := time.Now()
	log := s.log.With("manifest", img.manifestDigest, "names", img.names)
	configDigest := img.configFile.digest
	keep := []string{img.manifestDigest, configDigest, img.index}
	var chains []digest.Digest
	var parent digest.Digest
	for _, l := range img.layers {
		parent = snapshot.ChainID(parent, digest.Digest(l.diffID))
		chains = append(chains, parent)
		keep = append(keep, l.digest, parent.String())
	}
	// Everything this import makes is in use until its record exists.
	release := s.hold(keep)
	defer release()

	if err := s.content.writeBytes(img.manifestDigest, img.manifest); err != nil {
		return metadata.Image{}, err
	}
	if err := s.adopt(img.configFile); err != nil {
		return metadata.Image{}, err
	}
	var size int64
	parent = ""
	var chainIDs, blobs []string
	for i, l := range img.layers {
		size += l.size
		blobs = append(blobs, l.digest)
		if l.file != nil {
			if err := s.adopt(l.file); err != nil {
				return metadata.Image{}, err
			}
		}
		blob := l.digest
		info, err := s.snaps.Unpack(ctx, parent, snapshot.Layer{
			DiffID:    digest.Digest(l.diffID),
			MediaType: l.mediaType,
			Digest:    digest.Digest(blob),
			Open: func(ctx context.Context) (io.ReadCloser, error) {
				return s.content.open(blob)
			},
		})
		if err != nil {
			return metadata.Image{}, fmt.Errorf("layer %d (%s): %w", i, blob, err)
		}
		if info.ChainID != chains[i] {
			return metadata.Image{}, fmt.Errorf("layer %d: chain ID %s, want %s: %w", i, info.ChainID, chains[i], errdefs.ErrDataLoss)
		}
		parent = info.ChainID
		chainIDs = append(chainIDs, info.ChainID.String())
	}

	rec := metadata.Image{
		ID:             configDigest,
		ManifestDigest: img.manifestDigest,
		Size:           int64(len(img.manifest)) + int64(len(img.config)) + size,
		Config:         img.config,
		ChainIDs:       chainIDs,
		CreatedAt:      time.Now(),
		Extra:          map[string]string{extraLayers: strings.Join(blobs, ","), extraImported: "true"},
	}
	if img.index != "" {
		rec.Extra[extraIndex] = img.index
	}
	for _, n := range img.names {
		var repo string
		if r, _, pinned := strings.Cut(stripTag(n), "@"); pinned {
			// A name pinned by digest is a repo digest, not a tag.
			repo = r
		} else {
			rec.RepoTags = appendNew(rec.RepoTags, n)
			repo = repoOf(n)
		}
		if img.registryDigest {
			rec.RepoDigests = appendNew(rec.RepoDigests, repo+"@"+img.manifestDigest)
		}
	}
	rec, err := s.record(stringer(strings.Join(img.names, ", ")), rec)
	if err != nil {
		return metadata.Image{}, err
	}
	log.Info("image imported", "id", rec.ID, "tags", rec.RepoTags, "layers", len(img.layers), "seconds", time.Since(start).Seconds())
	return rec, nil
}

// extraImported marks an image record that came from an archive, not a
// registry.
const extraImported = "imported"

// repoOf is a reference without its tag: "host/repo:tag" → "host/repo".
func repoOf(ref string) string {
	if colon := strings.LastIndex(ref, ":"); colon > strings.LastIndex(ref, "/") {
		return ref[:colon]
	}
	return ref
}

// adopt moves a spooled archive file into the content store, once: its
// digest was computed while it was read, so it needs no second pass.
func (s *Service) adopt(f *archiveFile) error {
	if f.adopted || s.content.has(f.digest) {
		return nil
	}
	final, err := s.content.path(f.digest)
	if err != nil {
		return err
	}
	if err := os.Rename(f.path, final); err != nil {
		return fmt.Errorf("store blob %s: %w", f.digest, err)
	}
	f.adopted = true
	return nil
}

// stringer lets a plain string name what record is about.
type stringer string

func (s stringer) String() string { return string(s) }
