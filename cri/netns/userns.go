package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// IDMap maps IDs 0..Size-1 of a user namespace to host IDs Host...
type IDMap struct {
	Host, Size uint32
}

// CreateOwned makes a user namespace with the given mappings and a network
// namespace that belongs to it, with its loopback up, and pins them at
// netDir/name and userDir/name. It returns both paths.
//
// A pod with a user namespace of its own needs its network namespace to
// belong to that user namespace: the runtime joins the user namespace
// before the others, and from inside it a network namespace of the node's
// user namespace can be neither joined nor configured (sysctls, sysfs,
// binding ports below 1024). The namespaces are made by a child process
// cloned into both, which ends once they are pinned: a multithreaded
// process such as corrald cannot unshare a user namespace itself.
//
// On error nothing is left behind but the directories.
func CreateOwned(netDir, userDir, name string, uid, gid IDMap) (netPath, userPath string, err error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.Contains(name, "..") || name == "." {
		return "", "", fmt.Errorf("namespace name %q: must be non-empty, without '/' or '..': %w", name, errdefs.ErrInvalidArgument)
	}
	if !filepath.IsAbs(netDir) || !filepath.IsAbs(userDir) {
		return "", "", fmt.Errorf("namespace dirs %q, %q are not absolute: %w", netDir, userDir, errdefs.ErrInvalidArgument)
	}
	if uid.Size == 0 || gid.Size == 0 {
		return "", "", fmt.Errorf("user namespace mapping of no IDs: %w", errdefs.ErrInvalidArgument)
	}
	for _, d := range []string{netDir, userDir} {
		if err := prepareDir(d); err != nil {
			return "", "", err
		}
	}
	netPath, userPath = filepath.Join(netDir, name), filepath.Join(userDir, name)
	// Only what this call made is undone: an existing pin is another pod's.
	var made []string
	defer func() {
		if err != nil {
			for _, p := range made {
				Remove(p)
			}
		}
	}()
	for _, p := range []string{netPath, userPath} {
		f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if errors.Is(err, fs.ErrExist) {
			return "", "", fmt.Errorf("namespace %s: %w", p, errdefs.ErrAlreadyExists)
		}
		if err != nil {
			return "", "", fmt.Errorf("namespace: %w", err)
		}
		made = append(made, p)
		f.Close()
	}

	// A child blocked reading its stdin until the pipe closes.
	cmd := exec.Command("/bin/cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(uid.Host), Size: int(uid.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(gid.Host), Size: int(gid.Size)}},
		Pdeathsig:   syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", "", err
	}
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("user and network namespaces: %w", err)
	}
	defer func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}()
	for kind, p := range map[string]string{"net": netPath, "user": userPath} {
		src := fmt.Sprintf("/proc/%d/ns/%s", cmd.Process.Pid, kind)
		if err := unix.Mount(src, p, "none", unix.MS_BIND, ""); err != nil {
			return "", "", fmt.Errorf("pin %s namespace at %s: %w", kind, p, err)
		}
	}
	if err := Do(netPath, loopbackUp); err != nil {
		return "", "", fmt.Errorf("network namespace %s: %w", netPath, err)
	}
	return netPath, userPath, nil
}
