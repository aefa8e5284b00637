package netns

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCreateOwned(t *testing.T) {
	needRoot(t)
	netDir, userDir := pinDir(t), pinDir(t)
	netPath, userPath, err := CreateOwned(netDir, userDir, "pod", IDMap{Host: 100000, Size: 65536}, IDMap{Host: 200000, Size: 65536})
	if err != nil {
		t.Fatal(err)
	}
	// The network namespace belongs to the user namespace.
	nsFd, err := os.Open(netPath)
	if err != nil {
		t.Fatal(err)
	}
	defer nsFd.Close()
	owner, err := unix.IoctlRetInt(int(nsFd.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	var a, b unix.Stat_t
	unix.Fstat(owner, &a)
	unix.Close(owner)
	unix.Stat(userPath, &b)
	if a.Ino != b.Ino {
		t.Errorf("the network namespace belongs to user namespace %d, not the pinned %d", a.Ino, b.Ino)
	}
	// Loopback is up inside.
	err = Do(netPath, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "lo:") {
			return fmt.Errorf("no lo in %s", b)
		}
		return loopbackUp()
	})
	if err != nil {
		t.Error(err)
	}
	if _, _, err := CreateOwned(netDir, userDir, "pod", IDMap{Host: 100000, Size: 1}, IDMap{Host: 100000, Size: 1}); err == nil {
		t.Error("a second CreateOwned of the same name succeeded")
	}
	for _, p := range []string{netPath, userPath} {
		if ok, err := Exists(p); !ok || err != nil {
			t.Errorf("the failed second CreateOwned took the first's pin %s: %v", p, err)
		}
	}
	for _, p := range []string{netPath, userPath} {
		if err := Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := CreateOwned(netDir, userDir, "bad/name", IDMap{Host: 1, Size: 1}, IDMap{Host: 1, Size: 1}); err == nil {
		t.Error("a bad name was taken")
	}
	if ents, _ := os.ReadDir(netDir); len(ents) != 0 {
		t.Errorf("%d entries left", len(ents))
	}
}
