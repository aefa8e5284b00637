package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	clog "github.com/containerd/log"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	lslog "github.com/sirupsen/logrus/hooks/slog"
	"golang.org/x/sys/unix"
)

const (
	tmpPrefix = "tmp-"
	fsDir     = "fs"
	metaFile  = "meta.json"
)

// Layer is one layer of an image as the puller knows it from the manifest
// and the image config, before the blob is fetched.
type Layer struct {
	// DiffID is the digest of the uncompressed tar stream, from the image
	// config's rootfs.diff_ids. Unpack refuses a layer that does not match.
	DiffID digest.Digest
	// MediaType is the descriptor's media type; empty means any layer type.
	MediaType string
	// Digest is the blob's digest, for log lines only: the content store
	// has verified the blob by then.
	Digest digest.Digest
	// Open returns the blob. It is called only if the layer must be
	// unpacked, so a pull that finds its layers present, or that waits on
	// another pull unpacking the same layer, reads nothing.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// Info describes a committed snapshot.
type Info struct {
	ChainID digest.Digest `json:"chainID"`
	// Parent is the chain ID of the layer below; empty for a base layer.
	Parent digest.Digest `json:"parent,omitempty"`
	DiffID digest.Digest `json:"diffID"`
	// Size and Inodes are the disk usage of the unpacked files, measured
	// once at unpack time: snapshots never change afterwards.
	Size    int64     `json:"size"`
	Inodes  int64     `json:"inodes"`
	Created time.Time `json:"created"`
}

// Usage is the disk usage of a whole store, as ImageFsInfo reports it.
type Usage struct {
	Bytes  int64
	Inodes int64
}

// Store keeps unpacked layers under one root directory. Its methods are safe
// for concurrent use.
type Store struct {
	root string
	log  *slog.Logger
	// archiveLog carries containerd's archive package's warnings (skipped
	// xattrs, say) into log; that package logs through logrus.
	archiveLog *logrus.Logger

	// mu makes "parent exists" and "no child exists" hold at the moment a
	// snapshot is committed or removed, and guards inflight.
	mu       sync.Mutex
	inflight map[digest.Digest]*unpackCall
}

// unpackCall is one Unpack in progress; other callers for the same chain ID
// wait on done instead of extracting the layer again.
type unpackCall struct {
	done chan struct{}
	info Info
	err  error
}

// New opens the store rooted at root, creating it if needed, and removes
// what an earlier process left half done there. A nil logger means
// slog.Default().
func New(root string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		p := filepath.Join(root, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("snapshot store: remove leftover %s: %w", p, err)
		}
		logger.Info("removed unfinished snapshot work", "path", p)
	}
	archiveLog := logrus.New()
	archiveLog.SetOutput(io.Discard)
	archiveLog.SetLevel(logrus.DebugLevel) // let logger's handler decide
	archiveLog.AddHook(lslog.NewHook(logger, nil))
	return &Store{
		root:       root,
		log:        logger,
		archiveLog: archiveLog,
		inflight:   make(map[digest.Digest]*unpackCall),
	}, nil
}

// ChainID returns the chain ID of a layer with the given diff ID on top of
// the layer whose chain ID is parent ("" for a base layer).
func ChainID(parent, diffID digest.Digest) digest.Digest {
	if parent == "" {
		return diffID
	}
	return digest.FromString(parent.String() + " " + diffID.String())
}

// Unpack makes sure the snapshot for layer l on top of parent exists and
// returns it. parent is the chain ID of the layer below ("" for a base layer)
// and must already be unpacked. An existing snapshot is returned without
// opening the blob. Concurrent calls for the same chain ID extract it once:
// the others wait for that result, and if it fails, one of them tries again
// with its own blob, since the failure may have been the first blob's.
func (s *Store) Unpack(ctx context.Context, parent digest.Digest, l Layer) (Info, error) {
	if err := checkDigest(l.DiffID); err != nil {
		return Info{}, fmt.Errorf("diff ID: %w", err)
	}
	if parent != "" {
		if err := checkDigest(parent); err != nil {
			return Info{}, fmt.Errorf("parent chain ID: %w", err)
		}
	}
	if l.Open == nil {
		return Info{}, fmt.Errorf("layer %s has no Open: %w", l.DiffID, errdefs.ErrInvalidArgument)
	}
	id := ChainID(parent, l.DiffID)
	for {
		s.mu.Lock()
		c, waiting := s.inflight[id]
		if !waiting {
			c = &unpackCall{done: make(chan struct{})}
			s.inflight[id] = c
		}
		s.mu.Unlock()

		if waiting {
			select {
			case <-c.done:
			case <-ctx.Done():
				return Info{}, ctx.Err()
			}
			if c.err == nil {
				return c.info, nil
			}
			continue
		}

		c.info, c.err = s.unpack(ctx, id, parent, l)
		s.mu.Lock()
		delete(s.inflight, id)
		s.mu.Unlock()
		close(c.done)
		return c.info, c.err
	}
}

