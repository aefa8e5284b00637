package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-runtime/corral/cri/config"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func condition(t *testing.T, resp *runtimeapi.StatusResponse, typ string) *runtimeapi.RuntimeCondition {
	t.Helper()
	for _, c := range resp.GetStatus().GetConditions() {
		if c.Type == typ {
			return c
		}
	}
	t.Fatalf("no %s condition in %v", typ, resp)
	return nil
}

func TestStatusRuntimeReadyNetworkNot(t *testing.T) {
	cfg := testConfig(t)
	env := newTestEnv(t, cfg)
	dir := cfg.Network.ConfDir

	status := func() *runtimeapi.RuntimeCondition {
		resp, err := env.runtime.Status(ctxTimeout(t), &runtimeapi.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if rt := condition(t, resp, runtimeapi.RuntimeReady); !rt.Status {
			t.Errorf("RuntimeReady = %+v, want true", rt)
		}
		if resp.Info != nil {
			t.Errorf("info without verbose: %v", resp.Info)
		}
		net := condition(t, resp, runtimeapi.NetworkReady)
		if net.Status || net.Reason != "NetworkPluginNotReady" {
			t.Errorf("NetworkReady = %+v, want false with NetworkPluginNotReady", net)
		}
		return net
	}

	// Each state of the CNI directory gets a message saying what is missing.
	if msg := status().Message; !strings.Contains(msg, dir+" does not exist") {
		t.Errorf("no dir: message %q", msg)
	}
	if err := os.MkdirAll(filepath.Join(dir, "sub.conflist"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if msg := status().Message; !strings.Contains(msg, "holds no *.conflist") {
		t.Errorf("empty dir: message %q", msg)
	}
	for _, f := range []string{"20-other.conf", "10-bridge.conflist"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if msg := status().Message; !strings.Contains(msg, filepath.Join(dir, "10-bridge.conflist")+" is present") || !strings.Contains(msg, "sets up no pod network") {
		t.Errorf("with config: message %q", msg)
	}
}

func TestStatusListsHandlers(t *testing.T) {
	cfg := testConfig(t)
	cfg.Runtimes["kata"] = config.Runtime{Shim: "io.containerd.kata.v2"}
	env := newTestEnv(t, cfg)
	resp, err := env.runtime.Status(ctxTimeout(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range resp.RuntimeHandlers {
		if h.Features == nil {
			t.Errorf("handler %q has no features", h.Name)
		}
		names = append(names, h.Name)
	}
	want := append([]string{""}, cfg.Handlers()...)
	if !reflect.DeepEqual(names, want) {
		t.Errorf("handlers %q, want %q", names, want)
	}
}

func TestStatusVerboseShowsConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.CgroupDriver = config.CgroupDriverSystemd
	env := newTestEnv(t, cfg)
	resp, err := env.runtime.Status(ctxTimeout(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(resp.Info["config"]), &got); err != nil {
		t.Fatalf("info[config] is not JSON: %v: %q", err, resp.Info["config"])
	}
	if got["cgroup_driver"] != "systemd" || got["default_runtime"] != "runc" {
		t.Errorf("info[config] = %v", got)
	}
	if img, _ := got["image"].(map[string]any); img["pull_progress_timeout"] != "5m0s" {
		t.Errorf("durations should read as Go durations: %v", got["image"])
	}
}

func TestSecurityModules(t *testing.T) {
	none := t.TempDir()
	got := securityModules(none)
	if !strings.Contains(got["apparmor"], "not enabled") || !strings.Contains(got["selinux"], "not enabled") || !strings.HasPrefix(got["seccomp"], "supported") {
		t.Errorf("a node without either: %v", got)
	}
	both := t.TempDir()
	os.MkdirAll(filepath.Join(both, "sys/module/apparmor/parameters"), 0o755)
	os.WriteFile(filepath.Join(both, "sys/module/apparmor/parameters/enabled"), []byte("Y\n"), 0o644)
	os.MkdirAll(filepath.Join(both, "sys/fs/selinux"), 0o755)
	os.WriteFile(filepath.Join(both, "sys/fs/selinux/enforce"), []byte("1"), 0o644)
	got = securityModules(both)
	if !strings.Contains(got["apparmor"], "is enabled") || !strings.Contains(got["selinux"], "is enabled") {
		t.Errorf("a node with both: %v", got)
	}
}
