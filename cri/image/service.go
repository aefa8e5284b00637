package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/corral-runtime/corral/cri/metrics"
	"github.com/corral-runtime/corral/cri/registry"
	"github.com/corral-runtime/corral/cri/snapshot"
	"github.com/corral-runtime/corral/metadata"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Options configure the image service.
type Options struct {
	// Root is where blobs and snapshots live (ROOT of corrald).
	Root string
	// Store holds the image records.
	Store *metadata.Store
	// RegistryConfigPath is the certs.d directory (containerd's layout).
	RegistryConfigPath string
	// ProgressTimeout cancels a pull that receives no byte for this long;
	// zero never cancels.
	ProgressTimeout time.Duration
	// InUse lists the snapshot chain IDs containers use, which garbage
	// collection must keep even when no image record names them any more.
	InUse func() ([]string, error)
	// Log gets pull progress and garbage collection.
	Log *slog.Logger
	// Metrics counts pulls, their bytes and durations; nil means none.
	Metrics *metrics.Metrics
}

// Service is the image store.
type Service struct {
	store           *metadata.Store
	content         *content
	snaps           *snapshot.Store
	hosts           *registry.Hosts
	log             *slog.Logger
	progressTimeout time.Duration
	inUse           func() ([]string, error)
	platform        v1.Platform
	root            string
	metrics         *metrics.Metrics

	pulls    flights[metadata.Image]
	blobs    flights[struct{}]
	lastByte atomic.Int64

	// recordMu orders record changes that span images (moving a tag from
	// one image to another); each is quick.
	recordMu sync.Mutex

	// gcMu makes garbage collection see every pull's holds: a pull adds
	// its holds under it, collection runs under it.
	gcMu  sync.Mutex
	holds map[string]int
}

