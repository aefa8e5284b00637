package image

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types an archive's manifests and indexes come in.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	mediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar"
	mediaTypeDockerLayerGz  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// Annotations naming an image in an OCI layout's index.json.
const (
	// annotationImageName is containerd's (and docker 25's save): the full
	// reference.
	annotationImageName = "io.containerd.image.name"
	// annotationRefName is the OCI one; containerd writes the tag alone,
	// skopeo and buildah whatever followed the path ("name:tag").
	annotationRefName = imagespec.AnnotationRefName
)

// archiveImage is one image of an archive, checked and ready to import.
type archiveImage struct {
	// names are the normalized references it is tagged with.
	names []string
	// manifest is the image manifest, as found or, for a docker-archive,
	// as made from manifest.json.
	manifest       []byte
	manifestDigest string
	// registryDigest tells whether the manifest came in the archive, as
	// stored in a registry or pushed to one (OCI layouts), rather than
	// made up from a docker-archive's manifest.json: then repo@digest
	// names it, as containerd records it for imported images. skopeo may
	// have converted a registry's docker manifest to OCI on the way, so
	// it is not always the digest the original registry serves.
	registryDigest bool
	// index is the digest of the index the manifest was chosen from.
	index       string
	config      []byte
	configFile  *archiveFile
	layers      []archiveLayer
	description string // for messages: where in the archive it is
}

// archiveLayer is one layer of an archiveImage.
type archiveLayer struct {
	file      *archiveFile // nil when not in the archive (then in the store)
	digest    string
	size      int64
	mediaType string
	diffID    string
}

// images finds the archive's images for platform: an OCI layout
// (oci-layout and index.json) or, failing that, a docker-archive
// (manifest.json, as `docker save` writes it).
func (a *archive) images(platform v1.Platform, inStore func(digest string) bool) ([]archiveImage, error) {
	switch {
	case a.has("index.json"):
		imgs, err := a.ociImages(platform, inStore)
		if err != nil {
			return nil, err
		}
		// docker 25 writes both; its manifest.json has the tags when
		// index.json's annotations do not.
		if a.has("manifest.json") {
			if named, err := a.dockerNames(); err == nil {
				for i := range imgs {
					if len(imgs[i].names) == 0 {
						imgs[i].names = named[strings.TrimPrefix(imgs[i].configFile.digest, "sha256:")]
					}
				}
			}
		}
		return imgs, nil
	case a.has("manifest.json"):
		return a.dockerImages()
	}
	return nil, fmt.Errorf("archive: neither index.json (an OCI layout or oci-archive) nor manifest.json (a docker-archive, as docker save writes): %w", errdefs.ErrInvalidArgument)
}

// ociImages reads an OCI image layout's index.json: each entry is an image
// manifest or an index to choose the platform's manifest from.
func (a *archive) ociImages(platform v1.Platform, inStore func(string) bool) ([]archiveImage, error) {
	var index imagespec.Index
	if err := a.readJSON("index.json", &index); err != nil {
		return nil, err
	}
	if index.SchemaVersion != 2 {
		return nil, fmt.Errorf("archive: index.json has schemaVersion %d, want 2: %w", index.SchemaVersion, errdefs.ErrInvalidArgument)
	}
	var imgs []archiveImage
	var skipped []string
	for i, desc := range index.Manifests {
		where := fmt.Sprintf("index.json manifests[%d] (%s)", i, desc.Digest)
		names := ociNames(desc.Annotations)
		img, ok, err := a.ociEntry(desc, platform, inStore, where, 0)
		if err != nil {
			return nil, err
		}
		if !ok {
			skipped = append(skipped, where)
			continue
		}
		img.names = names
		imgs = append(imgs, img)
	}
	if len(imgs) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("archive: no image for %s: %s: %w", platformString(platform), strings.Join(skipped, ", "), errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("archive: index.json lists no image: %w", errdefs.ErrInvalidArgument)
	}
	return imgs, nil
}

