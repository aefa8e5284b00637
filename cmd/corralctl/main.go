// Command corralctl is corral's debug client. It finds the node's pod shims
// from the files under corrald's state directory and talks ttrpc to them
// directly, so it works while corrald is stopped or wedged; and it reads
// corrald's own debug service (proto/debug/v1) for the event stream and
// the metadata records. See `corralctl --help`.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// version matches corrald's; set with -ldflags '-X main.version=...'.
var version = "0.1.0-dev"

const defaultState = "/run/corral"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// env is what every command gets: the global flags and where to write.
type env struct {
	state   string
	output  string // "table" or "json"
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
}

// command is one entry of corralctl's command table. A command's name may
// be several words ("debug dump"); dispatch picks the longest match, so new
// commands ("images import") slot in beside the others.
type command struct {
	name     string
	synopsis string // what follows the name in the usage
	summary  string
	run      func(e *env, args []string) error
}

func commands() []command {
	return []command{
		{"shims", "[-o table|json]", "list every pod shim under STATE: pod, pid, address, binary, containers", runShims},
		{"shim", "POD state|pids|stats [CONTAINER] [-o table|json]", "ask a pod's shim for its containers' states, processes or cgroup statistics", runShim},
		{"shim", "POD kill [--signal SIG] [--all] CONTAINER", "signal a container (or, with the pod's ID, its pause process) through the shim", nil},
		{"shim", "POD exec [--container CONTAINER] -- CMD [ARG...]", "run a command in a container through the shim; exits with its exit code", nil},
		{"events", "[--topic PREFIX]... [-o table|json]", "follow corrald's event stream: what the shims report, as it arrives", runEvents},
		{"debug info", "[-o table|json]", "which corrald serves STATE, since when, with which root", runDebugInfo},
		{"debug dump", "[--bucket NAME]... [-o table|json]", "corrald's metadata records as stored in its bbolt file, read-only", runDebugDump},
		{"images import", "FILE|- [-o table|json]", "load the images of a docker-archive or OCI archive (plain, gzip or zstd) into corrald's store, for this node's platform", runImagesImport},
		{"images export", "[--format oci-archive|docker-archive] REF... FILE|-", "write images from corrald's store to an archive that skopeo, docker load or corralctl images import read", runImagesExport},
	}
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitCode is a command's own exit status (exec passes the command's on).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corralctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	e := &env{stdout: stdout, stderr: stderr}
	var showVersion bool
	fs.StringVar(&e.state, "state", defaultState, "corrald's --state `DIR`, where the shims' files and the debug socket are")
	fs.StringVar(&e.output, "o", "table", "output `FORMAT`: table or json")
	fs.DurationVar(&e.timeout, "timeout", 10*time.Second, "give up on a shim or corrald that does not answer within `DURATION`")
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(fs, stdout)
			return 0
		}
		fmt.Fprintln(stderr, "Run 'corralctl --help' for usage.")
		return 2
	}
	if showVersion {
		fmt.Fprintf(stdout, "corralctl %s\n", version)
		return 0
	}
	err := dispatch(e, fs.Args())
	var ue usageError
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "corralctl: %v\nRun 'corralctl --help' for usage.\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "corralctl: %v\n", err)
		return 1
	}
}

func dispatch(e *env, args []string) error {
	if len(args) == 0 {
		return usageError{"no command given"}
	}
	if e.output != "table" && e.output != "json" {
		return usageError{fmt.Sprintf("-o %q: use table or json", e.output)}
	}
	var best *command
	cmds := commands()
	for i, c := range cmds {
		words := strings.Fields(c.name)
		if c.run != nil && len(words) <= len(args) && strings.Join(args[:len(words)], " ") == c.name {
			if best == nil || len(words) > len(strings.Fields(best.name)) {
				best = &cmds[i]
			}
		}
	}
	if best == nil {
		return usageError{fmt.Sprintf("unknown command %q", strings.Join(args, " "))}
	}
	return best.run(e, args[len(strings.Fields(best.name)):])
}

