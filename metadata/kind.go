package metadata

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// kind describes one record type to the generic code below, so the rules
// every kind shares (ID checks, index upkeep, one transaction per change)
// are written once.
type kind[T any] struct {
	name     string // in error messages: "sandbox"
	bucket   []byte
	id       func(*T) string
	validate func(*T) error
	encode   func(*T) ([]byte, error)
	decode   func([]byte) (*T, error)

	// index, when set, is the bucket holding indexKey(record) -> ID, which
	// makes that key unique among records of this kind. describe says what
	// the key means to a person reading the AlreadyExists error.
	index    []byte
	indexKey func(*T) []byte
	describe func(*T) string

	// onCreate and onDelete run inside the writing transaction, so a check
	// against other records (a container needs its sandbox, a sandbox may
	// not vanish under its containers) cannot race with another writer.
	onCreate func(tx *bolt.Tx, rec *T) error
	onDelete func(tx *bolt.Tx, id string) error
}

func (k *kind[T]) create(db *bolt.DB, rec *T) error {
	id := k.id(rec)
	if err := validateID(k.name, id); err != nil {
		return err
	}
	if err := k.validate(rec); err != nil {
		return err
	}
	data, err := k.encode(rec)
	if err != nil {
		return fmt.Errorf("%s %q: encode: %w", k.name, id, err)
	}
	return db.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, k.bucket)
		if err != nil {
			return err
		}
		if b.Get([]byte(id)) != nil {
			return fmt.Errorf("%s %q: %w", k.name, id, errdefs.ErrAlreadyExists)
		}
		if k.onCreate != nil {
			if err := k.onCreate(tx, rec); err != nil {
				return err
			}
		}
		if k.index != nil {
			ib, err := bucket(tx, k.index)
			if err != nil {
				return err
			}
			key := k.indexKey(rec)
			if owner := ib.Get(key); owner != nil {
				return fmt.Errorf("%s %q: %s is already reserved for %s %q: %w",
					k.name, id, k.describe(rec), k.name, owner, errdefs.ErrAlreadyExists)
			}
			if err := ib.Put(key, []byte(id)); err != nil {
				return err
			}
		}
		return b.Put([]byte(id), data)
	})
}

func (k *kind[T]) get(db *bolt.DB, id string) (*T, error) {
	if err := validateID(k.name, id); err != nil {
		return nil, err
	}
	var rec *T
	err := db.View(func(tx *bolt.Tx) error {
		b, err := bucket(tx, k.bucket)
		if err != nil {
			return err
		}
		data := b.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%s %q: %w", k.name, id, errdefs.ErrNotFound)
		}
		rec, err = k.decodeRecord(id, data)
		return err
	})
	return rec, err
}

// update runs fn on the stored record and writes the result, all in one
// write transaction: two updates of the same record cannot lose each other's
// change, and an error from fn (returned as is) leaves the record untouched.
// An update that changes nothing (an exit reported both by the shim's event
// and by StopContainer's own wait) is rolled back instead of committed: a
// commit is two fdatasyncs, whether or not a byte changed.
func (k *kind[T]) update(db *bolt.DB, id string, fn func(*T) error) (*T, error) {
	if err := validateID(k.name, id); err != nil {
		return nil, err
	}
	var out *T
	err := db.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, k.bucket)
		if err != nil {
			return err
		}
		data := b.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%s %q: %w", k.name, id, errdefs.ErrNotFound)
		}
		rec, err := k.decodeRecord(id, data)
		if err != nil {
			return err
		}
		var beforeKey []byte
		var beforeName string
		if k.index != nil {
			beforeKey, beforeName = k.indexKey(rec), k.describe(rec)
		}
		if err := fn(rec); err != nil {
			return err
		}
		// Identity is fixed at Create: letting it move would mean moving
		// index entries and, for containers, changing sandbox, which no CRI
		// call does.
		if got := k.id(rec); got != id {
			return fmt.Errorf("%s %q: update may not change the ID (to %q): %w", k.name, id, got, errdefs.ErrInvalidArgument)
		}
		if k.index != nil && !bytes.Equal(beforeKey, k.indexKey(rec)) {
			return fmt.Errorf("%s %q: update may not change %s (to %s): %w",
				k.name, id, beforeName, k.describe(rec), errdefs.ErrInvalidArgument)
		}
		if err := k.validate(rec); err != nil {
			return err
		}
		stored := data
		data, err = k.encode(rec)
		if err != nil {
			return fmt.Errorf("%s %q: encode: %w", k.name, id, err)
		}
		out = rec
		if bytes.Equal(stored, data) {
			return errUnchanged
		}
		return b.Put([]byte(id), data)
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return nil, err
	}
	return out, nil
}

