package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup1"
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
)

// The type URLs of the statistics containerd's shims (and corral's) send,
// without the type.googleapis.com/ prefix some senders add.
const (
	TypeV1 = "io.containerd.cgroups.v1.Metrics"
	TypeV2 = "io.containerd.cgroups.v2.Metrics"
)

// Metrics is a cgroup's statistics in the shape of one cgroup version:
// exactly one of V1 and V2 is set.
type Metrics struct {
	V1 *v1.Metrics
	V2 *v2.Metrics
}

// Decode reads the statistics a shim's Stats call returns.
func Decode(typeURL string, b []byte) (Metrics, error) {
	switch strings.TrimPrefix(typeURL, "type.googleapis.com/") {
	case TypeV1:
		var m v1.Metrics
		if err := proto.Unmarshal(b, &m); err != nil {
			return Metrics{}, fmt.Errorf("decode %s: %w", TypeV1, err)
		}
		return Metrics{V1: &m}, nil
	case TypeV2:
		var m v2.Metrics
		if err := proto.Unmarshal(b, &m); err != nil {
			return Metrics{}, fmt.Errorf("decode %s: %w", TypeV2, err)
		}
		return Metrics{V2: &m}, nil
	}
	return Metrics{}, fmt.Errorf("statistics of type %q: %w", typeURL, errdefs.ErrNotImplemented)
}

// Stat reads the statistics of the cgroup at p (a Path), children
// included: a pod's cgroup holds its containers'. The error wraps
// fs.ErrNotExist when the cgroup is not there.
func (n Node) Stat(p string) (Metrics, error) {
	if n.Unified {
		if _, err := os.Stat(filepath.Join(n.Root, p)); err != nil {
			return Metrics{}, fmt.Errorf("cgroup %s: %w", p, err)
		}
		m, err := cgroup2.Load(p, cgroup2.WithMountpoint(n.Root))
		if err != nil {
			return Metrics{}, fmt.Errorf("cgroup %s: %w", p, err)
		}
		st, err := m.Stat()
		if err != nil {
			return Metrics{}, fmt.Errorf("cgroup %s: %w", p, err)
		}
		return Metrics{V2: st}, nil
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(p), cgroup1.WithHierarchy(n.v1Hierarchy))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return Metrics{}, fmt.Errorf("cgroup %s: %w", p, fs.ErrNotExist)
	}
	if err != nil {
		return Metrics{}, fmt.Errorf("cgroup %s: %w", p, err)
	}
	// A controller a kernel lacks a file of (kmem on newer kernels) leaves
	// its numbers at zero rather than failing the rest.
	st, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return Metrics{}, fmt.Errorf("cgroup %s: %w", p, err)
	}
	return Metrics{V1: st}, nil
}

// v1Hierarchy lists the v1 controllers whose numbers the CRI reports, where
// they are mounted below Root.
func (n Node) v1Hierarchy() ([]cgroup1.Subsystem, error) {
	all := []cgroup1.Subsystem{
		cgroup1.NewCpu(n.Root),
		cgroup1.NewCpuacct(n.Root),
		cgroup1.NewMemory(n.Root, cgroup1.OptionalSwap(), cgroup1.IgnoreModules(n.missingKmem()...)),
		cgroup1.NewPids(n.Root),
		cgroup1.NewBlkio(n.Root),
	}
	var out []cgroup1.Subsystem
	for _, s := range all {
		if p, ok := s.(interface{ Path(string) string }); ok {
			if _, err := os.Stat(p.Path("/")); err == nil {
				out = append(out, s)
			}
		}
	}
	return out, nil
}

// missingKmem names the kernel memory files of the v1 memory controller
// that this kernel does not have (newer kernels dropped kmem accounting),
// so that reading them does not fail the rest.
func (n Node) missingKmem() []string {
	var out []string
	for _, m := range []string{"kmem", "kmem.tcp"} {
		if _, err := os.Stat(filepath.Join(n.Root, "memory", "memory."+m+".usage_in_bytes")); err != nil {
			out = append(out, m)
		}
	}
	return out
}

// Procs lists the processes in the cgroup at p and below it.
func (n Node) Procs(p string) ([]int, error) {
	dir := filepath.Join(n.Root, p)
	if !n.Unified {
		// Every process is in exactly one cgroup of each hierarchy; the
		// pids hierarchy is the one runc always joins, memory the next.
		for _, c := range []string{"pids", "memory", "cpuacct"} {
			if _, err := os.Stat(filepath.Join(n.Root, c)); err == nil {
				dir = filepath.Join(n.Root, c, p)
				break
			}
		}
	}
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // a child cgroup removed meanwhile
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) && path != dir {
			return nil
		}
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", p, err)
	}
	return pids, nil
}
