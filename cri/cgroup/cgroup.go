package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// The cgroup drivers, as the kubelet and the CRI name them.
const (
	DriverCgroupfs = "cgroupfs"
	DriverSystemd  = "systemd"
)

// prefix names corral's own cgroups: the default pod cgroups (/corral/ID,
// corral-ID.slice) and, under systemd, the containers' scopes.
const prefix = "corral"

// CheckDriver reports whether the node can use driver. The systemd driver
// needs systemd running as the node's init: the runtime would otherwise
// fail every pod with a D-Bus error that names neither the setting nor the
// fix.
func CheckDriver(driver string) error {
	return checkDriver(driver, "/")
}

func checkDriver(driver, root string) error {
	switch driver {
	case DriverCgroupfs:
		return nil
	case DriverSystemd:
		if SystemdRunning(root) {
			return nil
		}
		init := "unknown"
		if b, err := os.ReadFile(filepath.Join(root, "proc/1/comm")); err == nil {
			init = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("cgroup_driver is %q, but systemd is not running on this node (PID 1 is %q and %s does not exist): set cgroup_driver = %q, and the kubelet's cgroupDriver to match",
			driver, init, filepath.Join(root, "run/systemd/system"), DriverCgroupfs)
	default:
		return fmt.Errorf("cgroup_driver %q is neither %q nor %q", driver, DriverCgroupfs, DriverSystemd)
	}
}

// SystemdRunning reports whether systemd is the init of the node whose
// root file system is at root: the check of sd_booted(3), the directory
// /run/systemd/system that only a running systemd makes.
func SystemdRunning(root string) bool {
	fi, err := os.Lstat(filepath.Join(root, "run/systemd/system"))
	return err == nil && fi.IsDir()
}

// DefaultParent is the cgroup of a pod whose config names none: a cgroup
// of its own, so that its usage can be read in one place, which corrald
// removes with the pod.
func DefaultParent(driver, podID string) string {
	if driver == DriverSystemd {
		return prefix + "-" + podID + ".slice"
	}
	return "/" + prefix + "/" + podID
}

// Path is the path of a pod's cgroup in the hierarchy (as /proc/PID/cgroup
// names it) for its parent as the CRI sends it: the parent itself for
// cgroupfs; for systemd the slice the parent ends in, expanded as systemd
// nests slices (a-b.slice is /a.slice/a-b.slice).
func Path(driver, parent string) (string, error) {
	if parent == "" || strings.ContainsRune(parent, 0) {
		return "", fmt.Errorf("cgroup parent %q is not a cgroup", parent)
	}
	if driver != DriverSystemd {
		if !strings.HasPrefix(parent, "/") || hasDotDot(parent) {
			return "", fmt.Errorf("cgroup parent %q is not an absolute cgroupfs path", parent)
		}
		return path.Clean(parent), nil
	}
	return expandSlice(path.Base(parent))
}

// expandSlice turns a systemd slice name into its path, as systemd's
// unit_name_to_path and runc's ExpandSlice do.
func expandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || strings.Contains(name, "/") || name == "" {
		return "", fmt.Errorf("%q is not a systemd slice name (NAME.slice)", slice)
	}
	if name == "-" {
		return "/", nil
	}
	if strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") || strings.Contains(name, "--") {
		return "", fmt.Errorf("%q is not a systemd slice name: a dash starts, ends or doubles", slice)
	}
	var b strings.Builder
	parts := strings.Split(name, "-")
	for i := range parts {
		b.WriteString("/" + strings.Join(parts[:i+1], "-") + ".slice")
	}
	return b.String(), nil
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// Node is the cgroup file system of a node: the v1 hierarchies mounted
// below Root (one directory per controller, as on this project's hybrid
// hosts), or the v2 tree at Root.
type Node struct {
	Root    string
	Unified bool
}

// Host is the node corrald runs on. A hybrid node (v1 controllers, with the
// v2 tree mounted at Root/unified without controllers) counts as v1, as it
// does for runc.
func Host() Node {
	return Node{Root: "/sys/fs/cgroup", Unified: cgroups.Mode() == cgroups.Unified}
}

// removeAttempts bounds the retries of an rmdir that finds the cgroup busy:
// the kernel frees a cgroup a moment after its last process is reaped.
const removeAttempts = 20

// Remove removes the cgroup at path (a Path) from every hierarchy of the
// node, deepest first; a cgroup that is not there is fine. On v1 it is one
// directory in each hierarchy the runtime made it in (the named systemd
// hierarchy and the v2 tree of a hybrid node included).
func (n Node) Remove(p string) error {
	if p == "" || p == "/" || !strings.HasPrefix(p, "/") || hasDotDot(p) {
		return fmt.Errorf("refusing to remove cgroup %q", p)
	}
	var roots []string
	if n.Unified {
		roots = []string{n.Root}
	} else {
		entries, err := os.ReadDir(n.Root)
		if err != nil {
			return err
		}
		for _, e := range entries {
			// Controllers mounted together appear as symbolic links too
			// (cpu -> cpu,cpuacct); each directory is visited once.
			if e.IsDir() {
				roots = append(roots, filepath.Join(n.Root, e.Name()))
			}
		}
	}
	var errs []error
	for _, r := range roots {
		if err := removeTree(filepath.Join(r, p)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeTree removes dir and the cgroups below it, children first. A cgroup
// directory holds only the kernel's files, which rmdir takes along.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	delay := 10 * time.Millisecond
	for i := 0; ; i++ {
		err := unix.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY) && i < removeAttempts:
			time.Sleep(delay)
			delay = min(2*delay, 200*time.Millisecond)
		default:
			return &fs.PathError{Op: "rmdir", Path: dir, Err: err}
		}
	}
}
