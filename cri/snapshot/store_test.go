package snapshot

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

func TestChainID(t *testing.T) {
	// Per the OCI image spec, config.md, "Layer ChainID".
	d0 := digest.FromString("layer 0")
	d1 := digest.FromString("layer 1")
	if got := ChainID("", d0); got != d0 {
		t.Errorf("ChainID of a base layer = %s, want its diff ID %s", got, d0)
	}
	want := digest.FromString(d0.String() + " " + d1.String())
	if got := ChainID(d0, d1); got != want {
		t.Errorf("ChainID = %s, want %s", got, want)
	}
}

func TestUnpackConcurrentSameLayer(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, testLogger(t))
	data := buildTar(t, file("shared", "shared"))
	var opens atomic.Int32
	l := layer(data, data)
	l.Open = func(context.Context) (io.ReadCloser, error) {
		opens.Add(1)
		// Slow enough that every caller arrives while this one works.
		time.Sleep(100 * time.Millisecond)
		return io.NopCloser(bytes.NewReader(data)), nil
	}

	const callers = 8
	infos := make([]Info, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { infos[i], errs[i] = e.store.Unpack(t.Context(), "", l) })
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || infos[i] != infos[0] {
			t.Errorf("caller %d: %+v, %v; want %+v", i, infos[i], errs[i], infos[0])
		}
	}
	if n := opens.Load(); n != 1 {
		t.Errorf("layer opened %d times, want once", n)
	}
	// Present now: another pull opens nothing.
	if _, err := e.store.Unpack(t.Context(), "", l); err != nil || opens.Load() != 1 {
		t.Errorf("Unpack of a present layer: %v, %d opens", err, opens.Load())
	}
}

// A waiter does not inherit the failure of the caller it waited on: that
// caller's blob may have been the bad one.
func TestUnpackConcurrentRetriesAfterFailure(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, testLogger(t))
	data := buildTar(t, file("f", "f"))
	started := make(chan struct{})
	bad := layer(data, data)
	bad.Open = func(context.Context) (io.ReadCloser, error) {
		close(started)
		time.Sleep(100 * time.Millisecond)
		return nil, errors.New("registry hung up")
	}
	var goodOpens atomic.Int32
	good := layer(data, data)
	good.Open = func(context.Context) (io.ReadCloser, error) {
		goodOpens.Add(1)
		return io.NopCloser(bytes.NewReader(data)), nil
	}

	var wg sync.WaitGroup
	var badErr error
	wg.Go(func() { _, badErr = e.store.Unpack(t.Context(), "", bad) })
	<-started
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = e.store.Unpack(t.Context(), "", good) })
	}
	wg.Wait()
	if badErr == nil {
		t.Error("the failing caller got no error")
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("waiter %d: %v", i, err)
		}
	}
	if n := goodOpens.Load(); n != 1 {
		t.Errorf("good layer opened %d times, want once", n)
	}
}

