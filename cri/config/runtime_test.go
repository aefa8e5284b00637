package config

import (
	"reflect"
	"strings"
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"google.golang.org/protobuf/proto"
)

func TestShimBinaryName(t *testing.T) {
	for shim, want := range map[string]string{
		"containerd-shim-corral-v2":        "containerd-shim-corral-v2",
		"io.containerd.runc.v2":            "containerd-shim-runc-v2",
		"io.containerd.kata.v2":            "containerd-shim-kata-v2",
		"/usr/bin/containerd-shim-runc-v2": "containerd-shim-runc-v2",
	} {
		r := Runtime{Shim: shim}
		if got := r.ShimBinaryName(); got != want {
			t.Errorf("ShimBinaryName(%q) = %q, want %q", shim, got, want)
		}
	}
	if !(Runtime{Shim: "io.containerd.runc.v2"}).TakesRuncOptions() {
		t.Error("containerd's runc shim does not take runc options")
	}
	if (Runtime{Shim: "io.containerd.kata.v2"}).TakesRuncOptions() {
		t.Error("kata takes runc options")
	}
}

func TestShimOptions(t *testing.T) {
	cases := []struct {
		name string
		rt   Runtime
		want proto.Message // nil: no options at all
		url  string
	}{
		{
			name: "corral shim, runtime and default root",
			rt:   Runtime{Shim: DefaultShim, Runtime: "/usr/bin/crun"},
			want: &runcoptions.Options{BinaryName: "/usr/bin/crun", Root: "/run/corral/runc"},
			url:  "containerd.runc.v1.Options",
		},
		{
			name: "runc shim with options, root set",
			rt:   Runtime{Shim: "io.containerd.runc.v2", Root: "/run/x", Options: map[string]any{"SystemdCgroup": true, "NoPivotRoot": true}},
			want: &runcoptions.Options{Root: "/run/x", SystemdCgroup: true, NoPivotRoot: true},
			url:  "containerd.runc.v1.Options",
		},
		{
			name: "option keys are case-insensitive, as in containerd",
			rt:   Runtime{Shim: "containerd-shim-runc-v2", Options: map[string]any{"binaryname": "/sbin/runc", "root": "/r"}},
			want: &runcoptions.Options{BinaryName: "/sbin/runc", Root: "/r"},
			url:  "containerd.runc.v1.Options",
		},
		{
			name: "kata without options sends none",
			rt:   Runtime{Shim: "io.containerd.kata.v2"},
		},
		{
			name: "kata with a config path",
			rt:   Runtime{Shim: "io.containerd.kata.v2", Options: map[string]any{"ConfigPath": "/etc/kata/configuration.toml"}},
			want: &runtimeoptions.Options{ConfigPath: "/etc/kata/configuration.toml"},
			url:  "runtimeoptions.v1.Options",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.rt.ShimOptions("/run/corral/runc")
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil {
				if got != nil {
					t.Fatalf("options %v, want none", got)
				}
				return
			}
			if got.TypeUrl != tc.url {
				t.Errorf("type URL %q, want %q", got.TypeUrl, tc.url)
			}
			m := tc.want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(got.Value, m); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m, tc.want) {
				t.Errorf("options %v, want %v", m, tc.want)
			}
		})
	}
}

func TestShimOptionsPassesUnknownKeysToOtherShimsWhole(t *testing.T) {
	rt := Runtime{Shim: "io.containerd.kata.v2", Options: map[string]any{"Hypervisor": "qemu", "Debug": true}}
	got, err := rt.ShimOptions("")
	if err != nil {
		t.Fatal(err)
	}
	var o runtimeoptions.Options
	if err := proto.Unmarshal(got.Value, &o); err != nil {
		t.Fatal(err)
	}
	body := string(o.ConfigBody)
	if !strings.Contains(body, "Hypervisor = 'qemu'") && !strings.Contains(body, `Hypervisor = "qemu"`) {
		t.Errorf("config body %q lacks the table", body)
	}
}

func TestValidateRuntimes(t *testing.T) {
	for name, tc := range map[string]struct {
		rt   Runtime
		want []string
	}{
		"runc options":         {Runtime{Shim: DefaultShim, Options: map[string]any{"SystemdCgroup": true}}, nil},
		"kata config":          {Runtime{Shim: "io.containerd.kata.v2", Options: map[string]any{"ConfigPath": "/etc/k.toml", "Other": 1}}, nil},
		"annotations":          {Runtime{Shim: DefaultShim, PodAnnotations: []string{"io.katacontainers.*", "exact.key/x"}}, nil},
		"unknown runc option":  {Runtime{Shim: DefaultShim, Options: map[string]any{"SystemdCgroups": true}}, []string{"runtimes.x.options", "SystemdCgroups", "SystemdCgroup"}},
		"runc option type":     {Runtime{Shim: DefaultShim, Options: map[string]any{"SystemdCgroup": "yes"}}, []string{"runtimes.x.options"}},
		"binary contradiction": {Runtime{Shim: DefaultShim, Runtime: "/usr/sbin/runc", Options: map[string]any{"BinaryName": "crun"}}, []string{"BinaryName", "contradicts"}},
		"runtime for kata":     {Runtime{Shim: "io.containerd.kata.v2", Runtime: "/usr/sbin/runc"}, []string{"runtimes.x", "runc shims", "ConfigPath"}},
		"kata option type":     {Runtime{Shim: "io.containerd.kata.v2", Options: map[string]any{"ConfigPath": 3}}, []string{"runtimes.x.options"}},
		"bad pattern":          {Runtime{Shim: DefaultShim, PodAnnotations: []string{"io.[kata"}}, []string{"runtimes.x.pod_annotations[0]", "io.[kata"}},
		"empty pattern":        {Runtime{Shim: DefaultShim, PodAnnotations: []string{""}}, []string{"pod_annotations[0]"}},
	} {
		t.Run(name, func(t *testing.T) {
			c := defaults(noCrun)
			c.Runtimes["x"] = tc.rt
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPassThrough(t *testing.T) {
	rt := Runtime{PodAnnotations: []string{"io.katacontainers.*", "exact"}}
	got := rt.PassThrough(map[string]string{
		"io.katacontainers.config.hypervisor.kernel_params": "quiet",
		"exact":       "1",
		"exactly":     "no",
		"other.thing": "no",
	})
	want := map[string]string{"io.katacontainers.config.hypervisor.kernel_params": "quiet", "exact": "1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("PassThrough = %v, want %v", got, want)
	}
	if got := (Runtime{}).PassThrough(map[string]string{"a": "b"}); got != nil {
		t.Errorf("no patterns passed %v", got)
	}
}
