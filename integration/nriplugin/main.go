// Command nriplugin is a tiny NRI plugin for corral's integration tests.
// corrald starts it from its plugin directory (or it connects to a socket
// given with -socket). It adds the environment variable CORRAL_NRI and the
// annotation corral.test/nri to every container it is asked about, and
// appends every event it gets to a file, one "EVENT ID" line each.
//
// Its configuration (plugin_config_path/IDX-NAME.conf) is lines of
// key=value: events=FILE (where the events go) and env=VALUE (the value of
// CORRAL_NRI).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

type plugin struct {
	mu     sync.Mutex
	events string
	env    string
}

func (p *plugin) Configure(_ context.Context, config, runtime, version string) (stub.EventMask, error) {
	for _, line := range strings.Split(config, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "events":
			p.events = v
		case "env":
			p.env = v
		}
	}
	p.record("Configure", runtime)
	return 0, nil
}

func (p *plugin) record(event, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.events == "" {
		return
	}
	f, err := os.OpenFile(p.events, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", event, id)
}

func (p *plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	p.record("Synchronize", fmt.Sprintf("%d/%d", len(pods), len(ctrs)))
	return nil, nil
}

func (p *plugin) RunPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RunPodSandbox", pod.GetId())
	return nil
}

func (p *plugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("StopPodSandbox", pod.GetId())
	return nil
}

func (p *plugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	p.record("RemovePodSandbox", pod.GetId())
	return nil
}

func (p *plugin) CreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.record("CreateContainer", c.GetId())
	adj := &api.ContainerAdjustment{}
	adj.AddEnv("CORRAL_NRI", p.env)
	adj.AddAnnotation("corral.test/nri", "adjusted")
	return adj, nil, nil
}

func (p *plugin) PostCreateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("PostCreateContainer", c.GetId())
	return nil
}

func (p *plugin) StartContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("StartContainer", c.GetId())
	return nil
}

func (p *plugin) PostStartContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("PostStartContainer", c.GetId())
	return nil
}

func (p *plugin) UpdateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container, _ *api.LinuxResources) ([]*api.ContainerUpdate, error) {
	p.record("UpdateContainer", c.GetId())
	return nil, nil
}

func (p *plugin) PostUpdateContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("PostUpdateContainer", c.GetId())
	return nil
}

func (p *plugin) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.record("StopContainer", c.GetId())
	return nil, nil
}

func (p *plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.record("RemoveContainer", c.GetId())
	return nil
}

func main() {
	socket := flag.String("socket", "", "connect to this NRI socket (default: as started by the runtime)")
	name := flag.String("name", "", "plugin name when connecting to -socket")
	idx := flag.String("idx", "", "plugin index when connecting to -socket")
	flag.Parse()
	var opts []stub.Option
	if *socket != "" {
		opts = append(opts, stub.WithSocketPath(*socket), stub.WithPluginName(*name), stub.WithPluginIdx(*idx))
	}
	s, err := stub.New(&plugin{}, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
