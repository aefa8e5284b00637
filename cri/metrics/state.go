package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// State answers, at scrape time, how many pods, containers and shims there
// are. It reads the record of truth (the metadata store, the open shim
// connections) rather than counters kept beside it, which could drift.
type State struct {
	// Pods counts pods by state (ready, notready).
	Pods func() (map[string]int, error)
	// Containers counts containers by state (created, running, exited,
	// unknown).
	Containers func() (map[string]int, error)
	// Shims counts the pod shims corrald holds a live connection to.
	Shims func() int
	// PodStates and ContainerStates are every state there is, reported
	// as 0 when no pod or container is in it, so a series does not vanish
	// when its count drops to zero.
	PodStates, ContainerStates []string
}

var (
	podsDesc = prometheus.NewDesc(namespace+"_pods", "Pod sandboxes on the node, by state (ready, notready), read from corrald's store at scrape time.",
		[]string{"state"}, nil)
	containersDesc = prometheus.NewDesc(namespace+"_containers", "Containers on the node, by state (created, running, exited, unknown), read from corrald's store at scrape time.",
		[]string{"state"}, nil)
	shimsDesc = prometheus.NewDesc(namespace+"_shims", "Pod shims corrald is connected to and that are alive.",
		nil, nil)
)

// RegisterState adds the pod, container and shim counts that st reads.
// It may be called once per Metrics.
func (m *Metrics) RegisterState(st State) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(stateCollector{st})
}

type stateCollector struct{ st State }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- podsDesc
	ch <- containersDesc
	ch <- shimsDesc
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	byState(ch, podsDesc, c.st.Pods, c.st.PodStates)
	byState(ch, containersDesc, c.st.Containers, c.st.ContainerStates)
	if c.st.Shims != nil {
		ch <- prometheus.MustNewConstMetric(shimsDesc, prometheus.GaugeValue, float64(c.st.Shims()))
	}
}

func byState(ch chan<- prometheus.Metric, desc *prometheus.Desc, count func() (map[string]int, error), states []string) {
	if count == nil {
		return
	}
	n, err := count()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(desc, err)
		return
	}
	seen := map[string]bool{}
	for _, s := range states {
		seen[s] = true
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n[s]), s)
	}
	for s, v := range n {
		if !seen[s] {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(v), s)
		}
	}
}
