package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func digestString(b string) string {
	s := sha256.Sum256([]byte(b))
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestContentWriteVerifies(t *testing.T) {
	c, err := newContent(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good := "hello blob"
	d := digestString(good)
	cases := []struct {
		name   string
		digest string
		size   int64
		data   string
		kind   func(error) bool
	}{
		{"good", d, int64(len(good)), good, nil},
		{"good, size unknown", d, 0, good, nil},
		{"wrong bytes", digestString("other"), 0, good, errdefs.IsDataLoss},
		{"short", digestString("other"), 100, "other", errdefs.IsDataLoss},
		{"not sha256", "sha512:abcd", 0, good, errdefs.IsInvalidArgument},
		{"bad hex", "sha256:" + strings.Repeat("z", 64), 0, good, errdefs.IsInvalidArgument},
		{"traversal", "sha256:../../etc/passwd", 0, good, errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.write(context.Background(), tc.digest, tc.size, strings.NewReader(tc.data))
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				rc, err := c.open(tc.digest)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(rc)
				rc.Close()
				if string(b) != tc.data {
					t.Errorf("read back %q", b)
				}
				return
			}
			if !tc.kind(err) {
				t.Fatalf("error %v", err)
			}
			if tc.digest != d && c.has(tc.digest) {
				t.Error("a rejected blob was stored")
			}
		})
	}
	if entries, _ := os.ReadDir(c.ingestDir()); len(entries) != 0 {
		t.Errorf("temp files left in ingest: %v", entries)
	}
	list, err := c.list()
	if err != nil || len(list) != 1 || list[0] != d {
		t.Errorf("list %v %v", list, err)
	}
	wantBytes, wantInodes := du(t, filepath.Dir(filepath.Dir(c.dir)))
	if b, n, err := c.usage(); err != nil || b != wantBytes || n != wantInodes || b < int64(len(good)) {
		t.Errorf("usage %d bytes %d inodes (%v); du says %d, %d", b, n, err, wantBytes, wantInodes)
	}
	if err := c.remove(d); err != nil || c.has(d) {
		t.Errorf("remove: %v", err)
	}
	if err := c.remove(d); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := c.open(d); !errdefs.IsNotFound(err) {
		t.Errorf("open removed blob: %v", err)
	}
}

func TestContentWriteCancelled(t *testing.T) {
	c, err := newContent(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.write(ctx, digestString("x"), 1, strings.NewReader("x")); err == nil {
		t.Fatal("cancelled write succeeded")
	}
}

func TestContentStartsClean(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "ingest"), 0o700)
	os.WriteFile(filepath.Join(root, "ingest", "blob-partial"), []byte("half"), 0o600)
	c, err := newContent(root)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(c.ingestDir()); len(entries) != 0 {
		t.Errorf("partial download survived a restart: %v", entries)
	}
}
