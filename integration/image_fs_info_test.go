package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// duOf is what coreutils' du says paths take together: allocated bytes and
// inodes, each hard-linked inode once. A path not made yet takes nothing.
func duOf(t *testing.T, all ...string) (bytes, inodes uint64) {
	t.Helper()
	var paths []string
	for _, p := range all {
		if _, err := os.Lstat(p); err == nil {
			paths = append(paths, p)
		}
	}
	if len(paths) == 0 {
		return 0, 0
	}
	total := func(args ...string) uint64 {
		out, err := exec.Command("du", append(append([]string{"-s", "-c"}, args...), paths...)...).Output()
		if err != nil {
			t.Fatalf("du %v: %v", paths, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		n, err := strconv.ParseUint(strings.Fields(lines[len(lines)-1])[0], 10, 64)
		if err != nil {
			t.Fatalf("du output %q: %v", out, err)
		}
		return n
	}
	return total("-B1"), total("--inodes")
}

// TestImageFsInfo: ImageFsInfo reports what du measures on the image store
// (blobs and unpacked layers) and on the containers' writable layers, with
// the inodes and the mountpoint the kubelet's image GC and eviction read;
// a container writing grows the second, removing an image shrinks the
// first. crictl imagefsinfo shows both.
func TestImageFsInfo(t *testing.T) {
	e := newPodEnv(t)
	imageDirs := []string{filepath.Join(e.root, "content"), filepath.Join(e.root, "snapshots")}
	containersDir := filepath.Join(e.root, "containers")

	// Compares until the figures settle: a container's overlay may still
	// be writing when a measurement starts.
	check := func(what string, minContainerBytes uint64) *runtimeapi.ImageFsInfoResponse {
		t.Helper()
		var resp *runtimeapi.ImageFsInfoResponse
		waitUntil(t, 30*time.Second, what+": ImageFsInfo agrees with du", func() (bool, string) {
			var err error
			resp, err = e.images.ImageFsInfo(e.ctx(), &runtimeapi.ImageFsInfoRequest{})
			if err != nil {
				t.Fatalf("ImageFsInfo: %v", err)
			}
			if len(resp.ImageFilesystems) != 1 || len(resp.ContainerFilesystems) != 1 {
				t.Fatalf("ImageFsInfo: %d image and %d container filesystems, want 1 and 1", len(resp.ImageFilesystems), len(resp.ContainerFilesystems))
			}
			img, ctr := resp.ImageFilesystems[0], resp.ContainerFilesystems[0]
			ib, ii := duOf(t, imageDirs...)
			cb, ci := duOf(t, containersDir)
			got := fmt.Sprintf("images %d B %d inodes, containers %d B %d inodes",
				img.GetUsedBytes().GetValue(), img.GetInodesUsed().GetValue(), ctr.GetUsedBytes().GetValue(), ctr.GetInodesUsed().GetValue())
			want := fmt.Sprintf("images %d B %d inodes, containers %d B %d inodes", ib, ii, cb, ci)
			if got != want {
				return false, got + "; du: " + want
			}
			if cb < minContainerBytes {
				return false, fmt.Sprintf("writable layers %d B, want at least %d", cb, minContainerBytes)
			}
			return true, ""
		})
		for i, fs := range []*runtimeapi.FilesystemUsage{resp.ImageFilesystems[0], resp.ContainerFilesystems[0]} {
			// One filesystem under ROOT: one mountpoint, so the kubelet does
			// not take them for split image and container filesystems.
			if fs.GetFsId().GetMountpoint() != e.root {
				t.Errorf("%s: mountpoint %q, want ROOT %q", what, fs.GetFsId().GetMountpoint(), e.root)
			}
			if fs.GetTimestamp() == 0 || (i == 0 || minContainerBytes > 0) && fs.GetInodesUsed().GetValue() == 0 {
				t.Errorf("%s: %v: no timestamp or inodes", what, fs)
			}
		}
		return resp
	}

	before := check("busybox pulled, no container", 0)
	if before.ImageFilesystems[0].GetUsedBytes().GetValue() < 1<<20 {
		t.Errorf("busybox takes %d bytes, less than its 1 MiB binary", before.ImageFilesystems[0].GetUsedBytes().GetValue())
	}

	podCfg := e.podConfig("fsinfo")
	podID := e.runPod(t, podCfg)
	e.runContainer(t, podID, podCfg, e.containerConfig("writer", "sh", "-c", "dd if=/dev/urandom of=/blob bs=1M count=8 && sleep 1000"))
	during := check("a container wrote 8 MiB", 8<<20)
	if during.ImageFilesystems[0].GetUsedBytes().GetValue() != before.ImageFilesystems[0].GetUsedBytes().GetValue() {
		t.Errorf("the image store changed size while only a container wrote: %v then %v", before.ImageFilesystems[0], during.ImageFilesystems[0])
	}

	out := e.mustCrictl(t, "imagefsinfo", "-o", "json")
	var shown struct {
		Status struct {
			ImageFilesystems     []json.RawMessage `json:"imageFilesystems"`
			ContainerFilesystems []json.RawMessage `json:"containerFilesystems"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &shown); err != nil || len(shown.Status.ImageFilesystems) != 1 || len(shown.Status.ContainerFilesystems) != 1 {
		t.Errorf("crictl imagefsinfo: %v\n%s", err, out)
	}

	// The pod goes, then the image: both figures drop to what du says.
	e.removePod(t, podID)
	check("pod removed", 0)
	if _, err := e.images.RemoveImage(e.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: e.busybox}}); err != nil {
		t.Fatal(err)
	}
	after := check("image removed", 0)
	if a, b := after.ImageFilesystems[0].GetUsedBytes().GetValue(), before.ImageFilesystems[0].GetUsedBytes().GetValue(); a >= b-1<<20 {
		t.Errorf("removing busybox freed %d of its %d bytes", b-a, b)
	}
}
