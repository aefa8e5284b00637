package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpIsAManPage(t *testing.T) {
	code, out, _ := runCtl(t, "--help")
	if code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range []string{
		"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "FILES", "EXAMPLES", "EXIT STATUS",
		"shims [-o table|json]", "shim POD state|pids|stats", "POD kill", "POD exec", "events", "debug dump", "debug info",
		"--state DIR", "default /run/corral", "-o FORMAT", "--timeout DURATION", "corrald is stopped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestCommandLineMistakes(t *testing.T) {
	state := t.TempDir()
	for name, tc := range map[string]struct {
		args []string
		code int
		want string
	}{
		"no command":       {[]string{}, 2, "no command"},
		"unknown command":  {[]string{"pods"}, 2, `unknown command "pods"`},
		"debug alone":      {[]string{"debug"}, 2, `unknown command "debug"`},
		"bad output":       {[]string{"-o", "yaml", "shims"}, 2, "table or json"},
		"bad sub output":   {[]string{"--state", state, "shims", "-o", "yaml"}, 2, "table or json"},
		"shims argument":   {[]string{"--state", state, "shims", "extra"}, 2, "no arguments"},
		"shim no action":   {[]string{"--state", state, "shim", "abc"}, 2, "a pod and an action"},
		"no sandboxes dir": {[]string{"--state", filepath.Join(state, "none"), "shims"}, 1, "is --state the one corrald runs with"},
		"no debug socket":  {[]string{"--state", state, "debug", "dump"}, 1, "is corrald running"},
		"version":          {[]string{"--version"}, 0, ""},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errOut := runCtl(t, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

// writeBundle makes STATE/KIND/ID with a config.json holding annotations.
func writeBundle(t *testing.T, state, kind, id string, ann map[string]string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(state, kind, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"annotations": ann, "process": map[string]any{"args": []string{"sleep"}, "cwd": "/"}})
	files["config.json"] = string(b)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFindPodsFromStateFiles(t *testing.T) {
	state := t.TempDir()
	podA := strings.Repeat("a", 64)
	podB := "ab" + strings.Repeat("b", 62)
	writeBundle(t, state, "sandboxes", podA, map[string]string{annotationSandboxName: "web", annotationSandboxNS: "default"},
		map[string]string{"address": "unix:///run/x/s/1\n", "shim.pid": "4242"})
	writeBundle(t, state, "sandboxes", podB, map[string]string{annotationSandboxName: "db", annotationSandboxNS: "prod"}, map[string]string{})
	writeBundle(t, state, "containers", "c1"+strings.Repeat("1", 62), map[string]string{annotationSandboxID: podA, annotationContainerName: "app", annotationContainerType: "container"}, map[string]string{})
	writeBundle(t, state, "containers", "c2"+strings.Repeat("2", 62), map[string]string{annotationSandboxID: podA, annotationContainerName: "sidecar", annotationContainerType: "container"}, map[string]string{})
	writeBundle(t, state, "containers", "c3"+strings.Repeat("3", 62), map[string]string{annotationSandboxID: "gone"}, map[string]string{})

	pods, err := findPods(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 {
		t.Fatalf("found %d pods, want 2", len(pods))
	}
	p, err := findPod(state, "default/web")
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != podA || p.Address != "unix:///run/x/s/1" || p.PID != 4242 || len(p.Containers) != 3 {
		t.Errorf("pod %+v", p)
	}
	if p.Containers[0].ID != podA || p.Containers[0].Type != "sandbox" {
		t.Errorf("the pause process is not first: %+v", p.Containers)
	}
	for arg, want := range map[string]string{podA: podA, "aaaa": podA, "prod/db": podB} {
		if got, err := findPod(state, arg); err != nil || got.ID != want {
			t.Errorf("findPod(%q) = %v, %v; want %s", arg, got, err, want)
		}
	}
	if _, err := findPod(state, "a"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if _, err := findPod(state, "zzz"); err == nil || !strings.Contains(err.Error(), "corralctl shims") {
		t.Errorf("unknown pod: %v", err)
	}
	for arg, want := range map[string]string{"app": "c1", "c2": "c2", podA: podA} {
		if c, err := p.findContainer(arg); err != nil || !strings.HasPrefix(c.ID, want) {
			t.Errorf("findContainer(%q) = %v, %v", arg, c, err)
		}
	}
	if _, err := p.findContainer("c"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("ambiguous container: %v", err)
	}
	if _, err := p.findContainer("nope"); err == nil || !strings.Contains(err.Error(), "app, sidecar") {
		t.Errorf("unknown container: %v", err)
	}
	if _, err := execTarget(p, ""); err == nil || !strings.Contains(err.Error(), "--container") {
		t.Errorf("exec in a two-container pod without --container: %v", err)
	}

	// A pod whose shim cannot be reached is listed, saying why.
	code, out, errOut := runCtl(t, "--state", state, "--timeout", "2s", "shims", "-o", "json")
	if code != 0 {
		t.Fatalf("shims: exit %d: %s", code, errOut)
	}
	var listed []map[string]any
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed) != 2 {
		t.Fatalf("shims -o json: %v: %s", err, out)
	}
	for _, l := range listed {
		if l["error"] == nil || l["pod"] == nil || l["containers"] == nil {
			t.Errorf("unreachable shim listed as %v", l)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "kill": syscall.SIGKILL, "9": syscall.SIGKILL, "HUP": syscall.SIGHUP} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "SIGNOPE", "0", "65", "-1"} {
		if _, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) accepted", in)
		}
	}
}

func TestDumpValues(t *testing.T) {
	if got := printable([]byte("abc")); got != "abc" {
		t.Errorf("printable = %q", got)
	}
	if got := printable([]byte("a\x00\x01")); got != `"a\x00\x01"` {
		t.Errorf("printable binary = %q", got)
	}
	b, _ := json.Marshal(map[string]any{"j": value([]byte(`{"a":1}`)), "s": value([]byte("1.2.3 x")), "b": value([]byte{0xff, 0xfe})})
	if string(b) != `{"b":"//4=","j":{"a":1},"s":"1.2.3 x"}` {
		t.Errorf("values as JSON: %s", b)
	}
}

func TestParseKeepsTheCommandAfterDashes(t *testing.T) {
	e := &env{stderr: &bytes.Buffer{}}
	fs := e.subFlags("shim exec")
	c := fs.String("container", "", "")
	rest, err := parse(fs, []string{"--container", "app", "--", "sh", "-c", "exit 5", "--", "x"})
	if err != nil {
		t.Fatal(err)
	}
	if *c != "app" || strings.Join(rest, "|") != "--|sh|-c|exit 5|--|x" {
		t.Errorf("container %q, rest %q", *c, rest)
	}
	rest, err = parse(fs, []string{"main", "-o", "json"})
	if err != nil || strings.Join(rest, "|") != "main" || e.output != "json" {
		t.Errorf("flags after arguments: rest %q, output %q, %v", rest, e.output, err)
	}
}
