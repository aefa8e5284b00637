// Package idmap makes ID-mapped mounts (mount_setattr(2) with
// MOUNT_ATTR_IDMAP, Linux 5.12 and later): a clone of a directory tree, or
// of a file, mounted elsewhere, through which every owner appears shifted
// as a user namespace maps it. corrald uses them for pods with a user
// namespace of their own, whose root is an unprivileged host ID: the image
// layers under a container's overlay and its volumes are mapped, so the
// container's root owns what the node's root owns. The OCI runtime (runc
// 1.1) cannot make such mounts itself, so corrald makes them before it
// hands the paths over.
//
// The mounts are made in corrald's mount namespace and stay until Unmount;
// a container's are under its bundle, which its removal and the crash
// sweep unmount.
package idmap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Mount mounts an ID-mapped clone of src (with the mounts below it) at
// dst, mapped as the user namespace userns (an open /proc/PID/ns/user)
// maps IDs. dst is made, as a directory or an empty file like src; it must
// not exist yet.
func Mount(src, dst string, userns *os.File) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return &fs.PathError{Op: "open_tree", Path: src, Err: err}
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("ID-map %s: mount_setattr: %w", src, err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if fi.IsDir() {
		err = os.Mkdir(dst, 0o700)
	} else {
		var f *os.File
		f, err = os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o600)
		if err == nil {
			err = f.Close()
		}
	}
	if err != nil {
		return err
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		os.Remove(dst)
		return &fs.PathError{Op: "move_mount", Path: dst, Err: err}
	}
	return nil
}

// Unmount removes an ID-mapped mount made by Mount and its mount point;
// nothing mounted there is fine.
func Unmount(dst string) error {
	err := unix.Unmount(dst, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return &fs.PathError{Op: "umount", Path: dst, Err: err}
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Supported reports whether ID-mapped mounts of dir work on this node: it
// maps dir through a user namespace of its own making, as a pod's would
// be. A kernel before 5.12, or a file system that cannot be ID-mapped, is
// an error saying so.
func Supported(dir string) error {
	holder, userns, err := NewUserns(100000, 65536)
	if err != nil {
		return err
	}
	defer holder()
	defer userns.Close()
	fd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return &fs.PathError{Op: "open_tree", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("ID-mapped mounts of %s: mount_setattr: %w", dir, err)
	}
	return nil
}

// NewUserns makes a user namespace mapping IDs 0..size-1 to host..,
// held by a child process; release ends the child. The open namespace
// stays usable after that for as long as the file is open.
func NewUserns(host, size int) (release func(), ns *os.File, err error) {
	// A child that blocks on its stdin until the pipe closes: unshare(2)
	// of a user namespace is refused to a multithreaded process, which
	// corrald is.
	cmd := exec.Command("/bin/cat")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: host, Size: size}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: host, Size: size}},
		Pdeathsig:   syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("a user namespace: %w", err)
	}
	release = func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}
	ns, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		release()
		return nil, nil, err
	}
	return release, ns, nil
}