// ociEntry resolves one descriptor to the platform's image: ok is false
// when it is for another platform.
func (a *archive) ociEntry(desc imagespec.Descriptor, platform v1.Platform, inStore func(string) bool, where string, depth int) (archiveImage, bool, error) {
	if depth > 4 {
		return archiveImage{}, false, fmt.Errorf("archive: %s: indexes nested too deep: %w", where, errdefs.ErrInvalidArgument)
	}
	if desc.Platform != nil && !platformMatches(*desc.Platform, platform) {
		return archiveImage{}, false, nil
	}
	f, err := a.blob(desc.Digest.String(), desc.Size)
	if err != nil {
		return archiveImage{}, false, err
	}
	if f == nil {
		return archiveImage{}, false, fmt.Errorf("archive: %s: blob %s is not in the archive: %w", where, desc.Digest, errdefs.ErrInvalidArgument)
	}
	raw, err := a.readSmall(blobName(f.digest))
	if err != nil {
		return archiveImage{}, false, err
	}
	var probe struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
		Config    json.RawMessage   `json:"config"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return archiveImage{}, false, fmt.Errorf("archive: %s: %v: %w", where, err, errdefs.ErrInvalidArgument)
	}
	mt := probe.MediaType
	if mt == "" {
		mt = desc.MediaType
	}
	switch {
	case mt == imagespec.MediaTypeImageIndex || mt == mediaTypeDockerList || (mt == "" && probe.Manifests != nil):
		var idx imagespec.Index
		if err := json.Unmarshal(raw, &idx); err != nil {
			return archiveImage{}, false, fmt.Errorf("archive: %s: %v: %w", where, err, errdefs.ErrInvalidArgument)
		}
		for i, d := range idx.Manifests {
			img, ok, err := a.ociEntry(d, platform, inStore, fmt.Sprintf("%s manifests[%d] (%s)", where, i, d.Digest), depth+1)
			// Another platform's manifests are often left out of an
			// archive (skopeo copy without --all); ociEntry passes over
			// them by their descriptor before looking for their blob.
			if err != nil {
				return archiveImage{}, false, err
			}
			if ok {
				if img.index == "" {
					img.index = f.digest
				}
				return img, true, nil
			}
		}
		return archiveImage{}, false, nil
	case mt == imagespec.MediaTypeImageManifest || mt == mediaTypeDockerManifest || (mt == "" && probe.Config != nil):
		img, err := a.ociManifest(raw, f.digest, inStore, where)
		if err != nil {
			return archiveImage{}, false, err
		}
		// A manifest without a platform in its descriptor says what it is
		// for in its config.
		var cfg imagespec.Image
		if err := json.Unmarshal(img.config, &cfg); err != nil {
			return archiveImage{}, false, fmt.Errorf("archive: %s: image config: %v: %w", where, err, errdefs.ErrInvalidArgument)
		}
		if desc.Platform == nil && !platformMatches(cfg.Platform, platform) {
			return archiveImage{}, false, nil
		}
		return img, true, nil
	}
	return archiveImage{}, false, fmt.Errorf("archive: %s: media type %q is neither an image manifest nor an index: %w", where, mt, errdefs.ErrNotImplemented)
}

// ociManifest checks an image manifest against the archive: its config
// and every layer there (or already in the store) with the sizes and
// digests it names.
func (a *archive) ociManifest(raw []byte, manifestDigest string, inStore func(string) bool, where string) (archiveImage, error) {
	var m imagespec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return archiveImage{}, fmt.Errorf("archive: %s: %v: %w", where, err, errdefs.ErrInvalidArgument)
	}
	if m.SchemaVersion != 2 {
		return archiveImage{}, fmt.Errorf("archive: %s: manifest schemaVersion %d: only schema 2 is supported: %w", where, m.SchemaVersion, errdefs.ErrNotImplemented)
	}
	cf, err := a.blob(m.Config.Digest.String(), m.Config.Size)
	if err != nil {
		return archiveImage{}, err
	}
	if cf == nil {
		return archiveImage{}, fmt.Errorf("archive: %s: image config %s is not in the archive: %w", where, m.Config.Digest, errdefs.ErrInvalidArgument)
	}
	config, err := a.readSmall(blobName(cf.digest))
	if err != nil {
		return archiveImage{}, err
	}
	img := archiveImage{
		manifest: raw, manifestDigest: manifestDigest, registryDigest: true,
		config: config, configFile: cf, description: where,
	}
	diffIDs, err := configDiffIDs(config, len(m.Layers), where)
	if err != nil {
		return archiveImage{}, err
	}
	for i, l := range m.Layers {
		if _, err := declaredLayerMediaType(l.MediaType); err != nil {
			return archiveImage{}, fmt.Errorf("archive: %s: layer %d: %w", where, i, err)
		}
		lf, err := a.blob(l.Digest.String(), l.Size)
		if err != nil {
			return archiveImage{}, err
		}
		if lf == nil && !inStore(l.Digest.String()) {
			return archiveImage{}, fmt.Errorf("archive: %s: layer %d (%s) is not in the archive: %w", where, i, l.Digest, errdefs.ErrInvalidArgument)
		}
		img.layers = append(img.layers, archiveLayer{file: lf, digest: l.Digest.String(), size: l.Size, mediaType: l.MediaType, diffID: diffIDs[i]})
	}
	return img, nil
}

// configDiffIDs reads rootfs.diff_ids from an image config; there must be
// one per layer.
func configDiffIDs(config []byte, layers int, where string) ([]string, error) {
	var cfg imagespec.Image
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("archive: %s: image config: %v: %w", where, err, errdefs.ErrInvalidArgument)
	}
	if len(cfg.RootFS.DiffIDs) != layers {
		return nil, fmt.Errorf("archive: %s: %d layers, but the image config has %d diff IDs: %w", where, layers, len(cfg.RootFS.DiffIDs), errdefs.ErrInvalidArgument)
	}
	out := make([]string, layers)
	for i, d := range cfg.RootFS.DiffIDs {
		if err := d.Validate(); err != nil || d.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("archive: %s: diff ID %q is not a sha256 digest: %w", where, d, errdefs.ErrInvalidArgument)
		}
		out[i] = d.String()
	}
	return out, nil
}

// dockerManifestEntry is one image of a docker-archive's manifest.json.
type dockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// dockerImages reads a docker-archive: manifest.json names each image's
// config file, tags and layer files. The manifest a registry would serve is
// not in the archive; one is made, with the layers as they are stored.
func (a *archive) dockerImages() ([]archiveImage, error) {
	var entries []dockerManifestEntry
	if err := a.readJSON("manifest.json", &entries); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("archive: manifest.json lists no image: %w", errdefs.ErrInvalidArgument)
	}
	var imgs []archiveImage
	for i, e := range entries {
		where := fmt.Sprintf("manifest.json[%d] (%s)", i, e.Config)
		cname, err := archiveName(e.Config)
		if err != nil {
			return nil, err
		}
		cf, ok := a.files[cname]
		if !ok {
			return nil, fmt.Errorf("archive: %s: config %q is not in the archive: %w", where, e.Config, errdefs.ErrInvalidArgument)
		}
		config, err := a.readSmall(cname)
		if err != nil {
			return nil, err
		}
		diffIDs, err := configDiffIDs(config, len(e.Layers), where)
		if err != nil {
			return nil, err
		}
		img := archiveImage{config: config, configFile: cf, description: where}
		m := imagespec.Manifest{
			MediaType: mediaTypeDockerManifest,
			Config:    imagespec.Descriptor{MediaType: mediaTypeDockerConfig, Digest: digest.Digest(cf.digest), Size: cf.size},
		}
		m.SchemaVersion = 2
		for j, l := range e.Layers {
			lname, err := archiveName(l)
			if err != nil {
				return nil, err
			}
			lf, ok := a.files[lname]
			if !ok {
				return nil, fmt.Errorf("archive: %s: layer %q is not in the archive: %w", where, l, errdefs.ErrInvalidArgument)
			}
			comp, err := compressionOf(lf.path)
			if err != nil {
				return nil, err
			}
			mt := mediaTypeDockerLayer
			switch comp {
			case "gzip":
				mt = mediaTypeDockerLayerGz
			case "zstd":
				mt = imagespec.MediaTypeImageLayerZstd
			}
			m.Layers = append(m.Layers, imagespec.Descriptor{MediaType: mt, Digest: digest.Digest(lf.digest), Size: lf.size})
			img.layers = append(img.layers, archiveLayer{file: lf, digest: lf.digest, size: lf.size, mediaType: mt, diffID: diffIDs[j]})
		}
		raw, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		img.manifest, img.manifestDigest = raw, digest.FromBytes(raw).String()
		for _, t := range e.RepoTags {
			n, err := registry.Normalize(t)
			if err != nil {
				return nil, fmt.Errorf("archive: %s: tag %q: %w", where, t, err)
			}
			img.names = appendNew(img.names, n)
		}
		imgs = append(imgs, img)
	}
	return imgs, nil
}

// dockerNames maps config digests (hex) to the tags manifest.json gives
// them.
func (a *archive) dockerNames() (map[string][]string, error) {
	var entries []dockerManifestEntry
	if err := a.readJSON("manifest.json", &entries); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, e := range entries {
		cname, err := archiveName(e.Config)
		if err != nil {
			continue
		}
		cf, ok := a.files[cname]
		if !ok {
			continue
		}
		for _, t := range e.RepoTags {
			if n, err := registry.Normalize(t); err == nil {
				key := strings.TrimPrefix(cf.digest, "sha256:")
				out[key] = appendNew(out[key], n)
			}
		}
	}
	return out, nil
}

// ociNames reads the name an index.json entry gives its image:
// containerd's full-reference annotation, else the OCI ref.name when it is
// a reference ("repo:tag", "host/repo:tag"). A bare ref.name such as
// "latest" (containerd writes the tag alone there) names no repository and
// is left out.
func ociNames(annotations map[string]string) []string {
	for _, key := range []string{annotationImageName, annotationRefName} {
		v := annotations[key]
		if v == "" || (key == annotationRefName && !strings.ContainsAny(v, ":/@")) {
			continue
		}
		if n, err := registry.Normalize(v); err == nil {
			return []string{n}
		}
	}
	return nil
}

// platformMatches tells whether an image for have runs on want, the
// node's platform: same OS and architecture, and the variant if both name
// one.
func platformMatches(have imagespec.Platform, want v1.Platform) bool {
	if have.OS != "" && have.OS != want.OS {
		return false
	}
	if have.Architecture != "" && have.Architecture != want.Architecture {
		return false
	}
	return have.Variant == "" || want.Variant == "" || have.Variant == want.Variant
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// blobName is where an OCI layout keeps blob d.
func blobName(d string) string {
	return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:")
}

// declaredLayerMediaType accepts the media types of layers corral can
// unpack: tar, gzip or zstd, OCI or docker, distributable or not.
func declaredLayerMediaType(mt string) (string, error) {
	switch {
	case mt == "":
		return "", fmt.Errorf("a layer without a media type: %w", errdefs.ErrInvalidArgument)
	case strings.HasSuffix(mt, ".tar"), strings.HasSuffix(mt, ".tar+gzip"), strings.HasSuffix(mt, ".tar.gzip"), strings.HasSuffix(mt, ".tar+zstd"):
		return mt, nil
	}
	return "", fmt.Errorf("layer media type %q: %w", mt, errdefs.ErrNotImplemented)
}
