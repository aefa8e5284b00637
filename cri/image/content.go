package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// content keeps blobs by digest: ROOT/content/blobs/sha256/HEX. A blob is
// written to a temp file, verified and renamed, so a present file is always
// complete and correct.
type content struct {
	dir string
}

func newContent(root string) (*content, error) {
	dir := filepath.Join(root, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	tmp := filepath.Join(root, "ingest")
	// Partial downloads of a previous run are worthless: start clean.
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	return &content{dir: dir}, nil
}

func (c *content) ingestDir() string {
	return filepath.Join(filepath.Dir(filepath.Dir(c.dir)), "ingest")
}

// path returns where digest d lives; only sha256 digests are accepted.
func (c *content) path(d string) (string, error) {
	hexPart, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hexPart) != 64 {
		return "", fmt.Errorf("digest %q: only sha256 digests are supported: %w", d, errdefs.ErrInvalidArgument)
	}
	if _, err := hex.DecodeString(hexPart); err != nil {
		return "", fmt.Errorf("digest %q: %w", d, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(c.dir, hexPart), nil
}

func (c *content) has(d string) bool {
	p, err := c.path(d)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// write stores what r yields as blob d, checking the digest and, when size
// is positive, the size: a registry (or a mirror) that sends other bytes
// than it promised gets caught here.
func (c *content) write(ctx context.Context, d string, size int64, r io.Reader) error {
	final, err := c.path(d)
	if err != nil {
		return err
	}
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	f, err := os.CreateTemp(c.ingestDir(), "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("download %s: %w", d, err)
	}
	if size > 0 && n != size {
		return fmt.Errorf("blob %s: got %d bytes, want %d: %w", d, n, size, errdefs.ErrDataLoss)
	}
	if got := digestOf(h); got != d {
		return fmt.Errorf("blob %s: content has digest %s: %w", d, got, errdefs.ErrDataLoss)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), final)
}

func (c *content) writeBytes(d string, b []byte) error {
	return c.write(context.Background(), d, int64(len(b)), bytes.NewReader(b))
}

func (c *content) open(d string) (io.ReadCloser, error) {
	p, err := c.path(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	return f, err
}

func (c *content) remove(d string) error {
	p, err := c.path(d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// list returns the digests of every stored blob.
func (c *content) list() ([]string, error) {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, "sha256:"+e.Name())
	}
	return out, nil
}

// usage measures the content store the way du does: the blocks and inodes
// of every blob, download in progress and directory under it.
func (c *content) usage() (bytes, inodes int64, err error) {
	root := filepath.Dir(filepath.Dir(c.dir))
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed by GC or a finished download meanwhile
		}
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		bytes += st.Blocks * 512
		inodes++
		return nil
	})
	return bytes, inodes, err
}

func digestOf(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// ctxReader stops a copy when ctx ends, between reads.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
