package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/corral-runtime/corral/cri/netns"
)

const (
	// podIfName is the pod's interface on the main network, as every
	// Kubernetes runtime names it; tools and probes expect it.
	podIfName = "eth0"
	// loopbackNetwork named the loopback attachment in libcni's cache when
	// corral ran the loopback plugin; pods set up then still have one,
	// which Teardown removes, and no network may take the name.
	loopbackNetwork = "cni-loopback"
)

// configExts are the config file extensions that count, as containerd reads
// them; files with other names in the dir are ignored.
var configExts = []string{".conflist", ".conf", ".json"}

// ErrUnattached marks a Setup error from before any plugin ran: there is
// nothing for a DEL to free, so a failed DEL after it holds nothing either
// (errors.Is(err, ErrUnattached) on the Setup error).
var ErrUnattached = errors.New("no CNI plugin ran for the pod")

// Unattached marks err as ErrUnattached without changing its message.
func Unattached(err error) error { return unattached{err} }

type unattached struct{ error }

func (e unattached) Unwrap() error        { return e.error }
func (e unattached) Is(target error) bool { return target == ErrUnattached }

// PortMapping is a pod's hostPort, passed to plugins with the portMappings
// capability (portmap).
type PortMapping struct {
	HostPort      int32
	ContainerPort int32
	// Protocol is tcp, udp or sctp, in any case (the CRI's enum names are
	// upper case); empty means tcp.
	Protocol string
	// HostIP restricts the mapping to one host address; empty means all.
	HostIP string
}

// Bandwidth limits the pod's traffic, passed to plugins with the bandwidth
// capability. Rates are in bits per second and bursts in bits, as the
// bandwidth plugin takes them; zero means no limit in that direction.
type Bandwidth struct {
	IngressRate, IngressBurst uint64
	EgressRate, EgressBurst   uint64
}

// DNS is the pod's resolver configuration, passed to plugins with the dns
// capability.
type DNS struct {
	Servers, Searches, Options []string
}

// Pod is what CNI needs to know of a pod sandbox.
type Pod struct {
	// ID is the sandbox ID: CNI's container ID, the key of libcni's cache
	// and K8S_POD_INFRA_CONTAINER_ID.
	ID        string
	Name      string
	Namespace string
	UID       string
	// NetNSPath is the pod's pinned network namespace (cri/netns).
	NetNSPath string

	PortMappings []PortMapping
	Bandwidth    *Bandwidth // nil: no limits
	DNS          *DNS       // nil: none passed
	// IPRanges are the subnets to allocate from (ipRanges capability, for
	// host-local), such as the node's pod CIDRs from UpdateRuntimeConfig;
	// each is a range set of its own, so a pod gets an address from each.
	IPRanges []string
}

// Result is what the pod got on the main network.
type Result struct {
	// IPs are the pod's addresses on its own interfaces, IPv4 before IPv6
	// (the first is the primary IP of PodSandboxStatus), without prefix
	// length.
	IPs []string
}

// Manager runs CNI for pods. It is safe for concurrent use.
type Manager struct {
	confDir string
	binDirs []string
	log     *slog.Logger
	cni     *libcni.CNIConfig

	mu sync.Mutex
	// stamp is the fingerprint of confDir (see scan) that conf and confErr
	// were loaded from; loaded tells a first load from an empty stamp.
	loaded  bool
	stamp   string
	conf    *netConfig
	confErr error
}

// netConfig is a loaded network configuration and the file it came from,
// which error messages name.
type netConfig struct {
	file string
	list *libcni.NetworkConfigList
}

// New returns a Manager that reads network configs from confDir, finds
// plugins in binDirs, in order, and keeps libcni's cache of ADD results
// under cacheDir, which must persist across corrald restarts (not tmpfs) for
// Teardown to find what Setup did. Nothing is read until first used.
func New(confDir string, binDirs []string, cacheDir string, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		confDir: confDir,
		binDirs: slices.Clone(binDirs),
		log:     log,
		cni:     libcni.NewCNIConfigWithCacheDir(slices.Clone(binDirs), cacheDir, nil),
	}
}