// unpack does the work of Unpack for the one caller that owns chain ID id.
func (s *Store) unpack(ctx context.Context, id, parent digest.Digest, l Layer) (_ Info, retErr error) {
	if info, err := s.Stat(id); err == nil || !errdefs.IsNotFound(err) {
		return info, err
	}
	if parent != "" {
		if _, err := s.Stat(parent); err != nil {
			return Info{}, fmt.Errorf("parent of layer %s: %w", l.DiffID, err)
		}
	}
	declared, err := declaredCompression(l.MediaType)
	if err != nil {
		return Info{}, err
	}

	tmp, err := os.MkdirTemp(s.root, tmpPrefix)
	if err != nil {
		return Info{}, err
	}
	defer func() {
		if retErr != nil {
			if err := os.RemoveAll(tmp); err != nil {
				s.log.Error("cannot remove failed unpack", "path", tmp, "error", err)
			}
		}
	}()
	dir := filepath.Join(tmp, fsDir)
	// 0755 and not the temp dir's 0700: the top layer's root is the
	// container's "/", which unprivileged processes must be able to enter.
	if err := os.Mkdir(dir, 0o755); err != nil {
		return Info{}, err
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever corrald's umask
		return Info{}, err
	}

	name := l.Digest // what the puller and the registry call it
	if name == "" {
		name = l.DiffID
	}
	start := time.Now()
	blob, err := l.Open(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("open layer %s: %w", name, err)
	}
	actx := clog.WithLogger(ctx, logrus.NewEntry(s.archiveLog).WithField("chainID", id))
	res, err := extract(actx, s.log, dir, blob)
	blob.Close()
	if err != nil {
		return Info{}, fmt.Errorf("layer %s: %w", name, err)
	}
	if declared != "" && declared != res.compression {
		s.log.Warn("layer media type disagrees with its content; going by content",
			"digest", l.Digest, "mediaType", l.MediaType, "content", res.compression)
	}
	if res.diffID != l.DiffID {
		return Info{}, fmt.Errorf("layer %s: uncompressed digest %s, image config says %s: %w",
			name, res.diffID, l.DiffID, errdefs.ErrDataLoss)
	}

	info := Info{ChainID: id, Parent: parent, DiffID: l.DiffID, Created: time.Now().UTC()}
	if info.Size, info.Inodes, err = diskUsage(ctx, dir); err != nil {
		return Info{}, err
	}
	meta, err := json.Marshal(info)
	if err != nil {
		return Info{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, metaFile), meta, 0o600); err != nil {
		return Info{}, err
	}
	// The rename below is what makes the snapshot exist, so its contents
	// must be on disk first, or a power cut could leave a complete-looking
	// snapshot with empty files.
	if err := syncFS(tmp); err != nil {
		return Info{}, err
	}

	s.mu.Lock()
	err = s.commit(tmp, id, parent)
	s.mu.Unlock()
	if err != nil {
		return Info{}, err
	}
	s.log.Info("unpacked layer", "chainID", id, "diffID", l.DiffID, "digest", l.Digest,
		"compression", res.compression, "tarBytes", res.tarBytes, "diskBytes", info.Size,
		"duration", time.Since(start))
	return info, nil
}

// commit renames a finished unpack into place. The caller holds s.mu, so a
// concurrent Remove cannot take the parent away between check and rename.
func (s *Store) commit(tmp string, id, parent digest.Digest) error {
	if parent != "" {
		if _, err := s.Stat(parent); err != nil {
			return fmt.Errorf("parent removed during unpack: %w", err)
		}
	}
	if err := os.Rename(tmp, s.dir(id)); err != nil {
		return fmt.Errorf("commit snapshot %s: %w", id, err)
	}
	s.syncRoot()
	return nil
}

// Stat returns the snapshot with the given chain ID, or an error that
// errdefs.IsNotFound recognises.
func (s *Store) Stat(chainID digest.Digest) (Info, error) {
	if err := checkDigest(chainID); err != nil {
		return Info{}, err
	}
	b, err := os.ReadFile(filepath.Join(s.dir(chainID), metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Info{}, fmt.Errorf("snapshot %s: %w", chainID, errdefs.ErrNotFound)
	}
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return Info{}, fmt.Errorf("snapshot %s: %w", chainID, err)
	}
	if info.ChainID != chainID {
		return Info{}, fmt.Errorf("snapshot %s: metadata names %s", chainID, info.ChainID)
	}
	return info, nil
}

// List returns every committed snapshot, in no particular order. Snapshots
// whose metadata cannot be read are logged and left out.
func (s *Store) List() ([]Info, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, err
	}
	var infos []Info
	for _, e := range entries {
		id := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if id.Validate() != nil {
			continue
		}
		info, err := s.Stat(id)
		if errdefs.IsNotFound(err) {
			continue // removed since ReadDir
		}
		if err != nil {
			// One unreadable snapshot must not hide the others from
			// garbage collection and usage; Remove still takes it.
			s.log.Warn("skipping unreadable snapshot", "chainID", id, "error", err)
			continue
		}
		infos = append(infos, info)
	}
	return infos, nil
}

