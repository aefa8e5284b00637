package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-runtime/corral/cri/config"
)

func runCorrald(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpDescribesEveryFlag(t *testing.T) {
	code, out, _ := runCorrald(t, "--help")
	if code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range []string{
		"--config FILE", "--root DIR", "--state DIR", "--log-level LEVEL", "--listen unix:///PATH",
		"default /var/lib/corral", "default /run/corral", "STATE/corral.sock", "0660",
		"corrald config default",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

func TestConfigDefaultPrintsTheBuiltInConfig(t *testing.T) {
	code, out, errOut := runCorrald(t, "config", "default")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	path := filepath.Join(t.TempDir(), "corral.toml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("printed config does not load: %v", err)
	}
	if !reflect.DeepEqual(c, config.Default()) {
		t.Errorf("printed config loads as %+v, want the default", c)
	}
}

func TestCommandLineMistakes(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"unknown flag":      {[]string{"--bogus"}, 2, "corrald --help"},
		"unknown command":   {[]string{"start"}, 2, `unknown command "start"`},
		"config what":       {[]string{"config", "show"}, 2, "corrald config default"},
		"log level":         {[]string{"--log-level", "loud"}, 2, "--log-level"},
		"listen tcp":        {[]string{"--state", t.TempDir(), "--listen", "tcp://127.0.0.1:1"}, 2, "only unix"},
		"missing config":    {[]string{"--config", "/nonexistent/corral.toml"}, 1, "does not exist"},
		"version is a flag": {[]string{"--version"}, 0, ""},
		"publish no topic":  {[]string{"publish", "--namespace", "k8s.io"}, 1, "topic"},
		"publish extra":     {[]string{"publish", "--topic", "/x", "extra"}, 2, "unexpected arguments"},
		"publish bad flag":  {[]string{"publish", "--topics", "/x"}, 2, "publish"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCorrald(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

func TestSdNotify(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name := filepath.Join(t.TempDir(), "notify")
		env := name
		if abstract {
			name = "\x00corral-test-" + filepath.Base(filepath.Dir(name))
			env = "@" + name[1:]
		}
		l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("NOTIFY_SOCKET", env)
		if err := sdNotify("READY=1"); err != nil {
			t.Fatalf("abstract=%v: %v", abstract, err)
		}
		buf := make([]byte, 64)
		n, err := l.Read(buf)
		l.Close()
		if err != nil || string(buf[:n]) != "READY=1" {
			t.Fatalf("abstract=%v: got %q, %v", abstract, buf[:n], err)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Fatalf("without systemd: %v", err)
	}
}
