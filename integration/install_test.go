package integration

import (
	"bytes"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-runtime/corral/cri/config"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// makeTarget runs make TARGET in the repository with vars, building into
// the binaries under test, and returns its output.
func makeTarget(t *testing.T, target string, vars ...string) string {
	t.Helper()
	args := append([]string{"-C", "..", "--no-print-directory", target, "BIN=" + binDir}, vars...)
	cmd := exec.Command("make", args...)
	// A make that runs these tests (make integration) must not hand its
	// jobserver and level to this one.
	cmd.Env = append(os.Environ(), "MAKEFLAGS=", "MAKELEVEL=", "MFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s %s: %v\n%s", target, strings.Join(vars, " "), err, out)
	}
	return string(out)
}

// files lists what is under dir that is not a directory, relative to dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// TestInstallUninstall: make install DESTDIR=D puts the binaries, the pause
// binary, the systemd unit and the default config in their places under D;
// make uninstall DESTDIR=D takes every file away again, but never a config
// someone edited, which a later install keeps too.
func TestInstallUninstall(t *testing.T) {
	dest := t.TempDir()
	makeTarget(t, "install", "DESTDIR="+dest)
	want := []string{
		"etc/corral/config.toml",
		"usr/local/bin/containerd-shim-corral-v2",
		"usr/local/bin/corralctl",
		"usr/local/bin/corrald",
		"usr/local/lib/corral/corral-pause",
		"usr/local/lib/systemd/system/corrald.service",
	}
	if got := files(t, dest); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("installed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	cfgPath := filepath.Join(dest, "etc/corral/config.toml")
	if _, err := config.Load(cfgPath); err != nil {
		t.Fatalf("the installed config does not load: %v", err)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr/local/lib/systemd/system/corrald.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/usr/local/bin/corrald --config /etc/corral/config.toml\n") {
		t.Errorf("the unit does not start the installed corrald on the installed config:\n%s", unit)
	}

	makeTarget(t, "uninstall", "DESTDIR="+dest)
	if got := files(t, dest); len(got) > 0 {
		t.Fatalf("uninstall left: %v", got)
	}
	for _, d := range []string{"etc/corral", "usr/local/lib/corral"} {
		if _, err := os.Stat(filepath.Join(dest, d)); err == nil {
			t.Errorf("uninstall left the directory %s", d)
		}
	}

	// An edited config survives uninstall, and a later install keeps it.
	makeTarget(t, "install", "DESTDIR="+dest)
	edited := []byte("log_level = \"debug\"\n")
	if err := os.WriteFile(cfgPath, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	if out := makeTarget(t, "uninstall", "DESTDIR="+dest); !strings.Contains(out, "keeping") {
		t.Errorf("uninstall does not say it keeps the edited config:\n%s", out)
	}
	if got := files(t, dest); len(got) != 1 || got[0] != "etc/corral/config.toml" {
		t.Errorf("after uninstall with an edited config: %v, want only the config", got)
	}
	if out := makeTarget(t, "install", "DESTDIR="+dest); !strings.Contains(out, "keeping the existing") {
		t.Errorf("install does not say it keeps the existing config:\n%s", out)
	}
	if b, _ := os.ReadFile(cfgPath); !bytes.Equal(b, edited) {
		t.Errorf("install overwrote the edited config: %q", b)
	}
	makeTarget(t, "uninstall", "DESTDIR="+dest)
}

// TestSystemdUnitVerifies: the unit as installed (here under a PREFIX of
// the test's own, so that the binary it names exists) passes
// systemd-analyze verify without a warning.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is missing (Debian's systemd package; hack/install-deps.sh): %v", err)
	}
	dir := t.TempDir()
	prefix, etc := filepath.Join(dir, "usr"), filepath.Join(dir, "etc")
	makeTarget(t, "install", "PREFIX="+prefix, "SYSCONFDIR="+etc)
	t.Cleanup(func() { makeTarget(t, "uninstall", "PREFIX="+prefix, "SYSCONFDIR="+etc) })
	unit := filepath.Join(prefix, "lib/systemd/system/corrald.service")
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
	b, _ := os.ReadFile(unit)
	if !strings.Contains(string(b), "ExecStart="+prefix+"/bin/corrald --config "+etc+"/corral/config.toml\n") {
		t.Errorf("the unit does not name PREFIX and SYSCONFDIR:\n%s", b)
	}
}

// TestSystemdNotify: under a Type=notify unit, corrald says READY=1 on
// NOTIFY_SOCKET once it answers CRI calls, and STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	state := filepath.Join(dir, "state")
	d := startCorrald(t, state, "--root", filepath.Join(dir, "root"), "--state", state)

	read := func(want string) {
		t.Helper()
		l.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 256)
		n, err := l.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("NOTIFY_SOCKET got %q, %v; want %q", buf[:n], err, want)
		}
	}
	read("READY=1")
	// Ready means serving: a call answers right away.
	ctx := ctxTimeout(t, 5*time.Second)
	if _, err := criClient(t, d.socket).Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("Version after READY=1: %v", err)
	}
	if err := d.stop(t, 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	read("STOPPING=1")
}
