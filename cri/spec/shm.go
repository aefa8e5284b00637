package spec

import (
	"strconv"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The CRI has no field for the size of a pod's /dev/shm, so it comes
// from a pod annotation: corral's own, or the one CRI-O reads, so that a
// pod written for CRI-O keeps its size.
const (
	AnnotationShmSize     = "io.corral.shm-size"
	AnnotationShmSizeCRIO = "io.kubernetes.cri-o.ShmSize"
	DefaultShmSize        = 64 << 20 // Docker's, containerd's and CRI-O's
	maxShmSize            = 1 << 40
	minShmSize            = 4096
)

// ShmSize is the size in bytes of the pod's /dev/shm: the annotation's,
// written as a Kubernetes quantity ("128Mi", "1G", "65536k", or bytes),
// else DefaultShmSize. A pod using the node's IPC namespace has the node's
// /dev/shm, whose size is not the pod's to choose.
func ShmSize(cfg *runtimeapi.PodSandboxConfig) (uint64, error) {
	key := AnnotationShmSize
	v, ok := cfg.GetAnnotations()[key]
	if !ok {
		key = AnnotationShmSizeCRIO
		v, ok = cfg.GetAnnotations()[key]
	}
	if !ok {
		return DefaultShmSize, nil
	}
	field := "annotations[" + strconv.Quote(key) + "]"
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtimeapi.NamespaceMode_NODE {
		return 0, invalidf(field, "set, but the pod uses the node's IPC namespace and so the node's /dev/shm")
	}
	n, err := parseQuantity(v)
	if err != nil || n < minShmSize || n > maxShmSize {
		return 0, invalidf(field, "%q is not a size from 4Ki to 1Ti such as 128Mi, 1G or 65536k", v)
	}
	return n, nil
}

// parseQuantity reads a non-negative whole Kubernetes quantity: digits
// with an optional binary (Ki, Mi, Gi, Ti) or decimal (k, K, M, G, T)
// suffix.
func parseQuantity(s string) (uint64, error) {
	num := strings.TrimRight(s, "kKMGTi")
	suffix := s[len(num):]
	mult := map[string]uint64{
		"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
		"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
	}[suffix]
	if mult == 0 || !isNumber(num) || len(num) > 15 {
		return 0, strconv.ErrSyntax
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}