// Ready reports whether pods can be networked now: a usable config and all
// its plugins present. When not, the reason says what is
// missing, for the CRI Status NetworkReady condition.
func (m *Manager) Ready() (bool, string) {
	conf, err := m.config()
	if err == nil {
		err = m.checkPlugins(conf)
	}
	if err != nil {
		return false, err.Error()
	}
	return true, ""
}

// checkPlugins makes sure every plugin conf uses is in the
// bin dirs, so a missing one shows in Ready instead of halfway through an
// ADD.
func (m *Manager) checkPlugins(conf *netConfig) error {
	for _, t := range pluginTypes(conf.list) {
		if _, err := invoke.FindInPath(t, m.binDirs); err != nil {
			return fmt.Errorf("CNI plugin %q (used by %s) not found in %s: %w", t, conf.file, strings.Join(m.binDirs, ", "), errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// Setup attaches the pod to the main network (CNI ADD) and returns its
// addresses. The pod's loopback is the namespace's business: cri/netns
// brings lo up when it makes one, which is all the loopback plugin would
// do, so corral does not run that plugin (one process less on ADD and one
// on DEL, for every pod). On error it has run DEL for what it added, so
// nothing is left but the caller's namespace; the caller may still call
// Teardown, which is then a no-op. A pod already set up must be torn down
// first.
func (m *Manager) Setup(ctx context.Context, pod Pod) (Result, error) {
	if err := pod.validate(); err != nil {
		return Result{}, Unattached(err)
	}
	conf, err := m.config()
	if err != nil {
		return Result{}, Unattached(err)
	}
	if err := m.checkPlugins(conf); err != nil {
		return Result{}, Unattached(err)
	}
	capArgs, err := pod.capabilityArgs()
	if err != nil {
		return Result{}, Unattached(err)
	}
	rt := pod.runtimeConf(podIfName, capArgs)
	res, err := m.cni.AddNetworkList(ctx, conf.list, rt)
	if err == nil {
		var r Result
		if r, err = podIPs(res); err == nil {
			m.log.Debug("pod network set up", "pod", pod.ID, "network", conf.list.Name, "ips", r.IPs)
			return r, nil
		}
	}
	// The spec asks for DEL after a failed ADD: plugins before the one
	// that failed may have allocated an IP or made a veth.
	m.undo(ctx, pod, conf.list, rt)
	return Result{}, fmt.Errorf("pod %s: network %q from %s: %w", pod.ID, conf.list.Name, conf.file, err)
}

// undo runs DEL after a failed Setup; its own failure is logged, since the
// ADD error is what the caller needs, and Teardown tries again from the
// cache (or the current config) anyway.
func (m *Manager) undo(ctx context.Context, pod Pod, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	// A fresh context: the ADD may have failed because ctx ended, and the
	// cleanup must run regardless.
	if err := m.cni.DelNetworkList(context.WithoutCancel(ctx), list, rt); err != nil {
		m.log.Warn("CNI DEL after failed ADD", "pod", pod.ID, "network", list.Name, "error", err)
	}
}

// Check runs CNI CHECK on the pod's main network, from the cached ADD. A
// network or plugin that does not support CHECK is not an error.
func (m *Manager) Check(ctx context.Context, pod Pod) error {
	if err := pod.validate(); err != nil {
		return err
	}
	atts, err := m.cni.GetCachedAttachments(pod.ID)
	if err != nil {
		return fmt.Errorf("pod %s: CNI cache: %w", pod.ID, err)
	}
	for _, a := range atts {
		if a.IfName != podIfName {
			continue
		}
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil || len(list.Plugins) == 0 {
			return fmt.Errorf("pod %s: cached config of network %q unusable (%v): %w", pod.ID, a.Network, err, errdefs.ErrDataLoss)
		}
		rt := cachedRuntimeConf(a, pod.NetNSPath)
		err = m.cni.CheckNetworkList(ctx, list, rt)
		if errors.Is(err, libcni.ErrorCheckNotSupp) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("pod %s: network %q: CNI CHECK: %w", pod.ID, a.Network, err)
		}
		return nil
	}
	return fmt.Errorf("pod %s: not set up on a network: %w", pod.ID, errdefs.ErrNotFound)
}

// Teardown detaches the pod from its networks (CNI DEL), from libcni's
// cache of the ADD when there is one, else with the current config (see
// the package doc). Calling it again, for a pod never set up, or after the
// namespace is gone, is fine.
func (m *Manager) Teardown(ctx context.Context, pod Pod) error {
	if pod.ID == "" {
		return fmt.Errorf("pod without an ID: %w", errdefs.ErrInvalidArgument)
	}
	nsPath := pod.NetNSPath
	if nsPath != "" {
		// DEL takes no namespace when it is gone; given a path that is not a
		// namespace, some plugins fail instead of cleaning up what is
		// outside it (IPs, iptables rules).
		ok, err := netns.Exists(nsPath)
		if err != nil {
			return fmt.Errorf("pod %s: %w", pod.ID, err)
		}
		if !ok {
			nsPath = ""
		}
	}
	atts, err := m.cni.GetCachedAttachments(pod.ID)
	if err != nil {
		return fmt.Errorf("pod %s: CNI cache: %w", pod.ID, err)
	}
	var errs []error
	done := map[string]bool{} // networks torn down from the cache
	// Main network(s) before the loopback of a pod set up by an older
	// corral: the reverse of its Setup.
	slices.SortStableFunc(atts, func(a, b *libcni.NetworkAttachment) int {
		return boolInt(a.Network == loopbackNetwork) - boolInt(b.Network == loopbackNetwork)
	})
	for _, a := range atts {
		list, perr := libcni.NetworkConfFromBytes(a.Config)
		if perr != nil || len(list.Plugins) == 0 {
			// A conflist whose plugins came from files beside it is cached
			// without them; the current config is the best left.
			m.log.Warn("cached CNI config unusable; using the current one", "pod", pod.ID, "network", a.Network, "error", perr)
			continue
		}
		if err := m.cni.DelNetworkList(ctx, list, cachedRuntimeConf(a, nsPath)); err != nil {
			errs = append(errs, fmt.Errorf("pod %s: network %q: CNI DEL: %w", pod.ID, a.Network, err))
			continue
		}
		done[a.Network] = true
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	// No cache entry for the main network: the pod may never have been set
	// up, or an ADD was cut short before libcni cached it; DEL with the
	// current config is what frees what such an ADD got.
	if len(done) == 0 || (len(done) == 1 && done[loopbackNetwork]) {
		conf, err := m.config()
		if err != nil {
			// Setup needs a config, so without one the pod was most likely
			// never set up; failing would only block the pod's removal.
			m.log.Info("no CNI config to tear down a pod without cached ADD; skipping", "pod", pod.ID, "reason", err)
		} else if !done[conf.list.Name] {
			// The pod's port mappings go along: portmap's DEL deletes
			// nothing without them.
			p := pod
			p.NetNSPath = nsPath
			capArgs, cerr := p.capabilityArgs()
			if cerr != nil {
				capArgs = nil
			}
			if err := m.cni.DelNetworkList(ctx, conf.list, p.runtimeConf(podIfName, capArgs)); err != nil {
				return fmt.Errorf("pod %s: network %q from %s: CNI DEL: %w", pod.ID, conf.list.Name, conf.file, err)
			}
		}
	}
	m.log.Debug("pod network torn down", "pod", pod.ID)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// cachedRuntimeConf rebuilds the RuntimeConf of a cached ADD, with nsPath
// ("" when the namespace is gone) in place of the cached one.
func cachedRuntimeConf(a *libcni.NetworkAttachment, nsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    a.ContainerID,
		NetNS:          nsPath,
		IfName:         a.IfName,
		Args:           a.CniArgs,
		CapabilityArgs: a.CapabilityArgs,
	}
}

// validate checks what every CNI call needs.
func (p Pod) validate() error {
	if p.ID == "" {
		return fmt.Errorf("pod without an ID: %w", errdefs.ErrInvalidArgument)
	}
	if p.NetNSPath == "" {
		return fmt.Errorf("pod %s: no network namespace (a host-network pod gets no CNI): %w", p.ID, errdefs.ErrInvalidArgument)
	}
	return nil
}

// runtimeConf is the RuntimeConf for the pod's interface ifName, with the
// CNI_ARGS the kubelet's runtimes pass: IgnoreUnknown first, because
// plugins that parse CNI_ARGS strictly reject keys they do not know.
func (p Pod) runtimeConf(ifName string, capArgs map[string]any) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ID,
		NetNS:       p.NetNSPath,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ID},
			{"K8S_POD_UID", p.UID},
		},
		CapabilityArgs: capArgs,
	}
}

