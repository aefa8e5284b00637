package server

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/corral-runtime/corral/cri/shimclient"
)

// runtimeGrace is how long a runtime process a dead shim left behind may
// go on before it is killed: runc create takes well under a second.
const runtimeGrace = 10 * time.Second

// settleCutShortCreate undoes a Create the shim did not answer, typically
// because the shim died under it. The shim's runtime process (runc create
// or run) is not the shim's to take along: it goes on alone, and makes the
// container's state, its init process and its cgroups after the caller
// gave up. So this waits for it to end (killing it after runtimeGrace),
// and only then has the shim binary's delete remove whatever it made
// (runc delete --force: processes, state, cgroups; the rootfs mounts).
// Undoing before it ended would race it, and leave what it made after.
func (s *Server) settleCutShortCreate(ctx context.Context, log *slog.Logger, bundle, id string, opts shimclient.Options) {
	waitRuntimeProcesses(bundle, id, runtimeGrace)
	if _, err := shimclient.Delete(ctx, bundle, id, opts); err != nil {
		log.Warn("shim delete after a Create cut short", "task", id, "error", err)
	}
}

// waitRuntimeProcesses waits until no runtime process works on container
// id of bundle, as a corral shim runs them (see runtimeCommandFor),
// killing what is left after grace.
func waitRuntimeProcesses(bundle, id string, grace time.Duration) {
	deadline := time.Now().Add(grace)
	killed := false
	for {
		pids := runtimeProcesses(bundle, id)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if killed {
				return
			}
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			// A zombie's command line is empty: gone once it died.
			killed, deadline = true, time.Now().Add(time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runtimeProcesses lists the processes whose command line names bundle
// after --bundle and ends in id.
func runtimeProcesses(bundle, id string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if runtimeCommandFor(bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}), bundle, id) {
			out = append(out, pid)
		}
	}
	return out
}

// runtimeCommandFor reports whether args is a runtime command for
// container id of bundle: its last argument is id, and --bundle names
// bundle (create, run) or --log names the bundle's log.json (every
// command a corral shim runs: start, kill, exec, delete too).
func runtimeCommandFor(args [][]byte, bundle, id string) bool {
	if len(args) < 3 || string(args[len(args)-1]) != id {
		return false
	}
	logFile := filepath.Join(bundle, "log.json")
	for i := 0; i+1 < len(args); i++ {
		switch a, v := string(args[i]), string(args[i+1]); {
		case (a == "--bundle" || a == "-b") && v == bundle, a == "--log" && v == logFile:
			return true
		}
	}
	return false
}