// Remove deletes a snapshot. It refuses, with an error that
// errdefs.IsFailedPrecondition recognises, while another snapshot has it as
// parent: that one would lose part of its filesystem. Which images use a
// snapshot is for the caller to know; Remove does not check mounts.
func (s *Store) Remove(chainID digest.Digest) error {
	s.mu.Lock()
	trash, err := s.detach(chainID)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	// Outside the lock: deleting a large layer takes a while, and the
	// snapshot is already gone from the store's point of view.
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", chainID, err)
	}
	return nil
}

// detach renames a snapshot out of the way so that it stops existing in one
// step. The caller holds s.mu.
func (s *Store) detach(chainID digest.Digest) (string, error) {
	if err := checkDigest(chainID); err != nil {
		return "", err
	}
	// Lstat, not Stat: a snapshot whose metadata is damaged must still be
	// removable.
	if _, err := os.Lstat(s.dir(chainID)); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("snapshot %s: %w", chainID, errdefs.ErrNotFound)
	} else if err != nil {
		return "", err
	}
	infos, err := s.List()
	if err != nil {
		return "", err
	}
	for _, info := range infos {
		if info.Parent == chainID {
			return "", fmt.Errorf("snapshot %s is the parent of %s: %w",
				chainID, info.ChainID, errdefs.ErrFailedPrecondition)
		}
	}
	trash, err := os.MkdirTemp(s.root, tmpPrefix)
	if err != nil {
		return "", err
	}
	// rename(2) replaces an empty directory, so the name MkdirTemp made
	// unique is ours to use; os.Rename refuses to, hence unix.Rename.
	if err := unix.Rename(s.dir(chainID), trash); err != nil {
		os.Remove(trash)
		return "", fmt.Errorf("remove snapshot %s: %w", chainID, err)
	}
	s.syncRoot()
	return trash, nil
}

// Usage returns the disk usage of the store the way du counts it: the
// snapshots' files as measured when each was unpacked (they never change
// after), plus what the store's own directories and metadata files take,
// read now. Work in progress (tmp-*) is left out. It reads no layer's
// files, so it is cheap enough for the kubelet's periodic ImageFsInfo.
func (s *Store) Usage() (Usage, error) {
	infos, err := s.List()
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	u.add(s.root)
	for _, info := range infos {
		u.Bytes += info.Size
		u.Inodes += info.Inodes
		u.add(s.dir(info.ChainID))
		u.add(filepath.Join(s.dir(info.ChainID), metaFile))
	}
	return u, nil
}

// add counts the file at p, if it is still there.
func (u *Usage) add(p string) {
	var st unix.Stat_t
	if unix.Lstat(p, &st) == nil {
		u.Bytes += st.Blocks * 512
		u.Inodes++
	}
}

// LowerDirs returns the overlayfs lowerdirs of the image whose top layer has
// the given chain ID, top layer first, as overlayfs wants them.
func (s *Store) LowerDirs(chainID digest.Digest) ([]string, error) {
	var dirs []string
	for id := chainID; id != ""; {
		// overlayfs stacks at most 500 layers; a longer chain means the
		// metadata is corrupt, maybe into a cycle.
		if len(dirs) == 500 {
			return nil, fmt.Errorf("snapshot %s: chain longer than overlayfs allows", chainID)
		}
		info, err := s.Stat(id)
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, filepath.Join(s.dir(id), fsDir))
		id = info.Parent
	}
	return dirs, nil
}

func (s *Store) dir(chainID digest.Digest) string {
	return filepath.Join(s.root, chainID.Encoded())
}

// checkDigest accepts only sha256 digests: chain IDs are sha256 by
// definition, every image in use has sha256 diff IDs, and the encoded part
// becomes a directory name, so it must be exactly hex.
func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%q: %v: %w", d, err, errdefs.ErrInvalidArgument)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%q: only sha256 is supported: %w", d, errdefs.ErrNotImplemented)
	}
	return nil
}

// diskUsage counts what dir takes on disk the way du does: allocated blocks,
// each hardlinked inode once.
func diskUsage(ctx context.Context, dir string) (size, inodes int64, err error) {
	seen := make(map[uint64]struct{})
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no inode information", dir)
		}
		// One directory is one filesystem: the inode number alone is unique.
		if _, dup := seen[st.Ino]; dup {
			return nil
		}
		seen[st.Ino] = struct{}{}
		size += st.Blocks * 512
		inodes++
		return nil
	})
	return size, inodes, err
}

func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// syncRoot makes a rename in the root durable. Its failure is only logged:
// the rename has happened, and the caller's operation with it.
func (s *Store) syncRoot() {
	f, err := os.Open(s.root)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err != nil {
		s.log.Warn("cannot sync snapshot root", "path", s.root, "error", err)
	}
}
