// Command cribench is the Go side of hack/bench.sh: it runs the same
// workload, through crictl and critest, on two CRI runtimes that are already
// serving, and prints their figures side by side with the ratio of the
// first to the second.
//
//	cribench -crictl bin/crictl -critest bin/critest -work DIR -out FILE.json \
//	    -runtime corral=SOCKET:PID -runtime containerd=SOCKET:PID
//
// The workload, on each runtime in turn (one pod on one, then one on the
// other, so that load from elsewhere on the machine falls on both):
//
//   - crictl version, as the cost of starting the client;
//   - N pods one after another: runp, create, start, each timed; then the
//     memory of the daemon and of every shim (VmRSS, and PSS from
//     /proc/PID/smaps_rollup) with the N pods running; then stopp and rmp of
//     each, timed;
//   - P pods from C parallel clients: the total time until every client has
//     started its share, then a check that all are running, then their
//     removal, timed;
//   - critest -benchmark with the same parameters for both (pod and
//     container lifecycle).
//
// Figures are medians, except totals. The JSON written to -out holds every
// row with both values, the ratio, and the machine and load it ran under.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// runtimeFlags collects -runtime NAME=SOCKET:PID.
type runtimeFlags []*target

func (r *runtimeFlags) String() string { return "" }

func (r *runtimeFlags) Set(v string) error {
	t, err := parseTarget(v)
	if err != nil {
		return err
	}
	*r = append(*r, t)
	return nil
}

func parseTarget(v string) (*target, error) {
	name, rest, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return nil, fmt.Errorf("-runtime %q: want NAME=SOCKET:PID", v)
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 {
		return nil, fmt.Errorf("-runtime %q: want NAME=SOCKET:PID", v)
	}
	pid, err := strconv.Atoi(rest[i+1:])
	if err != nil || pid <= 0 {
		return nil, fmt.Errorf("-runtime %q: %q is not a pid", v, rest[i+1:])
	}
	socket := strings.TrimPrefix(rest[:i], "unix://")
	return &target{Name: name, Socket: socket, PID: pid}, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cribench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var p params
	var targets runtimeFlags
	fs.Var(&targets, "runtime", "`NAME=SOCKET:PID` of a serving runtime; twice: ratios are first/second")
	fs.StringVar(&p.Crictl, "crictl", "bin/crictl", "crictl `binary`")
	fs.StringVar(&p.Critest, "critest", "bin/critest", "critest `binary`; empty skips critest -benchmark")
	fs.StringVar(&p.Work, "work", "", "scratch `DIR` for configs and critest's output")
	out := fs.String("out", "", "write the results as JSON to `FILE`")
	fs.IntVar(&p.Pods, "pods", 20, "pods started one after another")
	fs.IntVar(&p.ParallelPods, "parallel-pods", 100, "pods started by the parallel clients together")
	fs.IntVar(&p.Clients, "clients", 10, "parallel clients")
	fs.IntVar(&p.VersionRuns, "version-runs", 20, "crictl version runs for the client overhead")
	fs.IntVar(&p.CritestN, "critest-n", 20, "podsNumber and containersNumber of critest -benchmark")
	fs.StringVar(&p.Image, "image", "registry.k8s.io/e2e-test-images/busybox:1.29-2", "the containers' `image` (busybox: they run sleep)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if len(targets) != 2 || p.Work == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "cribench: -work and exactly two -runtime flags are required, and no arguments")
		return 2
	}
	if p.Pods <= 0 || p.Clients <= 0 || p.ParallelPods < p.Clients || p.VersionRuns <= 0 {
		fmt.Fprintln(stderr, "cribench: -pods, -clients, -version-runs must be positive and -parallel-pods at least -clients")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b := &bench{params: p, targets: targets, log: stderr}
	res, err := b.run(ctx)
	if res != nil {
		res.print(stdout)
		if *out != "" {
			if werr := res.write(*out); werr != nil {
				fmt.Fprintln(stderr, "cribench:", werr)
				return 1
			}
			fmt.Fprintln(stdout, "results in", *out)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "cribench:", err)
		return 1
	}
	return 0
}

// params are the workload's knobs, recorded in the JSON.
type params struct {
	Crictl       string `json:"-"`
	Critest      string `json:"-"`
	Work         string `json:"-"`
	Pods         int    `json:"pods"`
	ParallelPods int    `json:"parallel_pods"`
	Clients      int    `json:"clients"`
	VersionRuns  int    `json:"version_runs"`
	CritestN     int    `json:"critest_n"`
	Image        string `json:"image"`
}

// settle is how long the runtimes get, with the pods running, before their
// memory is read: long enough for the shims' start-up garbage to be
// collected, as it would be on a node.
const settle = 3 * time.Second

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "cribench: "+format+"\n", args...)
}