func TestStoreLifecycle(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, testLogger(t))
	ctx := t.Context()
	s := e.store
	l0data := buildTar(t, file("base", "base"))
	l1data := buildTar(t, file("top", "top"))
	l0, l1 := layer(l0data, l0data), layer(l1data, l1data)

	if _, err := s.Unpack(ctx, ChainID("", l0.DiffID), l1); !errdefs.IsNotFound(err) {
		t.Fatalf("Unpack on a missing parent: %v, want not found", err)
	}
	base, err := s.Unpack(ctx, "", l0)
	if err != nil {
		t.Fatal(err)
	}
	top, err := s.Unpack(ctx, base.ChainID, l1)
	if err != nil {
		t.Fatal(err)
	}
	if top.Parent != base.ChainID || top.ChainID != ChainID(base.ChainID, l1.DiffID) {
		t.Errorf("top = %+v, want parent %s", top, base.ChainID)
	}
	// The same diff on another parent is another snapshot.
	alone, err := s.Unpack(ctx, "", l1)
	if err != nil || alone.ChainID == top.ChainID {
		t.Fatalf("l1 as a base layer: %+v, %v", alone, err)
	}

	dirs, err := s.LowerDirs(top.ChainID)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(e.root, top.ChainID.Encoded(), "fs"), filepath.Join(e.root, base.ChainID.Encoded(), "fs")}
	if len(dirs) != 2 || dirs[0] != want[0] || dirs[1] != want[1] {
		t.Errorf("LowerDirs = %v, want %v", dirs, want)
	}

	infos, err := s.List()
	if err != nil || len(infos) != 3 {
		t.Fatalf("List = %v, %v; want 3 snapshots", infos, err)
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	// Each snapshot: its fs directory and one file, measured at unpack;
	// and its own directory and meta.json; and the store's root.
	if u.Inodes != 3*(2+2)+1 || u.Bytes <= base.Size+top.Size+alone.Size {
		t.Errorf("Usage = %+v, snapshots %+v %+v %+v", u, base, top, alone)
	}
	if b, n := du(t, e.root); u.Bytes != b || u.Inodes != n {
		t.Errorf("Usage = %+v; du says %d bytes, %d inodes", u, b, n)
	}

	if err := s.Remove(base.ChainID); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Remove of a parent: %v, want failed precondition", err)
	}
	if err := s.Remove(top.ChainID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(base.ChainID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(base.ChainID); !errdefs.IsNotFound(err) {
		t.Errorf("second Remove: %v, want not found", err)
	}
	if _, err := s.Stat(top.ChainID); !errdefs.IsNotFound(err) {
		t.Errorf("Stat of a removed snapshot: %v, want not found", err)
	}
	if _, err := s.LowerDirs(top.ChainID); !errdefs.IsNotFound(err) {
		t.Errorf("LowerDirs of a removed snapshot: %v, want not found", err)
	}
	if err := sameNames(e.root, alone.ChainID.Encoded()); err != nil {
		t.Error(err)
	}
}

func TestNewRemovesLeftovers(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, testLogger(t))
	data := buildTar(t, file("f", "f"))
	info, err := e.store.Unpack(t.Context(), "", layer(data, data))
	if err != nil {
		t.Fatal(err)
	}
	// What a crash mid-unpack and mid-remove leave behind.
	for _, p := range []string{"tmp-123/fs/half", "tmp-456/fs/dir/deeper"} {
		if err := os.MkdirAll(filepath.Join(e.root, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(e.root, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := sameNames(e.root, info.ChainID.Encoded()); err != nil {
		t.Error(err)
	}
	if _, err := s.Stat(info.ChainID); err != nil {
		t.Errorf("committed snapshot lost: %v", err)
	}
}

func TestUnpackRejectsBadDigests(t *testing.T) {
	e := newEnv(t, testLogger(t))
	data := []byte{}
	for _, tc := range []struct {
		name   string
		parent digest.Digest
		diffID digest.Digest
	}{
		{"empty diff ID", "", ""},
		{"not a digest", "", "../../etc"},
		{"short hex", "", "sha256:abc"},
		{"sha512", "", digest.Digest("sha512:" + strings.Repeat("ab", 64))},
		{"bad parent", "sha256:../../..", digest.FromBytes(data)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := layer(data, data)
			l.DiffID = tc.diffID
			if _, err := e.store.Unpack(t.Context(), tc.parent, l); err == nil {
				t.Error("Unpack accepted it")
			}
		})
	}
	if err := sameNames(e.root); err != nil {
		t.Error(err)
	}
}

func TestRemoveDamagedSnapshot(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, testLogger(t))
	data := buildTar(t, file("f", "f"))
	info, err := e.store.Unpack(t.Context(), "", layer(data, data))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.root, info.ChainID.Encoded(), metaFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Stat(info.ChainID); err == nil || errdefs.IsNotFound(err) {
		t.Errorf("Stat of damaged metadata: %v, want an error other than not found", err)
	}
	if infos, err := e.store.List(); err != nil || len(infos) != 0 {
		t.Errorf("List = %v, %v; want the damaged snapshot left out", infos, err)
	}
	if err := e.store.Remove(info.ChainID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if err := sameNames(e.root); err != nil {
		t.Error(err)
	}
}
