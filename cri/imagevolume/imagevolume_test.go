package imagevolume

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestRequests(t *testing.T) {
	img := &runtimeapi.ImageSpec{Image: "sha256:1"}
	for _, tc := range []struct {
		name    string
		m       *runtimeapi.Mount
		wantErr string
	}{
		{name: "whole image", m: &runtimeapi.Mount{ContainerPath: "/v", Image: img, Readonly: true}},
		{name: "sub path", m: &runtimeapi.Mount{ContainerPath: "/v", Image: img, Readonly: true, ImageSubPath: "etc/ssl"}},
		{name: "writable", m: &runtimeapi.Mount{ContainerPath: "/v", Image: img}, wantErr: "read-only"},
		{name: "no image name", m: &runtimeapi.Mount{ContainerPath: "/v", Image: &runtimeapi.ImageSpec{}, Readonly: true}, wantErr: "image.image is empty"},
		{name: "host path too", m: &runtimeapi.Mount{ContainerPath: "/v", HostPath: "/data", Image: img, Readonly: true}, wantErr: "both set"},
		{name: "absolute sub path", m: &runtimeapi.Mount{ContainerPath: "/v", Image: img, Readonly: true, ImageSubPath: "/etc"}, wantErr: "image_sub_path"},
		{name: "climbing sub path", m: &runtimeapi.Mount{ContainerPath: "/v", Image: img, Readonly: true, ImageSubPath: "../etc"}, wantErr: "image_sub_path"},
		{name: "dot dot", m: &runtimeapi.Mount{ContainerPath: "/v", Image: img, Readonly: true, ImageSubPath: ".."}, wantErr: "image_sub_path"},
		{name: "unclean sub path", m: &runtimeapi.Mount{ContainerPath: "/v", Image: img, Readonly: true, ImageSubPath: "etc/../../x"}, wantErr: "image_sub_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{{ContainerPath: "/h", HostPath: "/tmp"}, tc.m}}
			reqs, err := Requests(cfg)
			if tc.wantErr == "" {
				if err != nil || len(reqs) != 1 || reqs[1] != tc.m {
					t.Fatalf("Requests = %v, %v; want mount 1", reqs, err)
				}
				return
			}
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "mounts[1]") {
				t.Fatalf("error %v, want InvalidArgument naming mounts[1] and %q", err, tc.wantErr)
			}
		})
	}
}

func TestRecordAndStatus(t *testing.T) {
	vols := []Volume{{Index: 1, ImageID: "sha256:aa", Snapshot: "sha256:top"}}
	extra := map[string]string{}
	if err := Record(extra, vols); err != nil {
		t.Fatal(err)
	}
	if got := Snapshots(extra); len(got) != 1 || got[0] != "sha256:top" {
		t.Errorf("Snapshots = %q", got)
	}
	mounts := []*runtimeapi.Mount{
		{ContainerPath: "/h", HostPath: "/tmp"},
		{ContainerPath: "/v", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "busybox:1"}},
	}
	st := Status(mounts, extra)
	if got := st[1].GetImage().GetImageRef(); got != "sha256:aa" {
		t.Errorf("image_ref = %q, want the image ID", got)
	}
	if mounts[1].Image.ImageRef != "" {
		t.Error("Status changed the config's mount")
	}
	if st[0] != mounts[0] {
		t.Error("a host mount was changed")
	}
	// Records from before image volumes, or damaged ones, have none.
	if Snapshots(map[string]string{}) != nil || FromRecord(map[string]string{extraKey: "{"}) != nil {
		t.Error("volumes from an empty or bad record")
	}
	if len(Status(mounts, map[string]string{extraKey: `[{"index":7,"image_id":"x"}]`})) != 2 {
		t.Error("an index out of range changed the mounts")
	}
}

// layer makes a directory with the given files ("name" -> content, or
// "->target" for a symlink).
func layer(t *testing.T, files map[string]string) string {
	t.Helper()
	d := t.TempDir()
	for name, content := range files {
		p := filepath.Join(d, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
}

func mounted(t *testing.T, p string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

func TestMount(t *testing.T) {
	needRoot(t)
	bottom := layer(t, map[string]string{"bin/sh": "sh", "etc/passwd": "root:x:0:0::/:/bin/sh\n"})
	top := layer(t, map[string]string{
		"etc/group": "root:x:0:\n",
		// An absolute link and one that climbs: inside the image both
		// must resolve below its root, never to the node's /etc.
		"abs":   "->/etc",
		"climb": "->../../../../../../etc",
	})
	for _, tc := range []struct {
		name  string
		lower []string
	}{
		{"overlay", []string{top, bottom}},
		{"one layer", []string{bottom}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "volumes")
			src, err := Mount(dir, Volume{Index: 2, ImageID: "img"}, tc.lower)
			if err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(dir, "2", "image")
			if src != target || !mounted(t, target) {
				t.Fatalf("source %q, want %q mounted", src, target)
			}
			if _, err := os.Stat(filepath.Join(src, "bin/sh")); err != nil {
				t.Error(err)
			}
			err = os.WriteFile(filepath.Join(src, "new"), nil, 0o644)
			if !errors.Is(err, unix.EROFS) {
				t.Errorf("write into the volume: %v, want EROFS", err)
			}
			if err := Unmount(dir); err != nil {
				t.Fatal(err)
			}
			if mounted(t, target) {
				t.Error("still mounted after Unmount")
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("dir left: %v", err)
			}
			if _, err := os.Stat(filepath.Join(bottom, "bin/sh")); err != nil {
				t.Errorf("the layer lost a file: %v", err)
			}
			if err := Unmount(dir); err != nil {
				t.Errorf("second Unmount: %v", err)
			}
		})
	}

	t.Run("sub path", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "volumes")
		defer Unmount(dir)
		target := filepath.Join(dir, "0", "image")
		for sub, want := range map[string]string{"etc": "etc", "abs": "etc", "climb": "etc", "etc/passwd": "etc/passwd"} {
			src, err := Mount(dir, Volume{Index: 0, ImageID: "img", SubPath: sub}, []string{top, bottom})
			if err != nil {
				t.Fatalf("%s: %v", sub, err)
			}
			if src != filepath.Join(target, want) {
				t.Errorf("sub path %q resolves to %q, want %q inside the image", sub, src, want)
			}
			if err := Unmount(dir); err != nil {
				t.Fatal(err)
			}
		}
		_, err := Mount(dir, Volume{Index: 0, ImageID: "img", SubPath: "missing"}, []string{top, bottom})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), `"missing"`) {
			t.Errorf("missing sub path: %v, want InvalidArgument naming it", err)
		}
		if mounted(t, target) {
			t.Error("a failed Mount left the image mounted")
		}
	})
}