// subFlags is a command's own flag set; every command takes -o as well, so
// `corralctl shims -o json` works as the global `-o json shims` does.
func (e *env) subFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("corralctl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {}
	fs.Func("o", "output `FORMAT`: table or json", func(v string) error {
		if v != "table" && v != "json" {
			return fmt.Errorf("%q: use table or json", v)
		}
		e.output = v
		return nil
	})
	return fs
}

// parse parses a command's flags, which may come before or after its
// arguments; "--" ends them.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	// What follows "--" is never flags: flag.Parse would drop the "--"
	// and, looped over, parse the command's own flags.
	var tail []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, tail = args[:i], args[i:]
	}
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(rest, tail...), nil
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
}

func usage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, `NAME
    corralctl - talk to corral's pod shims and to corrald's debug service

SYNOPSIS
    corralctl [--state DIR] [-o table|json] [--timeout D] COMMAND [ARGS]

DESCRIPTION
    corrald runs one containerd shim v2 process per pod. corralctl finds
    those shims from the files they leave under corrald's state directory
    (STATE/sandboxes/POD/address and shim.pid, the containers' bundles in
    STATE/containers) and talks ttrpc to them directly, never through
    corrald: the shim commands work while corrald is stopped, crashed or
    being upgraded. The events and debug commands read corrald's own debug
    service on STATE/debug.sock, so they need a running corrald; so do the
    images commands, which load images into corrald's store and write them
    out through its image service on the same socket, for nodes that no
    registry reaches.

    Shims of any handler are found alike: corral's containerd-shim-corral-v2,
    containerd's containerd-shim-runc-v2 or a Kata shim.

    POD is a pod sandbox ID, a unique prefix of one, or NAMESPACE/NAME.
    CONTAINER is a container ID, a unique prefix, or the container's name in
    the pod; the pod's ID names its pause process.

    Output is a table by default; -o json prints JSON for scripts (an array,
    or for events one object per line).

COMMANDS
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "    %s %s\n        %s\n", c.name, c.synopsis, c.summary)
	}
	fmt.Fprint(w, `
OPTIONS
`)
	fs.VisitAll(func(fl *flag.Flag) {
		name, text := flag.UnquoteUsage(fl)
		dash := "--"
		if len(fl.Name) == 1 {
			dash = "-"
		}
		fmt.Fprintf(w, "    %s\n", strings.TrimSpace(dash+fl.Name+" "+name))
		if fl.DefValue != "" && fl.DefValue != "false" {
			text += fmt.Sprintf(" (default %s)", fl.DefValue)
		}
		fmt.Fprintf(w, "        %s\n", text)
	})
	fmt.Fprint(w, `
FILES
    STATE/sandboxes/POD/{address,shim.pid,config.json}
        written for each pod by its shim's start and by corrald
    STATE/containers/ID/config.json
        each container's OCI spec; its annotations name its pod
    STATE/debug.sock
        corrald's debug service (ttrpc, proto/debug/v1) and image service
        (proto/images/v1), owner-only

EXAMPLES
    List the shims of the node, then as JSON:
        corralctl shims
        corralctl shims -o json

    A pod's containers as its shim sees them, with corrald stopped:
        corralctl --state /run/corral shim default/web state

    Signal a container, and run a command in one:
        corralctl shim 3f2a kill --signal SIGTERM app
        corralctl shim 3f2a exec --container app -- cat /etc/hostname

    Follow container exits as they happen:
        corralctl events --topic /tasks/exit

    Every pod record, as stored:
        corralctl debug dump --bucket v1/sandboxes -o json

    Load images on a node without a registry, from a file made elsewhere
    by skopeo or docker save, or from a pipe:
        skopeo copy docker://registry.k8s.io/pause:3.10 oci-archive:pause.tar:registry.k8s.io/pause:3.10
        corralctl images import pause.tar
        ssh builder docker save app:1 | corralctl images import -

    Write images out, for another node or for skopeo:
        corralctl images export registry.k8s.io/pause:3.10 pause.tar
        corralctl images export --format docker-archive app:1 - | docker load

EXIT STATUS
    0 on success, 1 when the command failed, 2 for a usage mistake; exec
    exits with the command's own exit status.
`)
}
