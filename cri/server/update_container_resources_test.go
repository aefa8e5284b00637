package server

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestMergeResources(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	r := &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		CPU:     &specs.LinuxCPU{Shares: u64(1024), Period: u64(100000), Quota: i64(20000), Cpus: "0"},
		Memory:  &specs.LinuxMemory{Limit: i64(64 << 20), Swap: i64(64 << 20)},
	}
	mergeResources(r, &specs.LinuxResources{
		CPU:     &specs.LinuxCPU{Quota: i64(50000)},
		Memory:  &specs.LinuxMemory{Limit: i64(128 << 20)},
		Unified: map[string]string{"memory.high": "1"},
	})
	if *r.CPU.Quota != 50000 || *r.CPU.Shares != 1024 || *r.CPU.Period != 100000 || r.CPU.Cpus != "0" {
		t.Errorf("cpu %+v", r.CPU)
	}
	if *r.Memory.Limit != 128<<20 || *r.Memory.Swap != 64<<20 {
		t.Errorf("memory %+v", r.Memory)
	}
	if len(r.Devices) != 1 || r.Unified["memory.high"] != "1" {
		t.Errorf("devices %v, unified %v", r.Devices, r.Unified)
	}
	empty := &specs.LinuxResources{}
	mergeResources(empty, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(2)}, Memory: &specs.LinuxMemory{Swap: i64(-1)}})
	if *empty.CPU.Shares != 2 || *empty.Memory.Swap != -1 || empty.Memory.Limit != nil {
		t.Errorf("from nothing: %+v %+v", empty.CPU, empty.Memory)
	}
}
