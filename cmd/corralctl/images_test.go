package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestImagesCommandLine(t *testing.T) {
	state := t.TempDir()
	archive := filepath.Join(t.TempDir(), "a.tar")
	os.WriteFile(archive, []byte("not really"), 0o644)
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"import without a file":    {[]string{"images", "import"}, 2, "one FILE"},
		"import of two files":      {[]string{"images", "import", "a", "b"}, 2, "one FILE"},
		"import of a missing file": {[]string{"images", "import", "/nonexistent/a.tar"}, 1, "no such file"},
		"import, corrald down":     {[]string{"--state", state, "images", "import", archive}, 1, "is corrald running with --state " + state},
		"export without a file":    {[]string{"images", "export", "busybox"}, 2, "REF... FILE"},
		"export, corrald down":     {[]string{"--state", state, "images", "export", "busybox", filepath.Join(state, "x.tar")}, 1, "is corrald running"},
		"export in a bad format":   {[]string{"images", "export", "--format", "zip", "busybox", "x.tar"}, 2, "use oci-archive or docker-archive"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCtl(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, want %d; stderr %q, want it to say %q", code, tc.code, errOut, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("a failed export left %v", entries)
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 999: "999B", 1000: "1kB", 1234567: "1.23MB", 4_400_000_000: "4.4GB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}
