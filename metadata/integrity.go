package metadata

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// checkFile looks at an existing file before it is opened for writing, so
// that a damaged one is refused untouched instead of "repaired" into an
// empty store, which would make corrald forget every running pod. A file
// that does not exist is fine: Open creates it.
//
// bbolt trusts the file: a truncated or scribbled-over page is read through
// the memory map, and the read faults, panics, loops or asks for all the
// memory there is, killing the daemon with a Go stack instead of a message.
// So the pages are checked in a plain copy of the bytes first (checkPages),
// and only a file whose page tree holds together is handed to bbolt.
func checkFile(path string, timeout time.Duration) (err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("metadata: %s is not a regular file: %w", path, errdefs.ErrFailedPrecondition)
	}
	// The lock bbolt itself takes: a file another corrald is writing is
	// not damaged, only busy, and must be read whole.
	if err := flock(f, unix.LOCK_SH, timeout); err != nil {
		return locked(path, timeout, err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("metadata: read %s: %w", path, err)
	}
	if len(data) == 0 {
		// bbolt would initialise an empty file as a new store. A store
		// that existed and lost its content must not pass as a new one.
		return damaged(path, errors.New("the file is empty (0 bytes)"))
	}
	if err := checkPages(data); err != nil {
		return damaged(path, err)
	}

	// The pages hold together; bbolt's own check (key order, pages
	// neither used nor free) runs on its view of the same bytes. Should it
	// still trip, a fault is a panic and a panic is a damaged file.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged(path, fmt.Errorf("reading it failed: %v", r))
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return locked(path, timeout, err)
		}
		return damaged(path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) (err error) {
		// Recovered here, not only above: a panic out of View would leave
		// the transaction open, and Close would wait for it forever.
		defer func() {
			if r := recover(); r != nil {
				err = damaged(path, fmt.Errorf("reading it failed: %v", r))
			}
		}()
		if err := walk(tx.Cursor(), tx.Bucket, 0); err != nil {
			return damaged(path, err)
		}
		// Drain the channel whole: Check reads the map from a goroutine of
		// its own, which must be done before the file is unmapped.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = damaged(path, err)
			}
		}
		return first
	})
}

// flock takes how (unix.LOCK_SH or LOCK_EX) on f, retrying until timeout
// as bbolt does.
func flock(f *os.File, how int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil || !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return bolterrors.ErrTimeout
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// maxDepth bounds the walk: corral's tree is two buckets deep, and a
// damaged file could make a bucket its own child.
const maxDepth = 8

// walk reads every key and value under c, descending into buckets.
func walk(c *bolt.Cursor, child func([]byte) *bolt.Bucket, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("buckets nested deeper than %d", maxDepth)
	}
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			continue // a value, read by the cursor
		}
		b := child(k)
		if b == nil {
			return fmt.Errorf("bucket %q cannot be opened", k)
		}
		if err := walk(b.Cursor(), b.Bucket, depth+1); err != nil {
			return fmt.Errorf("%s/%w", k, err)
		}
	}
	return nil
}

// damaged is the error for a file corrald must not start on. It says what
// happened and what a person can do, and it promises what Open keeps: the
// file is not touched, so nothing is lost that a backup or a tool could
// still get back.
func damaged(path string, cause error) error {
	return fmt.Errorf("metadata: %s is damaged: %v. corrald will not start on it: "+
		"an empty store would forget the pods still running on this node. The file is left as it is. "+
		"Restore it from a backup, or move it aside (mv %s %s.damaged) to start with no records, "+
		"then remove the pods left over from before by hand (corralctl shims lists their shims): %w",
		path, cause, path, path, errdefs.ErrDataLoss)
}

// locked is the error for a file another process holds.
func locked(path string, timeout time.Duration, err error) error {
	return fmt.Errorf("metadata: open %s: still locked by another process after %s (is another corrald using the same --root?). "+
		"Stop that corrald, or give this one its own --root and --state: %w: %w",
		path, timeout, err, errdefs.ErrUnavailable)
}
