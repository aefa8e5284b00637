package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Limits on what an archive may make corrald do. An archive is untrusted
// input: it may come from any file a user hands to corralctl.
const (
	// maxArchiveEntries bounds the entries of one archive; an image of a
	// hundred layers has a few hundred.
	maxArchiveEntries = 1 << 16
	// maxArchiveJSON bounds a JSON document read into memory (index,
	// manifest, image config).
	maxArchiveJSON = 8 << 20
	// maxLinkHops bounds how many links a name may go through.
	maxLinkHops = 16
)

// archive is a tar stream of images (docker-archive or OCI layout) read in
// one pass: every regular file spooled under dir with its sha256 digest and
// size, so that the stream may come from a pipe and any entry order works.
// Names are only keys of files: nothing is ever written under an entry's
// own name, so a hostile name cannot reach outside dir.
type archive struct {
	dir   string
	files map[string]*archiveFile
}

// archiveFile is one spooled regular file of an archive.
type archiveFile struct {
	path   string
	digest string
	size   int64
	// adopted is set once the file has moved into the content store.
	adopted bool
}

// readArchive spools the tar stream r (optionally gzip- or
// zstd-compressed, as `docker save | gzip` makes it) into a new directory
// under parent. The caller closes the archive, which removes what is left.
func readArchive(ctx context.Context, r io.Reader, parent string) (_ *archive, retErr error) {
	dir, err := os.MkdirTemp(parent, "import-")
	if err != nil {
		return nil, err
	}
	a := &archive{dir: dir, files: map[string]*archiveFile{}}
	defer func() {
		if retErr != nil {
			a.close()
		}
	}()
	stream, err := decompressStream(r)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	tr := tar.NewReader(ctxReader{ctx, stream})
	links := map[string]string{} // name → target name, resolved below
	entries := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("archive: not a readable tar stream: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		if entries++; entries > maxArchiveEntries {
			return nil, fmt.Errorf("archive: more than %d entries: %w", maxArchiveEntries, errdefs.ErrInvalidArgument)
		}
		name, err := archiveName(hdr.Name)
		if err != nil {
			return nil, err
		}
		if name == "" {
			continue // the archive's root directory
		}
		if _, dup := a.files[name]; dup {
			return nil, fmt.Errorf("archive: %q appears twice: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		if _, dup := links[name]; dup {
			return nil, fmt.Errorf("archive: %q appears twice: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		if isSparse(hdr) {
			// archive/tar expands the holes into zeros: a few bytes could
			// declare a terabyte. No image tool writes sparse entries.
			return nil, fmt.Errorf("archive: %s: sparse files are not supported: %w", name, errdefs.ErrInvalidArgument)
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			f, err := a.spool(tr, hdr.Size)
			if err != nil {
				return nil, fmt.Errorf("archive: %s: %w", name, err)
			}
			a.files[name] = f
		case tar.TypeSymlink:
			// Relative to the link's directory, or to the archive's root
			// when absolute; a target outside the archive resolves to
			// nothing.
			target := hdr.Linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(name), target)
			}
			if t, err := archiveName(target); err == nil && t != "" {
				links[name] = t
			}
		case tar.TypeLink:
			if t, err := archiveName(hdr.Linkname); err == nil && t != "" {
				links[name] = t
			}
		default:
			// Directories need no record; devices, fifos and the rest
			// have no place in an image archive and are passed over.
		}
	}
	for name := range links {
		if f := a.resolve(name, links); f != nil {
			a.files[name] = f
		}
	}
	return a, nil
}

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// resolve follows links from name to a regular file, or returns nil.
func (a *archive) resolve(name string, links map[string]string) *archiveFile {
	for range maxLinkHops {
		if f, ok := a.files[name]; ok {
			return f
		}
		next, ok := links[name]
		if !ok {
			return nil
		}
		name = next
	}
	return nil
}

