package testregistry

import (
	"archive/tar"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultBusybox is the static busybox of Debian's busybox-static package;
// being static, it runs in an image with no libc.
const DefaultBusybox = "/bin/busybox"

// Path is the PATH of every image, the usual Linux default.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Option changes how an image builder lays out its image.
type Option func(*buildConfig)

type buildConfig struct {
	format      Format
	compression Compression
	user        string
	busybox     string
	// cache, when set, shares busybox layers between the images of one
	// Catalog call, which would otherwise compress the same 2 MB once per
	// image. Catalog builds sequentially, so it needs no lock.
	cache map[string]*memLayer
}

func newBuildConfig(opts []Option) buildConfig {
	c := buildConfig{format: OCI, compression: Gzip, busybox: DefaultBusybox}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithFormat picks the manifest schema (default OCI).
func WithFormat(f Format) Option { return func(c *buildConfig) { c.format = f } }

// WithCompression picks the layer encoding (default Gzip).
func WithCompression(cmp Compression) Option {
	return func(c *buildConfig) { c.compression = cmp }
}

// WithUser sets the image config's User ("1000", "www-data", "1000:1000").
func WithUser(u string) Option { return func(c *buildConfig) { c.user = u } }

// WithBusyboxBinary takes busybox from path instead of DefaultBusybox.
func WithBusyboxBinary(path string) Option { return func(c *buildConfig) { c.busybox = path } }

// withLayerCache lets the images built with it share busybox layers.
func withLayerCache(cache map[string]*memLayer) Option {
	return func(c *buildConfig) { c.cache = cache }
}

// busyboxApplets get a symlink in /bin. The list is what pods, critest and
// shell one-liners in tests use; every name is an applet of Debian's
// busybox-static. A constant string, not a slice, so nothing can change it.
const busyboxApplets = `[ awk basename cat chmod chown cp cut date dd df dirname du echo env
expr false find grep head hostname id ip kill ln ls mkdir mknod mount mv nc
nproc nslookup ping printf ps pwd readlink rm sed seq sh sleep sort stat tail
tar tee test timeout top touch tr true umount uname uniq usleep wc wget which
whoami xargs yes`

const etcPasswd = `root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
`

const etcGroup = `root:x:0:
www-data:x:33:user
user:x:1000:
nogroup:x:65534:
`

// busyboxFiles is the root filesystem of the busybox image, sorted by path.
func busyboxFiles(busybox string) ([]File, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("read busybox binary (Debian package busybox-static): %w", err)
	}
	files := []File{
		{Path: "bin", Type: tar.TypeDir},
		{Path: "bin/busybox", Mode: 0o755, Content: bin},
		{Path: "dev", Type: tar.TypeDir},
		{Path: "etc", Type: tar.TypeDir},
		{Path: "etc/group", Content: []byte(etcGroup)},
		{Path: "etc/passwd", Content: []byte(etcPasswd)},
		{Path: "home", Type: tar.TypeDir},
		{Path: "home/user", Type: tar.TypeDir, UID: 1000, GID: 1000},
		{Path: "proc", Type: tar.TypeDir, Mode: 0o555},
		{Path: "root", Type: tar.TypeDir, Mode: 0o700},
		{Path: "run", Type: tar.TypeDir},
		{Path: "sbin", Type: tar.TypeDir},
		{Path: "sys", Type: tar.TypeDir, Mode: 0o555},
		{Path: "tmp", Type: tar.TypeDir, Mode: 0o1777},
		{Path: "usr", Type: tar.TypeDir},
		{Path: "usr/bin", Type: tar.TypeDir},
		{Path: "usr/sbin", Type: tar.TypeDir},
		{Path: "var", Type: tar.TypeDir},
		{Path: "var/run", Type: tar.TypeDir},
		{Path: "var/www", Type: tar.TypeDir, UID: 33, GID: 33},
	}
	for _, a := range strings.Fields(busyboxApplets) {
		files = append(files, File{Path: "bin/" + a, Type: tar.TypeSymlink, Linkname: "busybox"})
	}
	sortFiles(files)
	return files, nil
}

// sortFiles orders entries by path; a directory sorts before its contents
// because its path is a prefix of theirs.
func sortFiles(files []File) {
	sort.SliceStable(files, func(i, j int) bool { return files[i].Path < files[j].Path })
}

// Busybox is a one-layer image with a static busybox in /bin, symlinks for
// the common applets, /etc/passwd and /etc/group with root (0), www-data
// (33, with user as a member), user (1000) and nobody (65534), the usual top-level dirs (/tmp is
// 1777), Env PATH and Cmd ["sh"], for the platform of the running Go binary.
func Busybox(opts ...Option) (v1.Image, error) {
	c := newBuildConfig(opts)
	l, err := c.busyboxLayer()
	if err != nil {
		return nil, err
	}
	return newImage(c.format, HostPlatform(), busyboxConfig(c), historyLayer{l, "busybox " + string(c.compression)})
}

func (c buildConfig) busyboxLayer() (*memLayer, error) {
	mt, err := LayerMediaType(c.format, c.compression)
	if err != nil {
		return nil, err
	}
	key := string(c.compression) + "\x00" + c.busybox
	if l, ok := c.cache[key]; ok {
		return l.as(mt), nil
	}
	files, err := busyboxFiles(c.busybox)
	if err != nil {
		return nil, err
	}
	l, err := newLayer(files, mt)
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w", err)
	}
	if c.cache != nil {
		c.cache[key] = l
	}
	return l, nil
}