// New opens the image store under opts.Root.
func New(opts Options) (*Service, error) {
	if opts.Store == nil || opts.Root == "" {
		return nil, errors.New("image: a metadata store and a root are required")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	c, err := newContent(filepath.Join(opts.Root, "content"))
	if err != nil {
		return nil, fmt.Errorf("content store: %w", err)
	}
	snaps, err := snapshot.New(filepath.Join(opts.Root, "snapshots"), log)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	s := &Service{
		store:           opts.Store,
		content:         c,
		snaps:           snaps,
		hosts:           registry.NewHosts(opts.RegistryConfigPath),
		log:             log,
		progressTimeout: opts.ProgressTimeout,
		inUse:           opts.InUse,
		platform:        nodePlatform(),
		root:            opts.Root,
		metrics:         opts.Metrics,
		holds:           make(map[string]int),
	}
	// A pull cut short by a crash (corrald killed, the node down) leaves
	// blobs and snapshots no record names, and nothing else would collect
	// them until the next removal. No pull runs yet, so whatever no image
	// or container refers to now is such a leftover.
	if err := s.GC(context.Background()); err != nil {
		log.Warn("image gc at start", "error", err)
	}
	return s, nil
}

// Snapshots is the snapshot store the image layers live in, for container
// rootfs mounts.
func (s *Service) Snapshots() *snapshot.Store { return s.snaps }

// hold protects blobs and snapshots a pull is making from garbage
// collection until the returned release is called.
func (s *Service) hold(keys []string) (release func()) {
	s.gcMu.Lock()
	for _, k := range keys {
		s.holds[k]++
	}
	s.gcMu.Unlock()
	return func() {
		s.gcMu.Lock()
		for _, k := range keys {
			if s.holds[k]--; s.holds[k] <= 0 {
				delete(s.holds, k)
			}
		}
		s.gcMu.Unlock()
	}
}

// record writes a pulled image's record: a new image, or more names for a
// known one. A tag now naming this image is taken off any other image, as a
// tag names one image at a time.
func (s *Service) record(ref fmt.Stringer, rec metadata.Image) (metadata.Image, error) {
	s.recordMu.Lock()
	defer s.recordMu.Unlock()
	for _, tag := range rec.RepoTags {
		others, err := s.store.ListImages(func(img metadata.Image) bool {
			return img.ID != rec.ID && slices.Contains(img.RepoTags, tag)
		})
		if err != nil {
			return metadata.Image{}, err
		}
		for _, o := range others {
			if _, err := s.store.UpdateImage(o.ID, func(img *metadata.Image) error {
				img.RepoTags = slices.DeleteFunc(img.RepoTags, func(t string) bool { return t == tag })
				return nil
			}); err != nil && !errdefs.IsNotFound(err) {
				return metadata.Image{}, err
			}
		}
	}
	err := s.store.CreateImage(rec)
	if err == nil {
		return rec, nil
	}
	if !errdefs.IsAlreadyExists(err) {
		return metadata.Image{}, fmt.Errorf("record image %s: %w", ref, err)
	}
	return s.store.UpdateImage(rec.ID, func(img *metadata.Image) error {
		img.RepoTags = appendNew(img.RepoTags, rec.RepoTags...)
		img.RepoDigests = appendNew(img.RepoDigests, rec.RepoDigests...)
		img.ChainIDs = rec.ChainIDs
		if img.Extra == nil {
			img.Extra = map[string]string{}
		}
		for k, v := range rec.Extra {
			img.Extra[k] = v
		}
		return nil
	})
}

func appendNew(list []string, more ...string) []string {
	for _, m := range more {
		if !slices.Contains(list, m) {
			list = append(list, m)
		}
	}
	return list
}

// Get finds an image by ID (full, with or without "sha256:", or a unique
// prefix of at least 12 hex digits as the docker tools print), by tag, or by
// repo digest; errdefs.ErrNotFound if none.
func (s *Service) Get(ref string) (metadata.Image, error) {
	if ref == "" {
		return metadata.Image{}, fmt.Errorf("no image named: %w", errdefs.ErrInvalidArgument)
	}
	if img, err := s.byID(ref); err == nil || !errdefs.IsNotFound(err) {
		return img, err
	}
	normalized, err := registry.Normalize(ref)
	if err != nil {
		// Not a valid reference, and not an ID either.
		return metadata.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	found, err := s.store.ListImages(func(img metadata.Image) bool {
		return slices.Contains(img.RepoTags, normalized) || slices.Contains(img.RepoDigests, normalized) ||
			slices.Contains(img.RepoDigests, stripTag(normalized))
	})
	if err != nil {
		return metadata.Image{}, err
	}
	if len(found) == 0 {
		return metadata.Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	return found[0], nil
}

// stripTag turns repo:tag@digest into repo@digest, the form repo digests
// are kept in.
func stripTag(ref string) string {
	at := strings.Index(ref, "@")
	if at < 0 {
		return ref
	}
	repo := ref[:at]
	if colon := strings.LastIndex(repo, ":"); colon > strings.LastIndex(repo, "/") {
		repo = repo[:colon]
	}
	return repo + ref[at:]
}

func (s *Service) byID(ref string) (metadata.Image, error) {
	hexPart := strings.TrimPrefix(ref, "sha256:")
	if len(hexPart) < 12 || len(hexPart) > 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return metadata.Image{}, errdefs.ErrNotFound
	}
	if len(hexPart) == 64 {
		return s.store.GetImage("sha256:" + hexPart)
	}
	found, err := s.store.ListImages(func(img metadata.Image) bool {
		return strings.HasPrefix(img.ID, "sha256:"+hexPart)
	})
	if err != nil {
		return metadata.Image{}, err
	}
	switch len(found) {
	case 0:
		return metadata.Image{}, errdefs.ErrNotFound
	case 1:
		return found[0], nil
	}
	return metadata.Image{}, fmt.Errorf("image ID prefix %q names %d images: %w", ref, len(found), errdefs.ErrInvalidArgument)
}

// List returns every image record.
func (s *Service) List() ([]metadata.Image, error) {
	return s.store.ListImages(nil)
}

// Remove removes an image. Named by a tag that is not its last, only that
// tag goes; otherwise the whole image goes, with every tag and digest. Then
// garbage collection frees what nothing uses. An absent image is not an
// error (the CRI contract).
func (s *Service) Remove(ctx context.Context, ref string) error {
	s.recordMu.Lock()
	img, err := s.Get(ref)
	if errdefs.IsNotFound(err) {
		s.recordMu.Unlock()
		return nil
	}
	if err != nil {
		s.recordMu.Unlock()
		return err
	}
	normalized, _ := registry.Normalize(ref)
	if slices.Contains(img.RepoTags, normalized) && len(img.RepoTags) > 1 {
		_, err = s.store.UpdateImage(img.ID, func(i *metadata.Image) error {
			i.RepoTags = slices.DeleteFunc(i.RepoTags, func(t string) bool { return t == normalized })
			return nil
		})
		s.recordMu.Unlock()
		return err
	}
	err = s.store.DeleteImage(img.ID)
	s.recordMu.Unlock()
	if err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	s.log.Info("image removed", "id", img.ID, "tags", img.RepoTags)
	return s.GC(ctx)
}

// GC removes the blobs and snapshots nothing refers to: no image record,
// no container (InUse), no pull in progress.
func (s *Service) GC(ctx context.Context) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	images, err := s.store.ListImages(nil)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for k := range s.holds {
		keep[k] = true
	}
	for _, img := range images {
		keep[img.ID] = true
		keep[img.ManifestDigest] = true
		for _, c := range img.ChainIDs {
			keep[c] = true
		}
		for _, l := range strings.Split(img.Extra[extraLayers], ",") {
			keep[l] = true
		}
		keep[img.Extra[extraIndex]] = true
		for _, rd := range img.RepoDigests {
			if at := strings.LastIndex(rd, "@"); at >= 0 {
				keep[rd[at+1:]] = true
			}
		}
	}
	if s.inUse != nil {
		used, err := s.inUse()
		if err != nil {
			return fmt.Errorf("gc: containers' snapshots: %w", err)
		}
		for _, c := range used {
			keep[c] = true
		}
	}

	snaps, err := s.snaps.List()
	if err != nil {
		return err
	}
	parent := map[string]string{}
	for _, in := range snaps {
		parent[in.ChainID.String()] = in.Parent.String()
	}
	// A kept snapshot keeps its whole chain.
	for c := range keep {
		for p := parent[c]; p != ""; p = parent[p] {
			keep[p] = true
		}
	}
	var doomed []string
	for _, in := range snaps {
		if !keep[in.ChainID.String()] {
			doomed = append(doomed, in.ChainID.String())
		}
	}
	// Children before parents: the store refuses to orphan a child.
	depth := func(c string) int {
		n := 0
		for p := parent[c]; p != ""; p = parent[p] {
			n++
		}
		return n
	}
	slices.SortFunc(doomed, func(a, b string) int { return depth(b) - depth(a) })
	var removedSnaps, removedBlobs int
	for _, c := range doomed {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.snaps.Remove(digest.Digest(c)); err != nil && !errdefs.IsNotFound(err) {
			s.log.Warn("gc: remove snapshot", "chain_id", c, "error", err)
			continue
		}
		removedSnaps++
	}
	blobs, err := s.content.list()
	if err != nil {
		return err
	}
	for _, b := range blobs {
		if !keep[b] {
			if err := s.content.remove(b); err != nil {
				s.log.Warn("gc: remove blob", "blob", b, "error", err)
				continue
			}
			removedBlobs++
		}
	}
	if removedSnaps+removedBlobs > 0 {
		s.log.Info("gc", "snapshots_removed", removedSnaps, "blobs_removed", removedBlobs)
	}
	return nil
}

// Usage is the space images take: blobs plus unpacked snapshots.
func (s *Service) Usage() (bytes, inodes int64, err error) {
	u, err := s.snaps.Usage()
	if err != nil {
		return 0, 0, err
	}
	b, i, err := s.content.usage()
	if err != nil {
		return 0, 0, err
	}
	return u.Bytes + b, u.Inodes + i, nil
}

// Root is the directory images are stored under (for filesystem stats).
func (s *Service) Root() string { return s.root }

// Config decodes an image record's OCI config.
func Config(img metadata.Image) (*imagespec.Image, error) {
	var c imagespec.Image
	if err := json.Unmarshal(img.Config, &c); err != nil {
		return nil, fmt.Errorf("image %s: config: %w: %w", img.ID, errdefs.ErrDataLoss, err)
	}
	return &c, nil
}

// User splits an image's USER into a numeric uid or a user name, as the
// CRI Image message reports them; ok is false when the image names none.
func User(user string) (uid int64, username string, ok bool) {
	if user == "" {
		return 0, "", false
	}
	u, _, _ := strings.Cut(user, ":")
	if n, err := strconv.ParseInt(u, 10, 64); err == nil {
		return n, "", true
	}
	return 0, u, true
}
