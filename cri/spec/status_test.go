package spec

import (
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestStatusRoundTrip: what a container is created with comes back in
// ContainerStatus as it was asked for.
func TestStatusRoundTrip(t *testing.T) {
	cfg := ctrConfig()
	res := &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, CpusetCpus: "0", CpusetMems: "0",
		MemoryLimitInBytes: 64 << 20, MemorySwapLimitInBytes: 128 << 20, OomScoreAdj: 500,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}},
	}
	cfg.Linux.Resources = res
	cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	cfg.Linux.SecurityContext.SupplementalGroups = []int64{1234}
	h := newFakeHost()
	h.cgroups = CgroupFeatures{Swap: true, Hugetlb: true}
	s, err := Container(cfg, podConfig(), nil, ctrOpts(h))
	if err != nil {
		t.Fatal(err)
	}
	if got := StatusResources(s); !proto.Equal(got.GetLinux(), res) {
		t.Errorf("resources %v, want %v", got.GetLinux(), res)
	}
	// The test image lists uid 1000 with gid 1000 and in groups 10 and 29.
	want := &runtimeapi.LinuxContainerUser{Uid: 1000, Gid: 1000, SupplementalGroups: []int64{10, 29, 1000, 1234}}
	if got := StatusUser(s); !proto.Equal(got.GetLinux(), want) {
		t.Errorf("user %v, want %v", got.GetLinux(), want)
	}
	if StatusUser(nil) != nil || StatusResources(nil) != nil {
		t.Error("a missing spec reported something")
	}
}