func busyboxConfig(c buildConfig) v1.Config {
	return v1.Config{Env: []string{"PATH=" + Path}, Cmd: []string{"sh"}, User: c.user}
}

// WhiteoutMerged is the content of every regular file under /data in the
// merged view of the Whiteout image.
func WhiteoutMerged() map[string]string {
	return map[string]string{
		"data/keep.txt":        "kept from layer 1\n",
		"data/replaced.txt":    "replaced by layer 2\n",
		"data/added.txt":       "added by layer 2\n",
		"data/opaque/new.txt":  "added by layer 2 under the opaque dir\n",
		"data/opaque-kept.txt": "a sibling the opaque marker must not hide\n",
	}
}

// WhiteoutRemoved lists the paths of the Whiteout image's first layer that
// its second layer deletes, so the merged view must not have them.
func WhiteoutRemoved() []string {
	return []string{
		"data/removed.txt",
		"data/gone",
		"data/gone/inner.txt",
		"data/opaque/old.txt",
		"data/opaque/sub",
		"data/opaque/sub/deep.txt",
	}
}

// Whiteout is a two-layer image for testing how layers merge.
//
// Layer 1 is the busybox root filesystem plus:
//
//	data/keep.txt            "kept from layer 1\n"
//	data/removed.txt
//	data/replaced.txt        "layer 1\n"
//	data/gone/inner.txt
//	data/opaque/old.txt
//	data/opaque/sub/deep.txt
//	data/opaque-kept.txt     "a sibling the opaque marker must not hide\n"
//
// Layer 2 holds:
//
//	data/.wh.removed.txt        deletes data/removed.txt
//	data/.wh.gone               deletes the directory data/gone and its contents
//	data/opaque/.wh..wh..opq    hides everything layer 1 had in data/opaque
//	data/opaque/new.txt         "added by layer 2 under the opaque dir\n"
//	data/added.txt              "added by layer 2\n"
//	data/replaced.txt           "replaced by layer 2\n"
//
// So the merged /data has exactly the regular files of WhiteoutMerged, none of
// WhiteoutRemoved, and no .wh. entry; busybox is untouched.
func Whiteout(opts ...Option) (v1.Image, error) {
	c := newBuildConfig(opts)
	base, err := busyboxFiles(c.busybox)
	if err != nil {
		return nil, err
	}
	dir := func(p string) File { return File{Path: p, Type: tar.TypeDir} }
	text := func(p, s string) File { return File{Path: p, Content: []byte(s)} }
	lower := append(base,
		dir("data"),
		text("data/keep.txt", "kept from layer 1\n"),
		text("data/removed.txt", "deleted by layer 2\n"),
		text("data/replaced.txt", "layer 1\n"),
		dir("data/gone"),
		text("data/gone/inner.txt", "deleted with its dir by layer 2\n"),
		dir("data/opaque"),
		text("data/opaque/old.txt", "hidden by the opaque marker\n"),
		dir("data/opaque/sub"),
		text("data/opaque/sub/deep.txt", "hidden by the opaque marker\n"),
		text("data/opaque-kept.txt", "a sibling the opaque marker must not hide\n"),
	)
	upper := []File{
		dir("data"),
		// Whiteouts are empty regular files; the name alone carries meaning.
		text("data/.wh.removed.txt", ""),
		text("data/.wh.gone", ""),
		dir("data/opaque"),
		text("data/opaque/.wh..wh..opq", ""),
		text("data/opaque/new.txt", "added by layer 2 under the opaque dir\n"),
		text("data/added.txt", "added by layer 2\n"),
		text("data/replaced.txt", "replaced by layer 2\n"),
	}
	sortFiles(lower)
	sortFiles(upper)
	mt, err := LayerMediaType(c.format, c.compression)
	if err != nil {
		return nil, err
	}
	l1, err := NewLayer(lower, mt)
	if err != nil {
		return nil, fmt.Errorf("whiteout lower layer: %w", err)
	}
	l2, err := NewLayer(upper, mt)
	if err != nil {
		return nil, fmt.Errorf("whiteout upper layer: %w", err)
	}
	return newImage(c.format, HostPlatform(), busyboxConfig(c),
		historyLayer{l1, "busybox and /data"}, historyLayer{l2, "whiteouts under /data"})
}

