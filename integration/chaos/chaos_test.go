// Package chaos is corral's chaos suite: a seeded random workload of pods,
// containers, execs and image pulls from several concurrent clients, with
// faults injected at random points (corrald, a shim or a container killed
// with SIGKILL, the CNI bridge plugin failing or hanging, the registry
// cutting downloads short, --root full). After each round it restarts what
// was killed, lets corrald settle and checks the invariants against the
// host itself: every pod and container the clients were told exists is
// listed, in a state the host agrees with; nothing is on the host that no
// record names (shims, runc containers, mounts, network namespaces, veths,
// addresses, iptables rules, cgroups, bundle dirs, unfinished downloads,
// unreferenced snapshots); and exit codes are the ones the commands ended
// with.
//
//	make chaos SEED=7 ROUNDS=200
//
// ^C (or SIGTERM) ends a run after the round in progress and removes what
// it made; the run then fails, as an incomplete one.
//
// go test runs a short version (3 rounds, a fixed seed) with the other
// integration tests.
package chaos

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	seedFlag    = flag.Uint64("seed", 1, "seed of the workload and the faults")
	roundsFlag  = flag.Int("rounds", 3, "rounds to run")
	clientsFlag = flag.Int("clients", 3, "concurrent clients")
	roundFlag   = flag.Duration("round", 5*time.Second, "how long the clients work in a round")
)

// binDir holds the binaries under test.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Println("the chaos suite needs root; skipping")
		os.Exit(0)
	}
	binDir = os.Getenv("CORRAL_BIN_DIR")
	cleanup := func() {}
	if binDir == "" {
		d, err := os.MkdirTemp("", "chaos-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		cmd := exec.Command("go", "build", "-o", d+"/", "../../cmd/...")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
			os.Exit(1)
		}
		binDir, cleanup = d, func() { os.RemoveAll(d) }
	}
	os.Setenv("PATH", binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// TestChaos runs the rounds and fails on any invariant violation.
func TestChaos(t *testing.T) {
	seed, rounds := *seedFlag, *roundsFlag
	t.Logf("chaos: seed %d, %d rounds, %d clients, %s per round", seed, rounds, *clientsFlag, *roundFlag)
	e := newEnv(t, seed)
	m := newModel()
	rng := rand.New(rand.NewPCG(seed, 0))
	injected := map[string]int{}
	var violations []string
	ran := 0
	report := func() {
		t.Logf("chaos: seed %d, %d of %d rounds run", seed, ran, rounds)
		t.Logf("faults injected: %s", formatCounts(injected))
		t.Logf("calls: %s", formatCounts(m.ops))
		t.Logf("exit codes checked against the commands': %d containers", len(m.exitsChecked))
		if len(violations) == 0 {
			t.Logf("invariant violations: none")
			return
		}
		t.Errorf("invariant violations: %d", len(violations))
		for _, v := range violations {
			t.Errorf("  %s", v)
		}
	}
	defer report()

	// Interrupted (^C, SIGTERM), the run ends after the round in progress,
	// and the cleanups remove what it started: daemons, pods, mounts.
	interrupted, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ports := hostPorts(t)
	for round := 1; round <= rounds; round++ {
		if interrupted.Err() != nil {
			t.Errorf("interrupted after %d rounds; removing what the run made", ran)
			break
		}
		var wg sync.WaitGroup
		deadline := time.Now().Add(*roundFlag)
		for n := range *clientsFlag {
			c := &client{n: n, e: e, m: m, rng: rand.New(rand.NewPCG(seed, uint64(round*100+n))), ports: ports}
			wg.Add(1)
			go func() { defer wg.Done(); c.run(deadline) }()
		}
		// Most rounds get one fault, some two, some none.
		var hitsMu sync.Mutex
		var hits []string
		nfaults := []int{0, 1, 1, 1, 2}[rng.IntN(5)]
		for range nfaults {
			f := faults[rng.IntN(len(faults))]
			at := time.Duration(rng.Int64N(int64(*roundFlag)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(at)
				what := f.inject(e, m, rand.New(rand.NewPCG(seed, uint64(at))))
				hitsMu.Lock()
				defer hitsMu.Unlock()
				hits = append(hits, fmt.Sprintf("%s at %s: %s", f.name, at.Round(time.Millisecond), what))
			}()
			injected[f.name]++
		}
		wg.Wait()
		ran = round
		if err := e.restore(); err != nil {
			violations = append(violations, fmt.Sprintf("round %d: restart: %v", round, err))
			return
		}
		l, err := e.settle()
		if err != nil {
			violations = append(violations, fmt.Sprintf("round %d: %v", round, err))
			e.dumpStacks(fmt.Sprintf("round-%d", round))
			return
		}
		found := e.checkSettled(m, l)
		m.mu.Lock()
		found = append(found, m.violations...)
		if len(m.timeouts) > 0 && !slices.ContainsFunc(hits, func(h string) bool { return strings.HasPrefix(h, "cni-hang") }) {
			found = append(found, fmt.Sprintf("%d calls ran out of time with nothing hanging to blame: %v", len(m.timeouts), m.timeouts))
		}
		m.violations, m.timeouts = nil, nil
		m.mu.Unlock()
		if len(found) > 0 {
			// Stacks while the trouble is fresh; the run ends here, since
			// dumping them ends the processes.
			e.dumpStacks(fmt.Sprintf("round-%d", round))
		}
		sort.Strings(hits)
		t.Logf("round %d: %d pods, %d containers; faults: %s; violations: %d", round, len(l.pods), len(l.ctrs), strings.Join(hits, "; "), len(found))
		for _, v := range found {
			violations = append(violations, fmt.Sprintf("round %d (%s): %s", round, strings.Join(hits, "; "), v))
		}
		if len(found) > 0 {
			return
		}
		e.gc(m, l)
	}

	// Last: everything removed through CRI leaves nothing at all.
	if err := e.removeAll(m); err != nil {
		violations = append(violations, "at the end: "+err.Error())
		e.dumpStacks("end")
		return
	}
	l, err := e.settle()
	if err != nil {
		violations = append(violations, "at the end: "+err.Error())
		return
	}
	for _, v := range e.checkSettled(m, l) {
		violations = append(violations, "after removing everything: "+v)
	}
	if ports := bridgePorts(e.bridge); len(ports) > 0 {
		violations = append(violations, fmt.Sprintf("after removing everything: veths left on %s: %v", e.bridge, ports))
	}
	if ips := ipReservations(e.ipam, e.network); len(ips) > 0 {
		violations = append(violations, fmt.Sprintf("after removing everything: addresses still reserved: %v", ips))
	}
}

// hostPorts hands out free loopback ports for port mappings.
func hostPorts(t *testing.T) func() int32 {
	var mu sync.Mutex
	used := map[int]bool{}
	return func() int32 {
		mu.Lock()
		defer mu.Unlock()
		for {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			p := l.Addr().(*net.TCPAddr).Port
			l.Close()
			if !used[p] {
				used[p] = true
				return int32(p)
			}
		}
	}
}

func formatCounts(c map[string]int) string {
	if len(c) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range sortedKeys(c) {
		parts = append(parts, fmt.Sprintf("%s %d", k, c[k]))
	}
	return strings.Join(parts, ", ")
}