// archiveName cleans an entry name into the key files are kept under:
// relative, no "." or ".." elements. A name that climbs out of the archive
// is refused rather than guessed at.
func archiveName(name string) (string, error) {
	clean := path.Clean("/" + name)
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return "", fmt.Errorf("archive: entry %q climbs out of the archive: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return strings.TrimPrefix(clean, "/"), nil
}

// spool copies one entry to a file of its own, hashing it on the way. The
// file is synced: it may become a blob of the content store by a rename.
func (a *archive) spool(r io.Reader, size int64) (*archiveFile, error) {
	f, err := os.CreateTemp(a.dir, "blob-")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if err != nil {
		return nil, err
	}
	if n != size {
		return nil, fmt.Errorf("%d bytes, header says %d: %w", n, size, errdefs.ErrInvalidArgument)
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return &archiveFile{path: f.Name(), digest: digestOf(h), size: n}, f.Close()
}

// close removes the spooled files that did not move into the content store.
func (a *archive) close() error {
	return os.RemoveAll(a.dir)
}

// has tells whether the archive holds a file by that name.
func (a *archive) has(name string) bool {
	_, ok := a.files[name]
	return ok
}

// readJSON decodes the file name into v.
func (a *archive) readJSON(name string, v any) error {
	b, err := a.readSmall(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("archive: %s: %v: %w", name, err, errdefs.ErrInvalidArgument)
	}
	return nil
}

// readSmall returns the bytes of a file small enough to hold in memory.
func (a *archive) readSmall(name string) ([]byte, error) {
	f, ok := a.files[name]
	if !ok {
		return nil, fmt.Errorf("archive: no %s in the archive: %w", name, errdefs.ErrInvalidArgument)
	}
	if f.size > maxArchiveJSON {
		return nil, fmt.Errorf("archive: %s is %d bytes, more than the %d a JSON document may have: %w", name, f.size, maxArchiveJSON, errdefs.ErrInvalidArgument)
	}
	return os.ReadFile(f.path)
}

// blob returns the file holding the blob with digest d in an OCI layout
// (blobs/ALG/HEX), checking that its content has that digest: the name
// is a promise the archive's writer made, the hash is what was received.
func (a *archive) blob(d string, size int64) (*archiveFile, error) {
	alg, hexPart, ok := strings.Cut(d, ":")
	if !ok || alg != "sha256" || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("archive: digest %q: only sha256 digests are supported: %w", d, errdefs.ErrInvalidArgument)
	}
	f, ok := a.files[path.Join("blobs", alg, hexPart)]
	if !ok {
		return nil, nil
	}
	if f.digest != d {
		return nil, fmt.Errorf("archive: blobs/%s/%s has digest %s: %w", alg, hexPart, f.digest, errdefs.ErrDataLoss)
	}
	if size >= 0 && f.size != size {
		return nil, fmt.Errorf("archive: blob %s is %d bytes, its descriptor says %d: %w", d, f.size, size, errdefs.ErrDataLoss)
	}
	return f, nil
}

// decompressStream undoes a gzip or zstd compression, recognised by its
// magic bytes, of a whole archive or of a layer.
func decompressStream(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(len(zstdMagic))
	switch {
	case bytes.HasPrefix(magic, []byte(gzipMagic)):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte(zstdMagic)):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, fmt.Errorf("zstd: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(br), nil
}

const (
	gzipMagic = "\x1f\x8b"
	zstdMagic = "\x28\xb5\x2f\xfd"
)

// compressionOf tells how the file at p is compressed: "gzip", "zstd" or
// "" for none, by its magic bytes.
func compressionOf(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic := make([]byte, len(zstdMagic))
	n, _ := io.ReadFull(f, magic)
	switch {
	case bytes.HasPrefix(magic[:n], []byte(gzipMagic)):
		return "gzip", nil
	case bytes.HasPrefix(magic[:n], []byte(zstdMagic)):
		return "zstd", nil
	}
	return "", nil
}
