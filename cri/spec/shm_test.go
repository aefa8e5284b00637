package spec

import (
	"testing"

	"github.com/containerd/errdefs"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestShmSize(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		hostIPC     bool
		want        uint64
		wantErr     string
	}{
		{want: DefaultShmSize},
		{annotations: map[string]string{AnnotationShmSize: "128Mi"}, want: 128 << 20},
		{annotations: map[string]string{AnnotationShmSize: "1G"}, want: 1e9},
		{annotations: map[string]string{AnnotationShmSize: "65536k"}, want: 65536000},
		{annotations: map[string]string{AnnotationShmSize: "1048576"}, want: 1 << 20},
		{annotations: map[string]string{AnnotationShmSizeCRIO: "256Mi"}, want: 256 << 20},
		// corral's own wins over CRI-O's.
		{annotations: map[string]string{AnnotationShmSize: "16Mi", AnnotationShmSizeCRIO: "256Mi"}, want: 16 << 20},
		{annotations: map[string]string{AnnotationShmSize: ""}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "-1"}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "1.5Gi"}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "12Q"}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "1"}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "2Ti"}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "99999999999999999999"}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "Mi"}, wantErr: "is not a size"},
		{annotations: map[string]string{AnnotationShmSize: "128Mi"}, hostIPC: true, wantErr: "node's IPC namespace"},
	} {
		p := podConfig()
		p.Annotations = tc.annotations
		if tc.hostIPC {
			p.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Ipc: runtimeapi.NamespaceMode_NODE}
		}
		got, err := ShmSize(p)
		if tc.wantErr != "" {
			wantErr(t, err, errdefs.IsInvalidArgument, tc.wantErr)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %d, %v; want %d", tc.annotations, got, err, tc.want)
		}
	}
}
