package idmap

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func TestMount(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc"), 0o755)
	os.WriteFile(filepath.Join(src, "etc/passwd"), []byte("root:x:0:0::/:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "file"), []byte("x"), 0o644)
	if err := Supported(dir); err != nil {
		t.Skipf("no ID-mapped mounts here: %v", err)
	}
	release, ns, err := NewUserns(100000, 65536)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	release()

	dst := filepath.Join(dir, "mapped", "0")
	if err := Mount(src, dst, ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "etc/passwd"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 100000 || st.Gid != 100000 {
		t.Errorf("a root-owned file appears owned by %d:%d through the mapping, want 100000:100000", st.Uid, st.Gid)
	}
	unix.Stat(filepath.Join(src, "etc/passwd"), &st)
	if st.Uid != 0 {
		t.Errorf("the source changed owner: %d", st.Uid)
	}
	fileDst := filepath.Join(dir, "mapped", "file")
	if err := Mount(filepath.Join(dir, "file"), fileDst, ns); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(fileDst); err != nil || string(b) != "x" {
		t.Errorf("mapped file reads %q, %v", b, err)
	}
	for _, d := range []string{dst, fileDst} {
		if err := Unmount(d); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(d); !os.IsNotExist(err) {
			t.Errorf("%s still there after Unmount", d)
		}
		if err := Unmount(d); err != nil {
			t.Errorf("a second Unmount: %v", err)
		}
	}
	if err := Mount(filepath.Join(dir, "missing"), filepath.Join(dir, "m2"), ns); err == nil {
		t.Error("mounted a missing source")
	}
}
