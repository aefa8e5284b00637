package shimclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func TestParseStartOutput(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"unix:///run/corral/s/abc\n", "unix:///run/corral/s/abc", true},
		{`{"version":2,"address":"unix:///run/x","protocol":"ttrpc"}`, "unix:///run/x", true},
		{`{"version":3,"address":"unix:///run/x","protocol":"ttrpc"}`, "", false},
		{`{"version":2,"address":"unix:///run/x","protocol":"grpc"}`, "", false},
		{`{"version":`, "", false},
		{"", "", false},
		{"unix://", "", false},
		{"tcp://1.2.3.4:5", "", false},
		{"some error text", "", false},
	}
	for _, tc := range cases {
		got, err := parseStartOutput([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStartOutput(%q) = %q, %v; want %q ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestResolveBinary(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"containerd-shim-fake-v2", "my-shim"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	cases := []struct {
		in, want string
		kind     func(error) bool
	}{
		{"io.containerd.fake.v2", filepath.Join(dir, "containerd-shim-fake-v2"), nil},
		{"my-shim", filepath.Join(dir, "my-shim"), nil},
		{filepath.Join(dir, "my-shim"), filepath.Join(dir, "my-shim"), nil},
		{"/abs/path/shim", "", errdefs.IsNotFound},
		{dir, "", errdefs.IsNotFound},
		{"io.containerd.missing.v2", "", errdefs.IsNotFound},
		{"", "", errdefs.IsInvalidArgument},
	}
	for _, tc := range cases {
		got, err := ResolveBinary(tc.in)
		if tc.kind != nil {
			if !tc.kind(err) {
				t.Errorf("ResolveBinary(%q) error %v", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ResolveBinary(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestConnectNobodyThere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Connect(ctx, "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	if !errdefs.IsNotFound(err) {
		t.Fatalf("Connect to a missing socket: %v, want NotFound", err)
	}
}

func TestStartReportsAShimThatDiesBeforeItsAddress(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"containerd-shim-fails-v2", "echo 'no hypervisor' >&2\nexit 3\n", []string{"failed (exit status 3) before printing its address", "no hypervisor"}},
		{"containerd-shim-quiet-v2", "exit 0\n", []string{"exited without printing its address"}},
		{"containerd-shim-babbles-v2", "echo hello\n", []string{`printed "hello", not a unix:// address`}},
		{"containerd-shim-nobody-v2", "echo unix:///nonexistent/sock\n", []string{"unix:///nonexistent/sock", "not found"}},
	} {
		bundle := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := Start(ctx, bundle, "pod", Options{Binary: script(tc.name, tc.body), Namespace: "ns", Address: "/run/x.sock"})
		cancel()
		if err == nil {
			t.Errorf("%s: started", tc.name)
			continue
		}
		for _, w := range append(tc.want, tc.name) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
}
