package metadata

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// FuzzDecode feeds the decoders what a damaged or hostile file could hold.
// They must not panic, and whatever they accept must re-encode to a fixed
// point, so a record read and rewritten by Update does not drift.
func FuzzDecode(f *testing.F) {
	sb := testSandbox("sb1", "pod")
	c := testContainer("c1", "sb1", "app")
	c.StartedAt, c.FinishedAt = time.Unix(0, -5), time.Unix(1<<40, 7)
	c.Rootfs = []Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a"}}}
	img := Image{ID: "sha256:1", Config: []byte("{}"), Size: -1}
	for _, seed := range [][]byte{
		must(encodeSandbox(&sb)), must(encodeContainer(&c)), must(encodeImage(&img)),
		[]byte(`null`), []byte(`{}`), []byte(`{"created_at":"2024-01-01T00:00:00Z"}`),
		[]byte(`{"created_at":9223372036854775807,"labels":{"a":"\ud800"}}`),
		[]byte(`{"config":"not base64"}`), []byte("\xff\xfe"), nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fixedPoint(t, "sandbox", data, decodeSandbox, encodeSandbox)
		fixedPoint(t, "container", data, decodeContainer, encodeContainer)
		fixedPoint(t, "image", data, decodeImage, encodeImage)
		parseVersion(data)
	})
}