// MultiPlatform is an index of two images: busybox for the platform of the
// running Go binary (linux/amd64 here), and a tiny image for a second
// platform (linux/arm64/v8, or linux/amd64 on an arm64 host) whose only file
// is /platform.txt naming that platform; it is there for platform choice and
// need not run. The format picks an OCI index of OCI manifests or a Docker
// manifest list of schema 2 manifests.
func MultiPlatform(opts ...Option) (v1.ImageIndex, error) {
	c := newBuildConfig(opts)
	native, err := Busybox(opts...)
	if err != nil {
		return nil, err
	}
	other := OtherPlatform()
	mt, err := LayerMediaType(c.format, c.compression)
	if err != nil {
		return nil, err
	}
	l, err := NewLayer([]File{{Path: "platform.txt", Content: []byte(other.String() + "\n")}}, mt)
	if err != nil {
		return nil, fmt.Errorf("%s layer: %w", other, err)
	}
	foreign, err := newImage(c.format, other,
		v1.Config{Env: []string{"PATH=" + Path}, Cmd: []string{"/platform.txt"}},
		historyLayer{l, "platform marker"})
	if err != nil {
		return nil, err
	}
	host := HostPlatform()
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: NoArtifactType{native}, Descriptor: v1.Descriptor{Platform: &host}},
		mutate.IndexAddendum{Add: NoArtifactType{foreign}, Descriptor: v1.Descriptor{Platform: &other}},
	)
	if c.format == DockerSchema2 {
		return mutate.IndexMediaType(idx, types.DockerManifestList), nil
	}
	return mutate.IndexMediaType(idx, types.OCIImageIndex), nil
}

// NoArtifactType keeps go-containerregistry from writing an artifactType on
// an image's descriptor in an index: the indexes and manifest lists that
// registries serve for images have none, and Docker's manifest list schema
// has no such field, so the test images should not either.
type NoArtifactType struct{ v1.Image }

// ArtifactType is empty, which partial.Descriptor leaves out of the JSON.
func (NoArtifactType) ArtifactType() (string, error) { return "", nil }

// HostPlatform is the platform of this machine, the one a pull picks.
func HostPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if runtime.GOARCH == "arm64" {
		p.Variant = "v8"
	}
	return p
}

// OtherPlatform is a platform other than this machine's, for the second
// image of a multi-platform index.
func OtherPlatform() v1.Platform {
	if runtime.GOARCH == "arm64" {
		return v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	return v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
}

// historyLayer pairs a layer with the created_by of its history entry.
type historyLayer struct {
	layer     v1.Layer
	createdBy string
}

// newImage assembles an image whose config carries only fixed values: Epoch
// for every time, the platform given, and cfg.
func newImage(f Format, p v1.Platform, cfg v1.Config, layers ...historyLayer) (v1.Image, error) {
	base := empty.Image
	switch f {
	case DockerSchema2:
		base = mutate.MediaType(base, types.DockerManifestSchema2)
		base = mutate.ConfigMediaType(base, types.DockerConfigJSON)
	case OCI:
		base = mutate.MediaType(base, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	default:
		return nil, fmt.Errorf("unknown image format %q", f)
	}
	adds := make([]mutate.Addendum, 0, len(layers))
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{
			Layer:   l.layer,
			History: v1.History{Created: v1.Time{Time: Epoch()}, CreatedBy: l.createdBy, Comment: "corral testregistry"},
		})
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, fmt.Errorf("append layers: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: Epoch()}
	cf.OS = p.OS
	cf.Architecture = p.Architecture
	cf.Variant = p.Variant
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set image config: %w", err)
	}
	return img, nil
}
