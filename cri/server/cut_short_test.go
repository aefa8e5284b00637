package server

import (
	"bytes"
	"testing"
)

func TestRuntimeCommandFor(t *testing.T) {
	const bundle, id = "/run/corral/containers/abc", "abc"
	for _, tc := range []struct {
		cmdline string
		want    bool
	}{
		{"runc\x00--root\x00/run/corral/runc/k8s.io\x00--log\x00/run/corral/containers/abc/log.json\x00--log-format\x00json\x00create\x00--bundle\x00/run/corral/containers/abc\x00--pid-file\x00/run/corral/containers/abc/init.pid\x00abc", true},
		{"runc\x00run\x00--bundle\x00/run/corral/containers/abc\x00--detach\x00abc", true},
		{"runc\x00create\x00-b\x00/run/corral/containers/abc\x00abc", true},
		{"runc\x00--root\x00/run/corral/runc/k8s.io\x00--log\x00/run/corral/containers/abc/log.json\x00--log-format\x00json\x00start\x00abc", true},
		{"runc\x00--root\x00/r\x00--log\x00/run/corral/containers/abcd/log.json\x00start\x00abc", false},
		// Another container's bundle, or the bundle without the ID last.
		{"runc\x00create\x00--bundle\x00/run/corral/containers/abcd\x00abc", false},
		{"runc\x00create\x00--bundle\x00/run/corral/containers/abc\x00abcd", false},
		{"containerd-shim-corral-v2\x00-namespace\x00k8s.io\x00-id\x00abc", false},
		{"runc\x00init", false},
		{"abc", false},
	} {
		if got := runtimeCommandFor(bytes.Split([]byte(tc.cmdline), []byte{0}), bundle, id); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.cmdline, got, tc.want)
		}
	}
}
