package metadata

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "root", "meta.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	_, path := newStore(t)
	for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
}

func TestReopenPreservesRecords(t *testing.T) {
	s, path := newStore(t)
	now := time.Now()
	sb := testSandbox("sb1", "pod")
	sb.CreatedAt = now
	sb.Config = []byte{0x0a, 0x00, 0xff}
	sb.IPs = []string{"10.0.0.2", "fd00::2"}
	c := testContainer("c1", "sb1", "app")
	c.CreatedAt, c.StartedAt, c.FinishedAt = now, now.Add(time.Second), now.Add(2*time.Second)
	c.State, c.ExitCode, c.Reason, c.Message = ContainerExited, 137, "OOMKilled", "out of memory"
	c.Rootfs = []Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a:/b", "upperdir=/u"}}}
	img := Image{ID: "sha256:abcd", RepoTags: []string{"docker.io/library/busybox:1"}, Size: 1 << 40, CreatedAt: now, Pinned: true}
	for _, err := range []error{s.CreateSandbox(sb), s.CreateContainer(c), s.CreateImage(img)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gotSB, err := s.GetSandbox("sb1")
	if err != nil {
		t.Fatal(err)
	}
	gotC, err := s.GetContainer("c1")
	if err != nil {
		t.Fatal(err)
	}
	gotImg, err := s.GetImage("sha256:abcd")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, gotSB, sb)
	sameJSON(t, gotC, c)
	sameJSON(t, gotImg, img)
	if !gotC.FinishedAt.Equal(c.FinishedAt) || gotC.FinishedAt.UnixNano() != c.FinishedAt.UnixNano() {
		t.Errorf("FinishedAt %v, want %v", gotC.FinishedAt, c.FinishedAt)
	}
	// The name index survives too.
	if err := s.CreateSandbox(testSandbox("sb2", "pod")); !errdefs.IsAlreadyExists(err) {
		t.Errorf("same pod name after reopen: %v, want AlreadyExists", err)
	}
}

// sameJSON compares records through their JSON form, which compares times
// by instant rather than by location pointer.
func sameJSON(t *testing.T, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("got  %s\nwant %s", g, w)
	}
}

func TestSecondOpenTimesOut(t *testing.T) {
	_, path := newStore(t)
	start := time.Now()
	s2, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("second Open took %v", time.Since(start))
	}
	if !errors.Is(err, bolterrors.ErrTimeout) || !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "another corrald") {
		t.Errorf("error %q: want a timeout that says another corrald holds the file", err)
	}
}

// writeRaw prepares a file as some other binary might have left it.
func writeRaw(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func rawVersion(t *testing.T, path string) string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(metaBucket); b != nil {
			v = string(b.Get(schemaVersionKey))
		}
		return nil
	})
	return v
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	writeRaw(t, path, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(metaBucket)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket([]byte("v2")); err != nil {
			return err
		}
		return b.Put(schemaVersionKey, []byte("2"))
	})
	_, err := Open(path, Options{})
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a schema 2 file: %v, want FailedPrecondition naming the newer version", err)
	}
	if v := rawVersion(t, path); v != "2" {
		t.Errorf("version after refused Open: %q, want it untouched", v)
	}
	writeRaw(t, path, func(tx *bolt.Tx) error {
		if tx.Bucket(rootBucket) != nil {
			t.Error("refused Open created the v1 tree")
		}
		return nil
	})
}

func TestOpenWritesVersion(t *testing.T) {
	s, path := newStore(t)
	s.Close()
	if v := rawVersion(t, path); v != "1" {
		t.Errorf("schema_version %q, want 1", v)
	}
}

// TestMigrationV0 upgrades a file from before versioning, whose pods lived
// in a flat "pods" bucket, with a fake v0->v1 migration.
func TestMigrationV0(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	writeRaw(t, path, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("pods"))
		if err != nil {
			return err
		}
		return b.Put([]byte("old1"), []byte("nginx/default"))
	})
	runs := 0
	sc := schema{version: 1, migrations: []migration{{
		from: 0,
		name: "pods to v1/sandboxes",
		apply: func(tx *bolt.Tx) error {
			runs++
			if err := createBuckets(tx); err != nil {
				return err
			}
			sbs, err := bucket(tx, sandboxesBucket)
			if err != nil {
				return err
			}
			err = tx.Bucket([]byte("pods")).ForEach(func(k, v []byte) error {
				name, ns, _ := strings.Cut(string(v), "/")
				data, err := encodeSandbox(&Sandbox{ID: string(k), Name: name, Namespace: ns, State: SandboxNotReady})
				if err != nil {
					return err
				}
				return sbs.Put(k, data)
			})
			if err != nil {
				return err
			}
			return tx.DeleteBucket([]byte("pods"))
		},
	}}}
	for range 2 {
		s, err := open(path, Options{}, sc)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := s.GetSandbox("old1")
		if err != nil || sb.Name != "nginx" || sb.Namespace != "default" {
			t.Errorf("migrated sandbox: %+v, %v", sb, err)
		}
		s.Close()
	}
	if runs != 1 {
		t.Errorf("migration ran %d times, want once", runs)
	}
	if v := rawVersion(t, path); v != "1" {
		t.Errorf("schema_version %q after migration, want 1", v)
	}
}