// capabilityArgs are the runtimeConfig values for plugins that declare the
// capability, in the shapes the CNI conventions document. libcni passes
// each only to plugins that ask for it.
func (p Pod) capabilityArgs() (map[string]any, error) {
	args := map[string]any{}
	var pms []map[string]any
	for _, pm := range p.PortMappings {
		// A port without a host port is only informational in Kubernetes.
		if pm.HostPort == 0 {
			continue
		}
		proto := strings.ToLower(pm.Protocol)
		switch proto {
		case "":
			proto = "tcp"
		case "tcp", "udp", "sctp":
		default:
			return nil, fmt.Errorf("pod %s: port mapping %d: protocol %q is not tcp, udp or sctp: %w", p.ID, pm.HostPort, pm.Protocol, errdefs.ErrInvalidArgument)
		}
		if pm.HostPort < 0 || pm.HostPort > 65535 || pm.ContainerPort <= 0 || pm.ContainerPort > 65535 {
			return nil, fmt.Errorf("pod %s: port mapping %d->%d: port out of range: %w", p.ID, pm.HostPort, pm.ContainerPort, errdefs.ErrInvalidArgument)
		}
		m := map[string]any{"hostPort": pm.HostPort, "containerPort": pm.ContainerPort, "protocol": proto}
		if pm.HostIP != "" {
			if net.ParseIP(pm.HostIP) == nil {
				return nil, fmt.Errorf("pod %s: port mapping %d: host IP %q: %w", p.ID, pm.HostPort, pm.HostIP, errdefs.ErrInvalidArgument)
			}
			m["hostIP"] = pm.HostIP
		}
		pms = append(pms, m)
	}
	if len(pms) > 0 {
		args["portMappings"] = pms
	}
	if b := p.Bandwidth; b != nil {
		bw := map[string]any{}
		if b.IngressRate > 0 {
			bw["ingressRate"], bw["ingressBurst"] = b.IngressRate, b.IngressBurst
		}
		if b.EgressRate > 0 {
			bw["egressRate"], bw["egressBurst"] = b.EgressRate, b.EgressBurst
		}
		if len(bw) > 0 {
			args["bandwidth"] = bw
		}
	}
	if d := p.DNS; d != nil {
		args["dns"] = map[string]any{"servers": d.Servers, "searches": d.Searches, "options": d.Options}
	}
	var ranges [][]map[string]any
	for _, r := range p.IPRanges {
		if _, _, err := net.ParseCIDR(r); err != nil {
			return nil, fmt.Errorf("pod %s: IP range %q: %w: %w", p.ID, r, err, errdefs.ErrInvalidArgument)
		}
		ranges = append(ranges, []map[string]any{{"subnet": r}})
	}
	if len(ranges) > 0 {
		args["ipRanges"] = ranges
	}
	return args, nil
}

