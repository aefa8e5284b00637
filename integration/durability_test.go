package integration

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-runtime/corral/metadata"
)

// TestCorraldRefusesDamagedStore starts the real corrald on a meta.db that
// a crash, a full disk or a bad copy damaged. It must refuse to start, say
// which file and what to do, leave the file byte for byte as it was, and
// never serve CRI on an empty store in its place: that would make it forget
// the pods still running on the node.
func TestCorraldRefusesDamagedStore(t *testing.T) {
	dir := shortTempDir(t)
	good := filepath.Join(dir, "good.db")
	s, err := metadata.Open(good, metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		sb := metadata.Sandbox{ID: "pod-" + name, Name: name, Namespace: "ns", UID: "uid-" + name,
			State: metadata.SandboxNotReady, CreatedAt: time.Now(),
			Labels: map[string]string{"pad": strings.Repeat(name, 3000)}}
		if err := s.CreateSandbox(sb); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()

	for name, damage := range map[string]func([]byte) []byte{
		"truncated":       func(b []byte) []byte { return b[:3*page] },
		"empty":           func([]byte) []byte { return nil },
		"garbage":         func(b []byte) []byte { return bytes.Repeat([]byte{0xa5}, len(b)) },
		"headers zeroed":  func(b []byte) []byte { clear(b[:2*page]); return b },
		"pages scribbled": func(b []byte) []byte { clear(b[2*page:]); return b },
	} {
		t.Run(name, func(t *testing.T) {
			sub := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
			root, state := filepath.Join(sub, "root"), filepath.Join(sub, "state")
			if err := os.MkdirAll(root, 0o700); err != nil {
				t.Fatal(err)
			}
			db := filepath.Join(root, "meta.db")
			bad := damage(bytes.Clone(goodBytes))
			if err := os.WriteFile(db, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := runCorraldToExit(t, "--root", root, "--state", state)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("corrald on a %s meta.db: %v, want exit status 1\n%s", name, err, out)
			}
			t.Logf("corrald said: %s", out)
			for _, want := range []string{db, "damaged", "will not start", "left as it is", "mv " + db} {
				if !strings.Contains(out, want) {
					t.Errorf("message lacks %q", want)
				}
			}
			if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, bad) {
				t.Errorf("corrald changed the damaged file (%v)", err)
			}
			if _, err := os.Lstat(filepath.Join(state, "corral.sock")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("corrald made its CRI socket before refusing: %v", err)
			}
		})
	}

	// The good file, and after the advice is followed, a fresh start.
	t.Run("good file and the advice followed", func(t *testing.T) {
		root, state := filepath.Join(dir, "ok", "root"), filepath.Join(dir, "ok", "state")
		os.MkdirAll(root, 0o700)
		db := filepath.Join(root, "meta.db")
		if err := os.WriteFile(db, goodBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		d := startCorrald(t, state, "--root", root, "--state", state)
		pods, err := criClient(t, d.socket).ListPodSandbox(ctxTimeout(t, 10*time.Second), nil)
		if err != nil || len(pods.Items) != 6 {
			t.Fatalf("ListPodSandbox on the good store: %d pods, %v; want 6", len(pods.GetItems()), err)
		}
		if err := d.stop(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(db, goodBytes[:page], 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := runCorraldToExit(t, "--root", root, "--state", state); err == nil {
			t.Fatalf("corrald started on a truncated store:\n%s", out)
		}
		if err := os.Rename(db, db+".damaged"); err != nil {
			t.Fatal(err)
		}
		d = startCorrald(t, state, "--root", root, "--state", state)
		pods, err = criClient(t, d.socket).ListPodSandbox(ctxTimeout(t, 10*time.Second), nil)
		if err != nil || len(pods.Items) != 0 {
			t.Fatalf("ListPodSandbox after moving the store aside: %v, %v; want none", pods, err)
		}
		d.stop(t, 10*time.Second)
	})
}

// TestCorraldStoreLocked: a second corrald on the root of a running one
// gives up within bbolt's timeout and says which file is held and what to
// do, leaving the first one serving.
func TestCorraldStoreLocked(t *testing.T) {
	dir := shortTempDir(t)
	root := filepath.Join(dir, "root")
	d := startCorrald(t, filepath.Join(dir, "state"), "--root", root, "--state", filepath.Join(dir, "state"))
	start := time.Now()
	out, err := runCorraldToExit(t, "--root", root, "--state", filepath.Join(dir, "state2"))
	if err == nil {
		t.Fatalf("a second corrald on the same root started:\n%s", out)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the second corrald took %s to give up", took)
	}
	for _, want := range []string{filepath.Join(root, "meta.db"), "another corrald", "--root"} {
		if !strings.Contains(out, want) {
			t.Errorf("message lacks %q:\n%s", want, out)
		}
	}
	if _, err := criClient(t, d.socket).Version(ctxTimeout(t, 10*time.Second), nil); err != nil {
		t.Errorf("the first corrald after the second one's attempt: %v", err)
	}
}

// runCorraldToExit runs corrald with args and returns what it printed and
// how it exited; it must exit within 30 seconds.
func runCorraldToExit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "corrald"), args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("corrald %v still running after 30s:\n%s", args, out)
	}
	return string(out), err
}
