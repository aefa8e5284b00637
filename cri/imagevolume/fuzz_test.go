package imagevolume

import (
	"path/filepath"
	"strings"
	"testing"
)

// FuzzSubPath: whatever image_sub_path a client sends, one that is
// accepted names a path inside the image.
func FuzzSubPath(f *testing.F) {
	for _, s := range []string{"", "etc", "etc/ssl", "..", "../x", "a/../../b", "/etc", "a//b", "./a", "a/..", "..a", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkSubPath(p) != nil {
			return
		}
		const root = "/image"
		j := filepath.Join(root, p)
		if j != root && !strings.HasPrefix(j, root+"/") {
			t.Fatalf("accepted %q, which leaves the image: %s", p, j)
		}
	})
}
