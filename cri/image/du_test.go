package image

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// du is what coreutils' du says paths take together: allocated bytes and
// inodes, each hard-linked inode once. Usage figures are checked against it.
func du(t *testing.T, paths ...string) (bytes, inodes int64) {
	t.Helper()
	total := func(args ...string) int64 {
		out, err := exec.Command("du", append(append([]string{"-s", "-c"}, args...), paths...)...).Output()
		if err != nil {
			t.Fatalf("du %v: %v", paths, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		n, err := strconv.ParseInt(strings.Fields(lines[len(lines)-1])[0], 10, 64)
		if err != nil {
			t.Fatalf("du output %q: %v", out, err)
		}
		return n
	}
	return total("-B1"), total("--inodes")
}