// podIPs picks the addresses on the pod's own interfaces out of a CNI
// result: plugins also report host-side interfaces (the bridge, the veth's
// host end), whose addresses are not the pod's.
func podIPs(res types.Result) (Result, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return Result{}, fmt.Errorf("CNI result: %w: %w", err, errdefs.ErrUnknown)
	}
	var v4, v6 []string
	for _, ip := range r.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	ips := append(v4, v6...)
	if len(ips) == 0 {
		return Result{}, fmt.Errorf("CNI result has no address for the pod: %w", errdefs.ErrUnknown)
	}
	return Result{IPs: ips}, nil
}

// config returns the current network config, reloading it when the config
// files changed since last time.
func (m *Manager) config() (*netConfig, error) {
	files, stamp, err := m.scan()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.loaded && stamp == m.stamp {
		return m.conf, m.confErr
	}
	conf, err := m.load(files)
	switch {
	case err != nil && (m.confErr == nil || m.confErr.Error() != err.Error()):
		m.log.Warn("CNI config not usable", "dir", m.confDir, "error", err)
	case err == nil && (m.conf == nil || m.conf.file != conf.file || !slices.Equal(m.conf.list.Bytes, conf.list.Bytes)):
		m.log.Info("CNI config loaded", "file", conf.file, "network", conf.list.Name, "plugins", pluginTypes(conf.list))
	}
	m.loaded, m.stamp, m.conf, m.confErr = true, stamp, conf, err
	return conf, err
}