func TestMigrationChain(t *testing.T) {
	s, path := newStore(t)
	if err := s.CreateSandbox(testSandbox("sb1", "pod")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	var order []int
	step := func(from int) migration {
		return migration{from: from, name: "step", apply: func(*bolt.Tx) error {
			order = append(order, from)
			return nil
		}}
	}
	failing := schema{version: 3, migrations: []migration{step(1), {from: 2, name: "broken", apply: func(tx *bolt.Tx) error {
		// A partial write must not survive the failure.
		if err := tx.Bucket(metaBucket).Put([]byte("junk"), []byte("x")); err != nil {
			return err
		}
		return errors.New("boom")
	}}}}
	if _, err := open(path, Options{}, failing); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("failing migration: %v", err)
	}
	if v := rawVersion(t, path); v != "1" {
		t.Fatalf("version %q after failed migration, want 1", v)
	}
	writeRaw(t, path, func(tx *bolt.Tx) error {
		if tx.Bucket(metaBucket).Get([]byte("junk")) != nil {
			t.Error("a failed migration's write survived")
		}
		return nil
	})

	if _, err := open(path, Options{}, schema{version: 3, migrations: []migration{step(2)}}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("missing migration from 1: %v, want FailedPrecondition", err)
	}

	order = nil
	s, err := open(path, Options{}, schema{version: 3, migrations: []migration{step(2), step(1)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(order) != 2 || order[0] != 1 || order[1] != 2 {
		t.Errorf("migrations ran in order %v, want [1 2]", order)
	}
	if _, err := s.GetSandbox("sb1"); err != nil {
		t.Error(err)
	}
}

func TestOpenRejectsGarbageVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	writeRaw(t, path, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(metaBucket)
		if err != nil {
			return err
		}
		return b.Put(schemaVersionKey, []byte("one"))
	})
	if _, err := Open(path, Options{}); !errdefs.IsDataLoss(err) {
		t.Errorf("Open with version \"one\": %v, want DataLoss", err)
	}
}

func TestCorruptRecordIsReportedAndDeletable(t *testing.T) {
	s, _ := newStore(t)
	if err := s.CreateSandbox(testSandbox("sb1", "pod")); err != nil {
		t.Fatal(err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b, _ := bucket(tx, sandboxesBucket)
		return b.Put([]byte("sb1"), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSandbox("sb1"); !errdefs.IsDataLoss(err) || !strings.Contains(err.Error(), "sb1") {
		t.Errorf("Get of corrupt record: %v, want DataLoss naming it", err)
	}
	if _, err := s.ListSandboxes(nil); !errdefs.IsDataLoss(err) {
		t.Errorf("List with corrupt record: %v, want DataLoss", err)
	}
	if err := s.DeleteSandbox("sb1"); err != nil {
		t.Fatalf("Delete of corrupt record: %v", err)
	}
	// Its name was freed even though the record could not be read.
	if err := s.CreateSandbox(testSandbox("sb2", "pod")); err != nil {
		t.Errorf("name still reserved after deleting the corrupt record: %v", err)
	}
}

func TestValidateID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true},
		{"sha256:0123abcd", true},
		{"my-pod_1.v2+x=y", true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"../x", false},
		{"a\x00b", false},
		{"a b", false},
		{"é", false},
		{strings.Repeat("a", maxIDLen), true},
		{strings.Repeat("a", maxIDLen+1), false},
	} {
		err := validateID("sandbox", tc.id)
		if tc.ok && err != nil {
			t.Errorf("%q: %v", tc.id, err)
		}
		if !tc.ok && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%q: %v, want InvalidArgument", tc.id, err)
		}
	}
}

func TestDumpShowsRecordsAsStored(t *testing.T) {
	s, _ := newStore(t)
	if err := s.CreateSandbox(testSandbox("sb1", "pod")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateContainer(testContainer("c1", "sb1", "app")); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	var sandboxJSON []byte
	err := s.Dump(func(bucket string, key, value []byte) error {
		got[bucket] = append(got[bucket], string(key))
		if bucket == "v1/sandboxes" {
			sandboxJSON = append([]byte(nil), value...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for bucket, want := range map[string][]string{
		"meta":          {"schema_version"},
		"v1/sandboxes":  {"sb1"},
		"v1/containers": {"c1"},
	} {
		if strings.Join(got[bucket], ",") != strings.Join(want, ",") {
			t.Errorf("bucket %s: keys %q, want %q", bucket, got[bucket], want)
		}
	}
	var rec map[string]any
	if err := json.Unmarshal(sandboxJSON, &rec); err != nil || rec["name"] != "pod" {
		t.Errorf("sandbox record %s: %v", sandboxJSON, err)
	}
	stop := errors.New("stop")
	if err := s.Dump(func(string, []byte, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Dump did not return fn's error: %v", err)
	}
}
