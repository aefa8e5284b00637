package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memory is one process's footprint in KiB: VmRSS, and PSS, which splits
// each shared page among the processes mapping it, so that N shims of one
// binary add up to what they cost the node together.
type memory struct {
	RSS int `json:"rss_kib"`
	PSS int `json:"pss_kib"`
}

// readMemory reads VmRSS from /proc/PID/status and Pss from
// /proc/PID/smaps_rollup.
func readMemory(pid int) (memory, error) {
	var m memory
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	m.RSS, err = procField(f, "VmRSS:")
	f.Close()
	if err != nil {
		return m, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	f, err = os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return m, err
	}
	m.PSS, err = procField(f, "Pss:")
	f.Close()
	if err != nil {
		return m, fmt.Errorf("/proc/%d/smaps_rollup: %w", pid, err)
	}
	return m, nil
}

// procField reads the "Key:   N kB" line of a /proc file.
func procField(r io.Reader, key string) (int, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == key {
			return strconv.Atoi(fields[1])
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no %s line", key)
}

// shimPIDs finds the shims a daemon started: processes whose program name
// holds "shim" and whose arguments say "-address SOCKET", as both
// containerd's and corral's shims are started.
func shimPIDs(socket string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if isShimOf(cmdline, socket) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isShimOf(cmdline []byte, socket string) bool {
	args := strings.Split(string(bytes.TrimRight(cmdline, "\x00")), "\x00")
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "shim") {
		return false
	}
	for i := 1; i+1 < len(args); i++ {
		if (args[i] == "-address" || args[i] == "--address") && strings.TrimPrefix(args[i+1], "unix://") == socket {
			return true
		}
	}
	return false
}
