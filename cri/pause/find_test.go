package pause

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// writeExe writes an executable file (or, with mode 0644, a file that is
// not) at dir/name and returns its path.
func writeExe(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFindOrder(t *testing.T) {
	root := t.TempDir()
	exeDir := filepath.Join(root, "prefix", "bin")
	prefixLib := filepath.Join(root, "prefix", "lib", "corral")
	lib1 := filepath.Join(root, "usr-local-lib")
	lib2 := filepath.Join(root, "usr-lib")
	pathDir := filepath.Join(root, "path")
	libs := []string{lib1, lib2}
	t.Setenv("PATH", pathDir)

	if _, err := find("", exeDir, libs); !errdefs.IsNotFound(err) {
		t.Fatalf("nothing installed: err = %v, want NotFound", err)
	} else if !strings.Contains(err.Error(), "make build") || !strings.Contains(err.Error(), "pause_binary") {
		t.Errorf("error does not say how to get the binary: %v", err)
	}

	// Each place found when it is the only one, then shadowing the later ones.
	inPath := writeExe(t, pathDir, BinaryName, 0o755)
	for _, tc := range []struct{ name, dir string }{
		{"PATH", ""},
		{"/usr/lib/corral", lib2},
		{"/usr/local/lib/corral", lib1},
		{"PREFIX/lib/corral of the executable's PREFIX/bin", prefixLib},
		{"next to the executable", exeDir},
	} {
		want := inPath
		if tc.dir != "" {
			want = writeExe(t, tc.dir, BinaryName, 0o755)
		}
		got, err := find("", exeDir, libs)
		if err != nil || got != want {
			t.Errorf("%s: find = %q, %v; want %q", tc.name, got, err, want)
		}
	}

	// A file that is not executable is passed over.
	writeExe(t, exeDir, BinaryName, 0o644)
	if got, err := find("", exeDir, libs); err != nil || got != filepath.Join(prefixLib, BinaryName) {
		t.Errorf("non-executable next to the executable: find = %q, %v", got, err)
	}
}

func TestFindConfigured(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	writeExe(t, dir, BinaryName, 0o755) // never used: the config wins
	conf := writeExe(t, dir, "my-pause", 0o755)

	if got, err := Find(conf); err != nil || got != conf {
		t.Errorf("Find(%q) = %q, %v", conf, got, err)
	}
	if _, err := Find(filepath.Join(dir, "missing")); !errdefs.IsNotFound(err) {
		t.Errorf("configured and missing: err = %v, want NotFound (no fallback)", err)
	} else if !strings.Contains(err.Error(), "pause_binary") {
		t.Errorf("error does not name the config key: %v", err)
	}
	if _, err := Find(writeExe(t, dir, "not-exe", 0o644)); !errdefs.IsInvalidArgument(err) {
		t.Errorf("configured, not executable: err = %v, want InvalidArgument", err)
	}
	if _, err := Find(dir); !errdefs.IsInvalidArgument(err) {
		t.Errorf("configured directory: err = %v, want InvalidArgument", err)
	}
}

func TestFindRelativePATHEntryIgnored(t *testing.T) {
	dir := t.TempDir()
	writeExe(t, dir, BinaryName, 0o755)
	t.Chdir(dir)
	t.Setenv("PATH", ".")
	if p, err := find("", "", nil); !errdefs.IsNotFound(err) {
		t.Errorf("found %q through a relative PATH entry (err %v)", p, err)
	}
}
