package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	debug "github.com/corral-runtime/corral/proto/debug/v1"
)

// debugSocket matches cri/server.DebugSocket (corralctl does not link the
// CRI server to learn one file name).
const debugSocket = "debug.sock"

// dialDebug connects to corrald's debug service under STATE.
func (e *env) dialDebug() (debug.DebugClient, func(), error) {
	path := filepath.Join(e.state, debugSocket)
	conn, err := net.DialTimeout("unix", path, e.timeout)
	if err != nil {
		return nil, nil, fmt.Errorf("corrald's debug service at %s: %w (is corrald running with --state %s?)", path, err, e.state)
	}
	client := ttrpc.NewClient(conn)
	return debug.NewDebugClient(client), func() { client.Close() }, nil
}

func runDebugInfo(e *env, args []string) error {
	rest, err := parse(e.subFlags("debug info"), args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("debug info takes no arguments, got %q", rest)}
	}
	client, closeClient, err := e.dialDebug()
	if err != nil {
		return err
	}
	defer closeClient()
	ctx, cancel := e.context()
	defer cancel()
	info, err := client.Info(ctx, &debug.InfoRequest{})
	if err != nil {
		return errgrpc.ToNative(err)
	}
	started := time.Unix(0, info.StartedAt).UTC().Format(time.RFC3339)
	if e.output == "json" {
		return e.writeJSON(map[string]any{
			"version": info.Version, "pid": info.Pid, "root": info.Root, "state": info.State,
			"schema_version": info.SchemaVersion, "started_at": started,
		})
	}
	t := e.table("VERSION", "PID", "ROOT", "STATE", "SCHEMA", "STARTED")
	t.row(info.Version, strconv.Itoa(int(info.Pid)), info.Root, info.State, strconv.Itoa(int(info.SchemaVersion)), started)
	return t.flush()
}

// dumpRecord is a Record for JSON output: a JSON value stays JSON, other
// bytes are a string if they are text and base64 otherwise.
type dumpRecord struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Value  any    `json:"value"`
}

func runDebugDump(e *env, args []string) error {
	fs := e.subFlags("debug dump")
	var buckets []string
	fs.Func("bucket", "dump only `NAME` (v1/sandboxes, v1/containers, v1/images, meta); repeatable", func(v string) error {
		buckets = append(buckets, v)
		return nil
	})
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("debug dump takes no arguments, got %q", rest)}
	}
	client, closeClient, err := e.dialDebug()
	if err != nil {
		return err
	}
	defer closeClient()
	ctx, cancel := e.context()
	defer cancel()
	stream, err := client.Dump(ctx, &debug.DumpRequest{Buckets: buckets})
	if err != nil {
		return errgrpc.ToNative(err)
	}
	var out []dumpRecord
	for {
		rec, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return errgrpc.ToNative(err)
		}
		out = append(out, dumpRecord{Bucket: rec.Bucket, Key: printable(rec.Key), Value: value(rec.Value)})
	}
	if e.output == "json" {
		if out == nil {
			out = []dumpRecord{}
		}
		return e.writeJSON(out)
	}
	t := e.table("BUCKET", "KEY", "VALUE")
	for _, r := range out {
		v, _ := json.Marshal(r.Value)
		s := string(v)
		if len(s) > 100 {
			s = s[:97] + "..."
		}
		t.row(r.Bucket, r.Key, s)
	}
	return t.flush()
}

// printable shows a key as text, or quoted when it holds binary (the name
// indexes' keys do).
func printable(b []byte) string {
	for _, r := range string(b) {
		if r < 0x20 || r == utf8.RuneError {
			return strconv.Quote(string(b))
		}
	}
	return string(b)
}

func value(b []byte) any {
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	if utf8.Valid(b) {
		return printable(b)
	}
	return b // base64 in JSON
}
