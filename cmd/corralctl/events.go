package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	// Linked for their types: the events' payloads decode by type URL.
	_ "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs/pkg/errgrpc"
	debug "github.com/corral-runtime/corral/proto/debug/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// eventLine is an event as `events -o json` prints it, one per line.
type eventLine struct {
	Time      string          `json:"time"`
	Namespace string          `json:"namespace,omitempty"`
	Topic     string          `json:"topic"`
	Pod       string          `json:"pod,omitempty"`
	Container string          `json:"container,omitempty"`
	Type      string          `json:"type,omitempty"`
	Event     json.RawMessage `json:"event,omitempty"`
}

func runEvents(e *env, args []string) error {
	fs := e.subFlags("events")
	var topics []string
	fs.Func("topic", "only events whose topic starts with `PREFIX` (/tasks/exit, /tasks/); repeatable", func(v string) error {
		topics = append(topics, v)
		return nil
	})
	rest, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("events takes no arguments, got %q", rest)}
	}
	client, closeClient, err := e.dialDebug()
	if err != nil {
		return err
	}
	defer closeClient()
	// No timeout: the stream follows until corrald stops or corralctl is
	// interrupted.
	stream, err := client.Events(context.Background(), &debug.EventsRequest{Topics: topics})
	if err != nil {
		return errgrpc.ToNative(err)
	}
	enc := json.NewEncoder(e.stdout)
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("event stream: %w", errgrpc.ToNative(err))
		}
		line := eventLine{
			Time:      time.Unix(0, ev.Timestamp).UTC().Format(time.RFC3339Nano),
			Namespace: ev.Namespace, Topic: ev.Topic, Pod: ev.PodId, Container: ev.ContainerId, Type: ev.TypeUrl,
		}
		if m, err := decodeAny(&anypb.Any{TypeUrl: ev.TypeUrl, Value: ev.Value}); err == nil {
			line.Event, _ = protojson.Marshal(m)
		}
		if e.output == "json" {
			if err := enc.Encode(line); err != nil {
				return err
			}
			continue
		}
		// One line per event, written as it comes: a table would wait
		// for the end of a stream that has none.
		fmt.Fprintf(e.stdout, "%s  %-20s  pod=%s  container=%s  %s\n", line.Time, line.Topic, short(line.Pod), short(line.Container), compact(line.Event))
	}
}

func compact(raw json.RawMessage) string {
	s := string(raw)
	return strings.Join(strings.Fields(s), " ")
}
