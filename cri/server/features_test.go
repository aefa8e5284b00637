package server

import (
	"context"
	"errors"
	"testing"

	"github.com/corral-runtime/corral/cri/config"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

func TestProbeHandler(t *testing.T) {
	yes := true
	runc115 := &features.Features{
		MountOptions: []string{"ro", "rro", "rbind"},
		Linux:        &features.Linux{Namespaces: []string{"mount", "user"}},
	}
	idmap := &features.Features{
		MountOptions: []string{"rro"},
		Linux: &features.Linux{Namespaces: []string{"user"},
			MountExtensions: &features.MountExtensions{IDMap: &features.IDMap{Enabled: &yes}}},
	}
	noFeatures := errors.New("unknown command features")
	for name, tc := range map[string]struct {
		rt           config.Runtime
		f            *features.Features
		err          error
		mountSetattr bool
		idmapped     bool
		rro, userns  bool
		probed       string
	}{
		"runc 1.1 on a new kernel": {rt: config.Runtime{Shim: config.DefaultShim, Runtime: "/usr/sbin/runc"}, f: runc115, mountSetattr: true, idmapped: true, rro: true, userns: true, probed: "/usr/sbin/runc"},
		"old kernel":               {rt: config.Runtime{Shim: config.DefaultShim}, f: runc115, rro: false, probed: "runc"},
		// corrald makes the ID-mapped mounts: a file system that cannot
		// be ID-mapped rules user namespaces out, whatever runc can.
		"no ID-mapped mounts":    {rt: config.Runtime{Shim: config.DefaultShim}, f: idmap, mountSetattr: true, rro: true, probed: "runc"},
		"crun without features":  {rt: config.Runtime{Shim: config.DefaultShim, Runtime: "/usr/bin/crun"}, err: noFeatures, mountSetattr: true, idmapped: true, probed: "/usr/bin/crun"},
		"containerd's runc shim": {rt: config.Runtime{Shim: "io.containerd.runc.v2"}, f: runc115, mountSetattr: true, idmapped: true, rro: true, userns: true, probed: "runc"},
		"idmap-capable runtime":  {rt: config.Runtime{Shim: config.DefaultShim}, f: idmap, mountSetattr: true, idmapped: true, rro: true, userns: true, probed: "runc"},
		"no user namespaces":     {rt: config.Runtime{Shim: config.DefaultShim}, f: &features.Features{Linux: &features.Linux{Namespaces: []string{"mount"}}}, mountSetattr: true, idmapped: true, probed: "runc"},
		"kata is not asked":      {rt: config.Runtime{Shim: "io.containerd.kata.v2"}, f: idmap, mountSetattr: true, idmapped: true},
	} {
		t.Run(name, func(t *testing.T) {
			var probed string
			got := probeHandler(context.Background(), tc.rt, func(_ context.Context, binary string) (*features.Features, error) {
				probed = binary
				return tc.f, tc.err
			}, func() bool { return tc.mountSetattr }, func() bool { return tc.idmapped })
			if probed != tc.probed {
				t.Errorf("probed %q, want %q", probed, tc.probed)
			}
			if got.RecursiveReadOnlyMounts != tc.rro || got.UserNamespaces != tc.userns {
				t.Errorf("features %+v, want rro=%v userns=%v", got, tc.rro, tc.userns)
			}
		})
	}
}