func pluginTypes(l *libcni.NetworkConfigList) []string {
	var ts []string
	for _, p := range l.Plugins {
		ts = append(ts, p.Network.Type)
	}
	return ts
}

// scan lists the config files of confDir in lexical order and a
// fingerprint of them (names, sizes, modification times), which changes
// whenever one is written, added, removed or renamed. Polling the dir on
// use, instead of watching it, costs a readdir per call and needs no
// goroutine to stop; plugin configs in a conflist's side dir are not in
// it.
func (m *Manager) scan() ([]string, string, error) {
	ents, err := os.ReadDir(m.confDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("CNI config dir: %w", err)
	}
	var files []string
	var b strings.Builder
	for _, e := range ents {
		if !slices.Contains(configExts, filepath.Ext(e.Name())) {
			continue
		}
		p := filepath.Join(m.confDir, e.Name())
		fi, err := os.Stat(p) // follows symlinks, as config managers use them
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		files = append(files, p)
		b.WriteString(e.Name() + "\x00" + strconv.FormatInt(fi.Size(), 10) + "\x00" + strconv.FormatInt(fi.ModTime().UnixNano(), 10) + "\n")
	}
	return files, b.String(), nil
}

// load parses the first of files (see the package doc).
func (m *Manager) load(files []string) (*netConfig, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI network config (*.conflist, *.conf, *.json) in %s: %w", m.confDir, errdefs.ErrFailedPrecondition)
	}
	f := files[0]
	var list *libcni.NetworkConfigList
	var err error
	if strings.HasSuffix(f, ".conflist") {
		list, err = libcni.NetworkConfFromFile(f)
	} else {
		var c *libcni.PluginConfig
		if c, err = libcni.ConfFromFile(f); err == nil {
			list, err = libcni.ConfListFromConf(c)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("CNI config %s: %w: %w", f, err, errdefs.ErrFailedPrecondition)
	}
	if list.Name == "" {
		return nil, fmt.Errorf("CNI config %s: no network name: %w", f, errdefs.ErrFailedPrecondition)
	}
	if list.Name == loopbackNetwork {
		return nil, fmt.Errorf("CNI config %s: network name %q is reserved for loopback: %w", f, loopbackNetwork, errdefs.ErrFailedPrecondition)
	}
	return &netConfig{file: f, list: list}, nil
}
