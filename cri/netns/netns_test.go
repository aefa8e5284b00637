package netns

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// These tests make and remove only namespaces of their own, under temp dirs.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces and mounts need root (CAP_SYS_ADMIN)")
	}
}

// pinDir returns a dir for pins; it undoes the private mount Create makes
// of it before t.TempDir's cleanup removes it (cleanups run last first).
func pinDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadNSInode is the inode of the calling thread's network namespace; the
// caller must hold its thread for the answer to mean anything.
func threadNSInode() (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat("/proc/thread-self/ns/net", &st)
	return st.Ino, err
}

// checkThreads fails unless n goroutines, each on a thread of its own while
// it looks, all find themselves in the namespace with inode want.
func checkThreads(t *testing.T, n int, want uint64) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			<-start // all hold a thread at once, so they sample n threads
			if got, err := threadNSInode(); err != nil || got != want {
				t.Errorf("a thread is in network namespace %d (%v), want %d", got, err, want)
			}
		})
	}
	close(start)
	wg.Wait()
}

// checkTasks fails unless every thread of the process is in the namespace
// with inode want: one left behind in a pod's namespace, even parked, would
// keep it alive.
func checkTasks(t *testing.T, want uint64) {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads under /proc/self/task: %v", err)
	}
	for _, p := range tasks {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue // the thread ended meanwhile
		}
		if st.Ino != want {
			t.Errorf("%s is namespace %d, want the host's %d", p, st.Ino, want)
		}
	}
}

type mountEntry struct {
	point    string
	fstype   string
	optional []string // shared:N, master:N, ...; none for a private mount
}

// mounts parses /proc/self/mountinfo. Mount points are left escaped (\040):
// the tests' paths have no spaces.
func mounts(t *testing.T) []mountEntry {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ms []mountEntry
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if sep < 6 || sep+1 >= len(f) {
			t.Fatalf("bad mountinfo line %q", line)
		}
		ms = append(ms, mountEntry{point: f[4], fstype: f[sep+1], optional: f[6:sep]})
	}
	return ms
}

// mountsUnder returns the mounts at dir or below it.
func mountsUnder(t *testing.T, dir string) []mountEntry {
	t.Helper()
	var under []mountEntry
	for _, m := range mounts(t) {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			under = append(under, m)
		}
	}
	return under
}

