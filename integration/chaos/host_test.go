package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// What the host itself says, read without asking corrald.

const corralShim = "containerd-shim-corral-v2"

type shimProc struct {
	pid int
	id  string // the pod it serves
}

// shimProcs lists the long-running corral shims whose command line names
// state: one per pod.
func shimProcs(state string) []shimProc {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []shimProc
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != corralShim || !slices.Contains(args, "-socket") || !strings.Contains(string(b), state+"/") {
			continue
		}
		s := shimProc{}
		s.pid, _ = strconv.Atoi(filepath.Base(filepath.Dir(p)))
		for i := 1; i+1 < len(args); i++ {
			if strings.TrimLeft(args[i], "-") == "id" {
				s.id = args[i+1]
			}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}

// runcRoots are the dirs runc keeps container state in for corrald's
// shims: STATE/runc/<namespace>.
func runcRoots(state string) []string {
	var out []string
	for _, ns := range dirNames(filepath.Join(state, "runc")) {
		out = append(out, filepath.Join(state, "runc", ns))
	}
	return out
}

// runcState is what runc's state.json says of a container.
type runcState struct {
	pid     int
	running bool
}

// runcContainers maps every container runc knows under state to its state:
// running when its init process is alive (and is the same process).
func runcContainers(state string) map[string]runcState {
	out := map[string]runcState{}
	for _, root := range runcRoots(state) {
		for _, id := range dirNames(root) {
			var st struct {
				InitProcessPid       int    `json:"init_process_pid"`
				InitProcessStartTime uint64 `json:"init_process_start"`
			}
			b, err := os.ReadFile(filepath.Join(root, id, "state.json"))
			if err != nil || json.Unmarshal(b, &st) != nil {
				out[id] = runcState{}
				continue
			}
			alive := st.InitProcessPid > 0 && procStartTime(st.InitProcessPid) == st.InitProcessStartTime && !zombie(st.InitProcessPid)
			out[id] = runcState{pid: st.InitProcessPid, running: alive}
		}
	}
	return out
}

// procStartTime is field 22 of /proc/PID/stat: the same pid with the same
// start time is the same process.
func procStartTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

func dirNames(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// mountsUnder lists mount points below dir, in mount order.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

// ipReservations maps each address host-local holds for network to the
// ID of the pod (the CNI container ID) it was given to.
func ipReservations(dataDir, network string) map[string]string {
	out := map[string]string{}
	dir := filepath.Join(dataDir, network)
	for _, name := range dirNames(dir) {
		if strings.HasPrefix(name, "last_reserved_ip") || name == "lock" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		id, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		out[name] = strings.TrimSpace(id)
	}
	return out
}

// bridgePorts lists the interfaces (the pods' veths) on bridge.
func bridgePorts(bridge string) []string {
	out, err := exec.Command("ip", "-o", "link", "show", "master", bridge).Output()
	if err != nil {
		return nil
	}
	var ports []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 {
			ports = append(ports, strings.TrimSuffix(strings.Split(f[1], "@")[0], ":"))
		}
	}
	return ports
}

var portmapID = regexp.MustCompile(`id: \\?"([0-9a-f]{64})\\?"`)

// portmapRules lists the pod IDs that portmap's iptables rules for
// network still name.
func portmapRules(network string) []string {
	seen := map[string]bool{}
	for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(cmd, "-t", "nat").Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.Contains(line, network) {
				continue
			}
			if m := portmapID.FindStringSubmatch(line); m != nil {
				seen[m[1]] = true
			}
		}
	}
	return sortedKeys(seen)
}

// cgroupsOf lists the cgroup dirs, in every v1 hierarchy and in v2, whose
// last element is one of ids.
func cgroupsOf(ids map[string]bool) []string {
	var out []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/corral/*", "/sys/fs/cgroup/*/corral/*/*", "/sys/fs/cgroup/corral/*", "/sys/fs/cgroup/corral/*/*"} {
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			if ids[filepath.Base(m)] {
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var cniChain = regexp.MustCompile(`-j (CNI-(?:DN|SN)-[0-9a-f]+)`)

// removePortmapRules deletes the iptables rules portmap made for network,
// and the per-pod chains they jump to, for a run that ended without
// removing its pods.
func removePortmapRules(network string) {
	for _, tool := range []string{"iptables", "ip6tables"} {
		out, err := exec.Command(tool+"-save", "-t", "nat").Output()
		if err != nil {
			continue
		}
		chains := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "-A ") || !strings.Contains(line, `name: \"`+network+`\"`) {
				continue
			}
			if m := cniChain.FindStringSubmatch(line); m != nil {
				chains[m[1]] = true
			}
			exec.Command("sh", "-c", tool+" -t nat -D "+strings.TrimPrefix(line, "-A ")).Run()
		}
		for c := range chains {
			exec.Command(tool, "-t", "nat", "-F", c).Run()
			exec.Command(tool, "-t", "nat", "-X", c).Run()
		}
	}
}

// removeCgroup removes a cgroup dir and the ones below it, deepest first.
func removeCgroup(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i])
	}
}
