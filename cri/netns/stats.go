package netns

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Interface is the traffic of one network interface, as the kernel counts
// it in /proc/net/dev.
type Interface struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Interfaces reads the interfaces of the network namespace process pid is
// in, from /proc/PID/net/dev: a pod's, through its pause process, without
// entering the namespace.
func Interfaces(pid int) ([]Interface, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("interfaces of pid %d: not a process", pid)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseNetDev(f)
}

// ParseNetDev parses the /proc/net/dev table: two header lines, then one
// line per interface, "NAME: 8 receive counters 8 transmit counters". A
// line that is not of that shape is an error rather than zeros.
func ParseNetDev(r io.Reader) ([]Interface, error) {
	sc := bufio.NewScanner(r)
	var out []Interface
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if n <= 2 {
			continue // the column headers
		}
		name, counters, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		f := strings.Fields(counters)
		if !ok || name == "" || len(f) < 16 {
			return nil, fmt.Errorf("/proc/net/dev line %d: %q is not an interface's counters", n, line)
		}
		var v [16]uint64
		for i := range v {
			x, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev line %d, interface %s: %w", n, name, err)
			}
			v[i] = x
		}
		out = append(out, Interface{
			Name:    name,
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11],
		})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
