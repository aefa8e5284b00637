package pause

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
)

// BinaryName is the file name of corral's pause binary wherever it is
// installed.
const BinaryName = "corral-pause"

// Find returns the absolute path of the pause binary: configured when it is
// not empty, else the first corral-pause next to the running executable, in
// lib/corral beside the executable's bin directory (make install's
// PREFIX/lib/corral, whatever PREFIX), in /usr/local/lib/corral, in
// /usr/lib/corral or on PATH. The error is
// errdefs.ErrNotFound, saying how to build and install it, when there is none.
func Find(configured string) (string, error) {
	exeDir := ""
	// Without the executable's path the search goes on in the other places.
	if exe, err := os.Executable(); err == nil {
		exeDir = filepath.Dir(exe)
	}
	return find(configured, exeDir, []string{"/usr/local/lib/corral", "/usr/lib/corral"})
}

// find is Find with the places to look in as arguments, for the tests.
func find(configured, exeDir string, libDirs []string) (string, error) {
	if configured != "" {
		if err := checkExecutable(configured); err != nil {
			return "", fmt.Errorf("[sandbox] pause_binary: %w", err)
		}
		return filepath.Abs(configured)
	}
	var dirs []string
	if exeDir != "" {
		dirs = append(dirs, exeDir, filepath.Join(filepath.Dir(exeDir), "lib", "corral"))
	}
	dirs = append(dirs, libDirs...)
	for _, d := range dirs {
		p := filepath.Join(d, BinaryName)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	// LookPath refuses a match in a relative PATH entry (exec.ErrDot), which
	// is right: the daemon's working directory is not a place to find
	// programs in.
	if p, err := exec.LookPath(BinaryName); err == nil {
		return filepath.Abs(p)
	}
	return "", fmt.Errorf("pause binary %s not found in %s or on PATH: "+
		"build it with \"make build\" (bin/%s, which needs gcc and libc6-dev), "+
		"install it with \"make install\" (to $(PREFIX)/lib/corral/%s), "+
		"or name it in the config's [sandbox] pause_binary: %w",
		BinaryName, strings.Join(dirs, ", "), BinaryName, BinaryName, errdefs.ErrNotFound)
}

// checkExecutable fails unless p is, after symlinks, a regular file that
// someone may execute.
func checkExecutable(p string) error {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist: %w", p, errdefs.ErrNotFound)
	case err != nil:
		return fmt.Errorf("pause binary: %w", err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file: %w", p, errdefs.ErrInvalidArgument)
	case st.Mode().Perm()&0o111 == 0:
		return fmt.Errorf("%s is not executable: %w", p, errdefs.ErrInvalidArgument)
	}
	return nil
}
