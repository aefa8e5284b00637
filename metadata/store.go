package metadata

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero: long enough for a daemon that is restarting to let
// go of the file, short enough that a second daemon on the same root reports
// the conflict instead of hanging.
const DefaultTimeout = 2 * time.Second

// Options tunes Open. The zero value is what corrald uses.
type Options struct {
	// Timeout bounds the wait for the exclusive lock on the file; zero means
	// DefaultTimeout. bbolt itself would wait forever.
	Timeout time.Duration
}

// Store is the open metadata file. Its methods are safe for concurrent use.
type Store struct {
	db *bolt.DB

	sandboxes  kind[Sandbox]
	containers kind[Container]
	images     kind[Image]
}

// Open opens (creating if needed) the store at path, upgrading an older
// schema and refusing a newer one. A file that exists but is damaged
// (truncated, empty, pages that do not check out) is refused with
// errdefs.ErrDataLoss and left untouched: Open never starts a store empty
// in place of one it could not read. The parent directory is created 0700 and
// the file 0600: records hold pod specs, which may carry secrets in env.
func Open(path string, opts Options) (*Store, error) {
	return open(path, opts, currentSchema())
}

func open(path string, opts Options, sc schema) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if err := checkFile(path, timeout); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, locked(path, timeout, err)
		}
		return nil, fmt.Errorf("metadata: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return upgrade(tx, sc) }); err != nil {
		db.Close()
		if errdefs.IsDataLoss(err) {
			return nil, damaged(path, err)
		}
		return nil, fmt.Errorf("metadata: open %s: %w", path, err)
	}
	return &Store{
		db:         db,
		sandboxes:  sandboxKind(),
		containers: containerKind(),
		images:     imageKind(),
	}, nil
}

// Close releases the file (and its lock). Calls after Close fail.
func (s *Store) Close() error {
	return s.db.Close()
}

// bucket returns v1/<name> in tx. A missing bucket means the file was
// damaged or edited by hand after Open created it.
func bucket(tx *bolt.Tx, name []byte) (*bolt.Bucket, error) {
	root := tx.Bucket(rootBucket)
	if root == nil {
		return nil, fmt.Errorf("metadata: bucket %s missing: %w", rootBucket, errdefs.ErrDataLoss)
	}
	b := root.Bucket(name)
	if b == nil {
		return nil, fmt.Errorf("metadata: bucket %s/%s missing: %w", rootBucket, name, errdefs.ErrDataLoss)
	}
	return b, nil
}

// Dump calls fn for every key of every bucket, in key order, from one
// consistent read: bucket is the bucket's path ("v1/sandboxes", "meta"),
// key and value the bytes as stored. It is for debugging (corralctl debug
// dump); nothing else should depend on the layout it shows. fn must not
// call the Store, and key and value are valid only during the call.
func (s *Store) Dump(fn func(bucket string, key, value []byte) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return dumpBucket(string(name), b, fn)
		})
	})
}

func dumpBucket(path string, b *bolt.Bucket, fn func(bucket string, key, value []byte) error) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				return dumpBucket(path+"/"+string(k), sub, fn)
			}
		}
		return fn(path, k, v)
	})
}