func TestCreate(t *testing.T) {
	needRoot(t)
	dir := pinDir(t)
	host := inode(t, "/proc/self/ns/net")

	p, err := Create(dir, "pod1")
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(dir, "pod1") {
		t.Errorf("Create = %q, want %q", p, filepath.Join(dir, "pod1"))
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(p, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		t.Errorf("statfs %s: type %#x, %v; want NSFS_MAGIC", p, fs.Type, err)
	}
	if ok, err := Exists(p); !ok || err != nil {
		t.Errorf("Exists = %v, %v", ok, err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o711 {
		t.Errorf("dir mode %v, %v; want 0711", st.Mode(), err)
	}
	for _, m := range mountsUnder(t, dir) {
		switch {
		case m.point == dir && len(m.optional) != 0:
			t.Errorf("dir is a mount point with propagation %v, want private", m.optional)
		case m.point == p && m.fstype != "nsfs":
			t.Errorf("%s is a %s mount, want nsfs", p, m.fstype)
		}
	}
	if n := len(mountsUnder(t, dir)); n != 2 {
		t.Errorf("%d mounts under dir, want 2 (dir itself and the pin): %v", n, mountsUnder(t, dir))
	}

	ns := inode(t, p)
	if ns == host {
		t.Fatal("the pinned namespace is the host's")
	}
	err = Do(p, func() error {
		if got, err := threadNSInode(); err != nil || got != ns {
			t.Errorf("inside Do the thread is in namespace %d (%v), want %d", got, err, ns)
		}
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp == 0 {
			t.Errorf("interfaces in the new namespace: %+v, want lo only, up", ifs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	p2, err := Create(dir, "pod2")
	if err != nil {
		t.Fatal(err)
	}
	if ns2 := inode(t, p2); ns2 == ns || ns2 == host {
		t.Errorf("second namespace %d, first %d, host %d: want three different", ns2, ns, host)
	}
	if _, err := Create(dir, "pod1"); !errdefs.IsAlreadyExists(err) {
		t.Errorf("Create of an existing name: %v, want AlreadyExists", err)
	}
	if inode(t, p) != ns {
		t.Error("a refused Create changed the existing pin")
	}

	for range 2 {
		if err := Remove(p); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove: %v, want no file", err)
	}
	for _, m := range mounts(t) {
		if m.point == p {
			t.Errorf("after Remove %s is still a mount point", p)
		}
	}
	if ok, err := Exists(p); ok || err != nil {
		t.Errorf("Exists after Remove = %v, %v", ok, err)
	}
	if err := Remove(p2); err != nil {
		t.Fatal(err)
	}
	checkThreads(t, 50, host)
	checkTasks(t, host)
}

func TestHostNamespaceUnchanged(t *testing.T) {
	needRoot(t)
	dir := pinDir(t)
	host := inode(t, "/proc/self/ns/net")
	checkThreads(t, 50, host)

	// Creates in parallel, on a dir that is not yet a mount point: the
	// flock must keep them from stacking bind mounts over each other's pins.
	paths := make([]string, 20)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() {
			p, err := Create(dir, "pod"+string(rune('a'+i)))
			if err != nil {
				t.Error(err)
			}
			paths[i] = p
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seen := map[uint64]bool{}
	for _, p := range paths {
		if ok, err := Exists(p); !ok || err != nil {
			t.Errorf("%s: Exists = %v, %v after parallel Creates", p, ok, err)
		}
		seen[inode(t, p)] = true
	}
	if len(seen) != len(paths) {
		t.Errorf("%d distinct namespaces for %d pins", len(seen), len(paths))
	}
	if n := len(mountsUnder(t, dir)); n != len(paths)+1 {
		t.Errorf("%d mounts under dir, want %d", n, len(paths)+1)
	}

	// Do in all of them at once while other goroutines check that their
	// threads stay on the host.
	for range 10 {
		for _, p := range paths {
			wg.Go(func() {
				want := inode(t, p)
				if err := Do(p, func() error {
					if got, err := threadNSInode(); err != nil || got != want {
						t.Errorf("inside Do: namespace %d (%v), want %d", got, err, want)
					}
					return nil
				}); err != nil {
					t.Error(err)
				}
			})
			wg.Go(func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				if got, err := threadNSInode(); err != nil || got != host {
					t.Errorf("outside Do: namespace %d (%v), want the host's %d", got, err, host)
				}
			})
		}
	}
	wg.Wait()
	checkThreads(t, 100, host)
	checkTasks(t, host)
	for _, p := range paths {
		if err := Remove(p); err != nil {
			t.Error(err)
		}
	}
}

func TestCycles(t *testing.T) {
	needRoot(t)
	dir := pinDir(t)
	// The first Create makes dir a mount point, which stays.
	p, err := Create(dir, "warmup")
	if err != nil {
		t.Fatal(err)
	}
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	host := inode(t, "/proc/self/ns/net")
	before := len(mountsUnder(t, dir))
	// Only the mounts under dir are counted: the whole system's count, or
	// a search for nsfs mounts of the namespaces made here, changes
	// whenever other work on the node mounts meanwhile (the kernel reuses
	// a freed namespace's inode number for the next one, so another pod's
	// pin can carry a number this test used). dir is a private mount
	// (TestCreate checks), so a pin made in it shows nowhere else.
	for range 50 {
		p, err := Create(dir, "pod")
		if err != nil {
			t.Fatal(err)
		}
		if err := Remove(p); err != nil {
			t.Fatal(err)
		}
		checkTasks(t, host)
	}
	if after := len(mountsUnder(t, dir)); after != before || after != 1 {
		t.Errorf("mounts under dir: %d before, %d after 50 cycles, want 1", before, after)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("dir holds %d entries after the cycles", len(ents))
	}
}

func TestDo(t *testing.T) {
	needRoot(t)
	dir := pinDir(t)
	host := inode(t, "/proc/self/ns/net")
	p, err := Create(dir, "pod")
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(p)

	errFn := errors.New("from fn")
	if err := Do(p, func() error { return errFn }); !errors.Is(err, errFn) {
		t.Errorf("Do = %v, want fn's error", err)
	}

	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want fn's panic", r)
			}
		}()
		_ = Do(p, func() error { panic("boom") })
		t.Error("Do returned after fn panicked")
	}()

	done := make(chan bool)
	go func() {
		returned := false
		defer func() { done <- returned }()
		_ = Do(p, func() error { runtime.Goexit(); return nil })
		returned = true
	}()
	if <-done {
		t.Error("Do returned after fn called runtime.Goexit")
	}
	checkThreads(t, 50, host)
	checkTasks(t, host)

	if err := Do(filepath.Join(dir, "missing"), func() error { return nil }); !errdefs.IsNotFound(err) {
		t.Errorf("Do on a missing path: %v, want NotFound", err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	ran := false
	if err := Do(plain, func() error { ran = true; return nil }); !errdefs.IsNotFound(err) || ran {
		t.Errorf("Do on a plain file: %v (fn ran: %v), want NotFound", err, ran)
	}
}

func TestRemoveLeftovers(t *testing.T) {
	needRoot(t)
	dir := pinDir(t)
	p, err := Create(dir, "pod")
	if err != nil {
		t.Fatal(err)
	}
	defer Remove(p)

	// A file from a Create cut short before the mount.
	half := filepath.Join(dir, "half")
	if err := os.WriteFile(half, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if ok, err := Exists(half); ok || err != nil {
		t.Errorf("Exists(plain file) = %v, %v", ok, err)
	}
	if err := Remove(half); err != nil {
		t.Errorf("Remove(plain file): %v", err)
	}
	if _, err := os.Lstat(half); !errors.Is(err, os.ErrNotExist) {
		t.Error("the plain file is still there")
	}

	// A symlink to a pin: removing the link leaves the pin alone.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if err := Remove(link); err != nil {
		t.Errorf("Remove(symlink): %v", err)
	}
	if ok, _ := Exists(p); !ok {
		t.Error("removing a symlink to a pin unpinned it")
	}

	if err := Remove(dir); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Remove(dir): %v, want InvalidArgument", err)
	}
	if ok, _ := Exists(p); !ok {
		t.Error("Remove(dir) unpinned a namespace")
	}
}

func TestCreateRejectsNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "netns")
	for _, name := range []string{"", ".", "..", "a/b", "/abs", "../x", "x/..", "a..b", "nul\x00"} {
		if _, err := Create(dir, name); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Create(%q): %v, want InvalidArgument", name, err)
		}
	}
	if _, err := Create("relative/dir", "pod"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("relative dir: %v, want InvalidArgument", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused Create made dir: %v", err)
	}
}
