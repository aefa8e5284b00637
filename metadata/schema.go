package metadata

import (
	"fmt"
	"strconv"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this binary reads and writes. See the package
// doc for when it changes.
const SchemaVersion = 1

var (
	metaBucket       = []byte("meta")
	schemaVersionKey = []byte("schema_version")
	rootBucket       = []byte("v1")

	sandboxesBucket      = []byte("sandboxes")
	sandboxNamesBucket   = []byte("sandbox_names")
	containersBucket     = []byte("containers")
	containerNamesBucket = []byte("container_names")
	imagesBucket         = []byte("images")
)

// migration upgrades a file from schema version from to from+1. It runs
// inside the transaction that also records the new version, so it must not
// commit, and a failure leaves the file as it was.
type migration struct {
	from  int
	name  string // for the error message when it fails
	apply func(tx *bolt.Tx) error
}

// schema is the target of an upgrade: the version to reach and the
// migrations that lead there. Tests build their own to exercise the upgrade
// path; corrald always uses currentSchema.
type schema struct {
	version    int
	migrations []migration
}

// currentSchema is the migration table. Version 1 is the first layout, so
// there is nothing to migrate yet; a change to the layout appends
// {from: N, ...} here and bumps SchemaVersion to N+1.
func currentSchema() schema {
	return schema{version: SchemaVersion}
}

// upgrade brings the file in tx to sc.version. A file with no buckets at
// all is new and simply gets the current layout; a file with buckets but no
// recorded version predates versioning and counts as version 0.
func upgrade(tx *bolt.Tx, sc schema) error {
	version := sc.version
	if k, _ := tx.Cursor().First(); k != nil {
		var err error
		if version, err = readVersion(tx); err != nil {
			return err
		}
		// A file at the current version without its tree lost it: making
		// a new, empty one would hide that every record is gone.
		if version == sc.version && version >= 1 && tx.Bucket(rootBucket) == nil {
			return fmt.Errorf("schema version %d is recorded but bucket %s, which holds every record, is missing: %w",
				version, rootBucket, errdefs.ErrDataLoss)
		}
	}
	if version > sc.version {
		return fmt.Errorf("schema version %d is newer than this binary understands (%d); refusing to touch it, run a newer corrald: %w",
			version, sc.version, errdefs.ErrFailedPrecondition)
	}
	for v := version; v < sc.version; v++ {
		m, ok := findMigration(sc.migrations, v)
		if !ok {
			return fmt.Errorf("no migration from schema version %d to %d: %w", v, v+1, errdefs.ErrFailedPrecondition)
		}
		if err := m.apply(tx); err != nil {
			return fmt.Errorf("migrate schema %d to %d (%s): %w", v, v+1, m.name, err)
		}
	}
	if err := createBuckets(tx); err != nil {
		return err
	}
	meta, err := tx.CreateBucketIfNotExists(metaBucket)
	if err != nil {
		return err
	}
	return meta.Put(schemaVersionKey, []byte(strconv.Itoa(sc.version)))
}

func readVersion(tx *bolt.Tx) (int, error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return 0, nil
	}
	v := meta.Get(schemaVersionKey)
	if v == nil {
		return 0, nil
	}
	return parseVersion(v)
}

func parseVersion(b []byte) (int, error) {
	n, err := strconv.ParseUint(string(b), 10, 31)
	if err != nil {
		return 0, fmt.Errorf("unreadable schema version %q: %w", b, errdefs.ErrDataLoss)
	}
	return int(n), nil
}

func findMigration(ms []migration, from int) (migration, bool) {
	for _, m := range ms {
		if m.from == from {
			return m, true
		}
	}
	return migration{}, false
}

func createBuckets(tx *bolt.Tx) error {
	root, err := tx.CreateBucketIfNotExists(rootBucket)
	if err != nil {
		return err
	}
	for _, name := range [][]byte{sandboxesBucket, sandboxNamesBucket, containersBucket, containerNamesBucket, imagesBucket} {
		if _, err := root.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s/%s: %w", rootBucket, name, err)
		}
	}
	return nil
}
