package metadata

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// storeFile makes a closed store at a fresh path holding a few records,
// and returns the path and the file's bytes.
func storeFile(t *testing.T) (string, []byte) {
	t.Helper()
	s, path := newStore(t)
	for i, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		sb := testSandbox("sb"+name, "pod-"+name)
		sb.Labels = map[string]string{"big": strings.Repeat(name, 3000+i)}
		if err := s.CreateSandbox(sb); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateContainer(testContainer("c"+name, "sb"+name, "app")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

// TestOpenRefusesDamagedFile: every way a file can come back damaged from
// a crash, a full disk or a bad copy makes Open fail with DataLoss and a
// message that names the file and says what to do, and leaves the file
// byte for byte as it was.
func TestOpenRefusesDamagedFile(t *testing.T) {
	_, good := storeFile(t)
	pageSize := os.Getpagesize()
	if len(good) < 6*pageSize {
		t.Fatalf("test store is %d bytes; want at least 6 pages to damage", len(good))
	}
	for name, damage := range map[string]func([]byte) []byte{
		"empty":                func([]byte) []byte { return nil },
		"one byte":             func(b []byte) []byte { return b[:1] },
		"half a meta page":     func(b []byte) []byte { return b[:pageSize/2] },
		"truncated to 2 pages": func(b []byte) []byte { return b[:2*pageSize] },
		"truncated to 3 pages": func(b []byte) []byte { return b[:3*pageSize] },
		"last used page cut":   func(b []byte) []byte { return b[:hwm(t, good)-pageSize] },
		"garbage":              func(b []byte) []byte { return bytes.Repeat([]byte("corral"), len(b)/6) },
		"both metas zeroed": func(b []byte) []byte {
			clear(b[:2*pageSize])
			return b
		},
		"data pages zeroed": func(b []byte) []byte {
			clear(b[2*pageSize:])
			return b
		},
		// A cycle sends bbolt's cursor round forever.
		"a branch page pointing at itself": func(b []byte) []byte {
			for off := 2 * pageSize; off+pageSize <= len(b); off += pageSize {
				if ne.Uint16(b[off+8:]) == branchPage {
					ne.PutUint64(b[off+pageHeaderSize+8:], uint64(off/pageSize))
					return b
				}
			}
			t.Fatal("the test store has no branch page")
			return nil
		},
		"freelist claiming every page": func(b []byte) []byte {
			m, err := pickMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			off := int(m.freelist) * pageSize
			ne.PutUint16(b[off+10:], 0xFFFF)
			ne.PutUint64(b[off+pageHeaderSize:], 1<<62)
			return b
		},
		"data pages scribbled": func(b []byte) []byte {
			for i := 2 * pageSize; i < len(b); i += 7 {
				b[i] ^= 0x5a
			}
			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "meta.db")
			bad := damage(bytes.Clone(good))
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{Timeout: time.Second})
			if err == nil {
				s.Close()
				t.Fatal("Open of a damaged file succeeded")
			}
			t.Log(err)
			if !errdefs.IsDataLoss(err) {
				t.Errorf("error %v is not DataLoss", err)
			}
			for _, want := range []string{path, "damaged", "will not start", "left as it is", "mv " + path} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q: %v", want, err)
				}
			}
			after, rerr := os.ReadFile(path)
			if rerr != nil || !bytes.Equal(after, bad) {
				t.Errorf("Open changed the damaged file (%v)", rerr)
			}
		})
	}
}

// hwm is the size the pages of the store file b claim: bbolt grows a file
// ahead of use, so its tail may be unused.
func hwm(t *testing.T, b []byte) int {
	t.Helper()
	path := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return int(n)
}

func TestOpenAcceptsGoodFile(t *testing.T) {
	path, _ := storeFile(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if sbs, err := s.ListSandboxes(nil); err != nil || len(sbs) != 8 {
		t.Errorf("ListSandboxes = %d records, %v; want 8", len(sbs), err)
	}
}

// TestOpenRefusesLostTree: a file that records the current version but no
// longer holds the v1 tree lost every record; Open must not make a new,
// empty tree in its place.
func TestOpenRefusesLostTree(t *testing.T) {
	path, _ := storeFile(t)
	writeRaw(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(rootBucket) })
	_, err := Open(path, Options{})
	if !errdefs.IsDataLoss(err) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open without the v1 tree: %v, want DataLoss", err)
	}
	writeRaw(t, path, func(tx *bolt.Tx) error {
		if tx.Bucket(rootBucket) != nil {
			t.Error("the refused Open created a new v1 tree")
		}
		return nil
	})
}

func TestOpenLockedSaysWhatToDo(t *testing.T) {
	_, path := newStore(t)
	_, err := Open(path, Options{Timeout: 100 * time.Millisecond})
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("Open of a held file: %v, want Unavailable", err)
	}
	for _, want := range []string{path, "another corrald", "--root"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestOpenRefusesDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a directory: %v", err)
	}
}