func fixedPoint[T any](t *testing.T, what string, data []byte, decode func([]byte) (*T, error), encode func(*T) ([]byte, error)) {
	rec, err := decode(data)
	if err != nil {
		return
	}
	once, err := encode(rec)
	if err != nil {
		t.Fatalf("%s: decoded but does not encode: %v", what, err)
	}
	rec2, err := decode(once)
	if err != nil {
		t.Fatalf("%s: own encoding %s does not decode: %v", what, once, err)
	}
	twice, err := encode(rec2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(once, twice) {
		t.Fatalf("%s: round trip drifts:\n%s\n%s", what, once, twice)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzOpen opens arbitrary bytes as meta.db, as a crash, a full disk or a
// bad copy could leave it. Open must answer with a store or an error, never
// a panic or a fault; a refused file stays byte for byte as it was; and a
// file Open accepts must stay usable: records can be listed (or are
// reported as data loss), written, and the file opens again after.
func FuzzOpen(f *testing.F) {
	for _, seed := range storeSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(memDir(t), "meta.db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{Timeout: time.Second})
		if err != nil {
			if after, _ := os.ReadFile(path); !bytes.Equal(after, data) {
				t.Fatalf("refused file changed: %v", err)
			}
			return
		}
		listAll(t, s)
		if err := s.CreateSandbox(testSandbox("fuzz-new", "fuzz-new")); err != nil && !errdefs.IsDataLoss(err) && !errdefs.IsAlreadyExists(err) {
			t.Errorf("CreateSandbox in an accepted file: %v", err)
		}
		// Deletes rebalance bbolt's tree, which reads pages differently.
		cs, _ := s.ListContainers(nil)
		for _, c := range cs {
			s.DeleteContainer(c.ID)
		}
		sbs, _ := s.ListSandboxes(nil)
		for _, sb := range sbs {
			s.DeleteSandbox(sb.ID)
		}
		imgs, _ := s.ListImages(nil)
		for _, img := range imgs {
			s.DeleteImage(img.ID)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = Open(path, Options{Timeout: time.Second})
		if err != nil {
			t.Fatalf("a file Open accepted and wrote to does not open again: %v", err)
		}
		s.Close()
	})
}

// storeSeeds are store files as corrald writes them: new, with records of
// every kind, and after deletes (free pages).
func storeSeeds(f testing.TB) [][]byte {
	dir := f.TempDir()
	var out [][]byte
	for i, fill := range []func(*Store){
		func(*Store) {},
		func(s *Store) {
			s.CreateSandbox(testSandbox("sb1", "pod"))
			s.CreateContainer(testContainer("c1", "sb1", "app"))
			s.CreateImage(Image{ID: "sha256:1", Config: []byte("{}")})
		},
		func(s *Store) {
			for _, id := range []string{"a", "b", "c", "d"} {
				sb := testSandbox(id, id)
				sb.Labels = map[string]string{"pad": strings.Repeat(id, 600)}
				s.CreateSandbox(sb)
			}
			s.DeleteSandbox("b")
			s.DeleteSandbox("c")
		},
	} {
		// Small pages keep the seeds small: the fuzzer mutates and
		// minimizes whole files.
		path := filepath.Join(dir, fmt.Sprint(i), "meta.db")
		os.MkdirAll(filepath.Dir(path), 0o700)
		db, err := bolt.Open(path, 0o600, &bolt.Options{PageSize: 1024})
		if err != nil {
			f.Fatal(err)
		}
		db.Close()
		s, err := open(path, Options{}, currentSchema())
		if err != nil {
			f.Fatal(err)
		}
		fill(s)
		s.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		// bbolt grows a file ahead of use; the pages past the high-water
		// mark are not needed, and the fuzzer need not mutate them.
		m, err := pickMeta(b)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b[:m.hwm*uint64(m.pageSize)])
	}
	return out
}

// listAll reads every record of every kind: each list succeeds or reports
// data loss, nothing else.
func listAll(t *testing.T, s *Store) {
	t.Helper()
	var ids []string
	for what, list := range map[string]func() error{
		"sandboxes": func() error {
			rs, err := s.ListSandboxes(nil)
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			return err
		},
		"containers": func() error {
			rs, err := s.ListContainers(nil)
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			return err
		},
		"images": func() error {
			rs, err := s.ListImages(nil)
			for _, r := range rs {
				ids = append(ids, r.ID)
			}
			return err
		},
	} {
		if err := list(); err != nil && !errdefs.IsDataLoss(err) {
			t.Fatalf("list %s: %v, want success or DataLoss", what, err)
		}
	}
	for _, id := range ids {
		if err := validateID("record", id); err != nil {
			t.Fatalf("a listed record has an ID Create refuses: %v", err)
		}
	}
}

// FuzzStoredRecord puts arbitrary bytes under an arbitrary key of a store
// file, as an older corrald (records missing today's fields, or with fields
// since dropped), a newer one of the same schema, or damage could have left
// them, next to a good pod. Every read path must cope: the good pod stays
// readable, the odd record reads or is reported as data loss naming it, and
// it can always be deleted, after which the store lists cleanly again.
func FuzzStoredRecord(f *testing.F) {
	sb := testSandbox("sb2", "other")
	c := testContainer("c2", "sbok", "app")
	img := Image{ID: "sha256:2", Config: []byte(`{"architecture":"amd64"}`), RepoTags: []string{"x:1"}}
	for _, seed := range []struct {
		kind    byte
		key     string
		value   []byte
		version string
	}{
		{0, "sb2", must(encodeSandbox(&sb)), "1"},
		{1, "c2", must(encodeContainer(&c)), "1"},
		{2, "sha256:2", must(encodeImage(&img)), "1"},
		// As a corrald from before times were stored as nanoseconds, and
		// before the Extra maps, would have written them.
		{0, "old", []byte(`{"id":"old","name":"n","namespace":"ns","uid":"u","state":"ready","created_at":"2024-01-01T00:00:00Z"}`), "1"},
		{1, "oldc", []byte(`{"id":"oldc","sandbox_id":"sbok","name":"app","state":"running","started_at":1700000000000000000}`), "1"},
		{2, "sha256:old", []byte(`{"id":"sha256:old","config":"e30=","chain_ids":null}`), "1"},
		// A field from the future, and one record under another's key.
		{0, "sb3", []byte(`{"id":"sb3","name":"n","namespace":"ns","uid":"u","state":"ready","vm":{"cpus":2}}`), "1"},
		{0, "sb4", must(encodeSandbox(&sb)), "1"},
		{0, "../x", []byte(`{"id":"../x","name":"n","namespace":"ns","uid":"u","state":"ready"}`), "1"},
		{1, "c3", []byte(`{"id":"c3","sandbox_id":"gone","state":"exited","exit_code":-1}`), "1"},
		{0, "v0", []byte(`{}`), ""},
		{0, "v2", []byte(`{}`), "2"},
	} {
		f.Add(seed.kind, []byte(seed.key), seed.value, []byte(seed.version))
	}
	buckets := [][]byte{sandboxesBucket, containersBucket, imagesBucket}
	f.Fuzz(func(t *testing.T, kindSel byte, key, value, version []byte) {
		if len(key) == 0 || len(key) > bolt.MaxKeySize || string(key) == "sbok" {
			return
		}
		bkt := buckets[int(kindSel)%len(buckets)]
		path := filepath.Join(memDir(t), "meta.db")
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSandbox(testSandbox("sbok", "good")); err != nil {
			t.Fatal(err)
		}
		err = s.db.Update(func(tx *bolt.Tx) error {
			if len(version) == 0 {
				if err := tx.DeleteBucket(metaBucket); err != nil {
					return err
				}
			} else if err := tx.Bucket(metaBucket).Put(schemaVersionKey, version); err != nil {
				return err
			}
			b, _ := bucket(tx, bkt)
			return b.Put(key, value)
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()

		s, err = Open(path, Options{})
		if err != nil {
			if string(version) == "1" {
				t.Fatalf("Open of a version 1 file with one odd record: %v", err)
			}
			return
		}
		defer s.Close()
		if _, err := s.GetSandbox("sbok"); err != nil {
			t.Fatalf("the good pod next to the odd record: %v", err)
		}
		listAll(t, s)
		id := string(key)
		var getErr error
		switch {
		case bytes.Equal(bkt, sandboxesBucket):
			_, getErr = s.GetSandbox(id)
		case bytes.Equal(bkt, containersBucket):
			_, getErr = s.GetContainer(id)
		default:
			_, getErr = s.GetImage(id)
		}
		if getErr != nil && !errdefs.IsDataLoss(getErr) && !errdefs.IsInvalidArgument(getErr) {
			t.Fatalf("get %q: %v, want success, DataLoss or InvalidArgument", id, getErr)
		}
		var delErr error
		switch {
		case bytes.Equal(bkt, sandboxesBucket):
			delErr = s.DeleteSandbox(id)
		case bytes.Equal(bkt, containersBucket):
			delErr = s.DeleteContainer(id)
		default:
			delErr = s.DeleteImage(id)
		}
		if delErr != nil {
			t.Fatalf("delete %q: %v; an odd record must always be deletable", id, delErr)
		}
		if sbs, err := s.ListSandboxes(nil); err != nil || len(sbs) != 1 || sbs[0].ID != "sbok" {
			t.Fatalf("after deleting %q: sandboxes %v, %v; want only sbok", id, sbs, err)
		}
		for _, list := range []func() error{
			func() error { _, err := s.ListContainers(nil); return err },
			func() error { _, err := s.ListImages(nil); return err },
		} {
			if err := list(); err != nil {
				t.Fatalf("after deleting %q: %v", id, err)
			}
		}
	})
}

// memDir is a temporary directory in memory where the system has one: every
// bbolt commit fsyncs, and on a disk shared with other work a fuzz run
// would measure the disk's flushes rather than the code.
func memDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "corral-fuzz-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
