package server

import (
	"testing"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	"github.com/corral-runtime/corral/cri/config"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRuntimeConfigReportsTheCgroupDriver(t *testing.T) {
	for driver, want := range map[string]runtimeapi.CgroupDriver{
		config.CgroupDriverCgroupfs: runtimeapi.CgroupDriver_CGROUPFS,
		config.CgroupDriverSystemd:  runtimeapi.CgroupDriver_SYSTEMD,
	} {
		cfg := testConfig(t)
		cfg.CgroupDriver = driver
		env := newTestEnv(t, cfg)
		resp, err := env.runtime.RuntimeConfig(ctxTimeout(t), &runtimeapi.RuntimeConfigRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetLinux().GetCgroupDriver(); got != want {
			t.Errorf("cgroup_driver %q: reported %v, want %v", driver, got, want)
		}
	}
}

// TestSystemdDriverReachesRunc: with the systemd driver a runc shim is
// told to use runc's systemd cgroup driver; other shims' options are left
// as the handler's.
func TestSystemdDriverReachesRunc(t *testing.T) {
	for _, driver := range []string{config.CgroupDriverCgroupfs, config.CgroupDriverSystemd} {
		cfg := testConfig(t)
		cfg.CgroupDriver = driver
		s, _ := newTestServer(t, cfg)
		opts, err := s.shimOptions(config.Runtime{Shim: config.DefaultShim, Runtime: "/usr/sbin/runc"}, "")
		if err != nil {
			t.Fatal(err)
		}
		var o runcoptions.Options
		if err := proto.Unmarshal(opts.RuntimeOptions.GetValue(), &o); err != nil {
			t.Fatal(err)
		}
		if o.SystemdCgroup != (driver == config.CgroupDriverSystemd) || o.BinaryName != "/usr/sbin/runc" || o.Root == "" {
			t.Errorf("driver %s: runc options %v", driver, &o)
		}
		kata, err := s.shimOptions(config.Runtime{Shim: "containerd-shim-kata-v2"}, "")
		if err != nil || kata.RuntimeOptions != nil {
			t.Errorf("driver %s: kata options %v, %v", driver, kata.RuntimeOptions, err)
		}
	}
}