// errUnchanged rolls back an update that would write the bytes already
// stored.
var errUnchanged = errors.New("record unchanged")

// delete removes the record and its index entry. A record that no longer
// decodes can still be deleted: its index entry is then found by value. So
// can one stored under a key no client could create (List reports it as
// data loss): the ID is only checked for what bbolt can look up.
func (k *kind[T]) delete(db *bolt.DB, id string) error {
	if id == "" || len(id) > bolt.MaxKeySize {
		return validateID(k.name, id)
	}
	return db.Update(func(tx *bolt.Tx) error {
		b, err := bucket(tx, k.bucket)
		if err != nil {
			return err
		}
		data := b.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%s %q: %w", k.name, id, errdefs.ErrNotFound)
		}
		if k.onDelete != nil {
			if err := k.onDelete(tx, id); err != nil {
				return err
			}
		}
		if k.index != nil {
			ib, err := bucket(tx, k.index)
			if err != nil {
				return err
			}
			if err := k.deleteIndex(ib, id, data); err != nil {
				return err
			}
		}
		return b.Delete([]byte(id))
	})
}

func (k *kind[T]) deleteIndex(ib *bolt.Bucket, id string, data []byte) error {
	if rec, err := k.decodeRecord(id, data); err == nil {
		key := k.indexKey(rec)
		if string(ib.Get(key)) == id {
			return ib.Delete(key)
		}
	}
	// Deleting while iterating is not safe in bbolt: collect first.
	var stale [][]byte
	err := ib.ForEach(func(key, owner []byte) error {
		if string(owner) == id {
			stale = append(stale, bytes.Clone(key))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, key := range stale {
		if err := ib.Delete(key); err != nil {
			return err
		}
	}
	return nil
}

// list returns the records (in ID order) that keep accepts; nil keeps all.
func (k *kind[T]) list(db *bolt.DB, keep func(T) bool) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		b, err := bucket(tx, k.bucket)
		if err != nil {
			return err
		}
		return b.ForEach(func(key, data []byte) error {
			rec, err := k.decodeRecord(string(key), data)
			if err != nil {
				return err
			}
			if keep == nil || keep(*rec) {
				out = append(out, *rec)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeRecord decodes what the file holds under key id. A record that does
// not decode, or that names another ID, is reported as data loss rather
// than skipped: hiding it would hide a pod.
func (k *kind[T]) decodeRecord(id string, data []byte) (*T, error) {
	rec, err := k.decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s %q: corrupt record (%w): %w", k.name, id, err, errdefs.ErrDataLoss)
	}
	if got := k.id(rec); got != id {
		return nil, fmt.Errorf("%s %q: record claims ID %q: %w", k.name, id, got, errdefs.ErrDataLoss)
	}
	// Other packages name directories after IDs: one that Create would
	// have refused must not come back out of the file either.
	if err := validateID(k.name, id); err != nil {
		return nil, fmt.Errorf("%s %q: stored under an invalid key (%w): %w", k.name, id, err, errdefs.ErrDataLoss)
	}
	return rec, nil
}

// maxIDLen keeps IDs usable as file names: other packages name bundle,
// state and log directories after them.
const maxIDLen = 255

// validateID accepts what corral and image digests generate (hex, and
// "sha256:hex") and a little more, but nothing that could escape a
// directory or confuse a path: no '/', no NUL, not "." or "..".
func validateID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%s ID is empty: %w", what, errdefs.ErrInvalidArgument)
	case len(id) > maxIDLen:
		return fmt.Errorf("%s ID %.32q... is %d bytes, longer than %d: %w", what, id, len(id), maxIDLen, errdefs.ErrInvalidArgument)
	case id == "." || id == "..":
		return fmt.Errorf("%s ID %q: %w", what, id, errdefs.ErrInvalidArgument)
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return fmt.Errorf("%s ID %q: character %q not allowed (letters, digits and ._-:+= only): %w",
				what, id, id[i], errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func idByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '.', '_', '-', ':', '+', '=':
		return true
	}
	return false
}

// appendKeyString appends s length-prefixed, which keeps composite index
// keys unambiguous whatever bytes the client put in a name, and makes the
// encoding of a leading component a safe prefix to scan by.
func appendKeyString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// be32 appends an attempt fixed-width, so it ends a key unambiguously.
func be32(b []byte, v uint32) []byte {
	return binary.BigEndian.AppendUint32(b, v)
}

// unixNano is how a time is stored: the CRI unit, exact, and zero for unset
// (time.Time{}.UnixNano() is not zero).
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
