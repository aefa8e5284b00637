package chaos

import (
	"fmt"
	"math/rand/v2"
	"syscall"
)

// fault is one kind of trouble the chaos injects. inject starts it and
// says what it hit; the round's restore ends every fault.
type fault struct {
	name   string
	inject func(e *env, m *model, rng *rand.Rand) string
}

var faults = []fault{
	{"kill-corrald", func(e *env, m *model, rng *rand.Rand) string {
		if !e.running() {
			return "corrald already down"
		}
		e.kill()
		return "corrald killed"
	}},
	{"kill-shim", func(e *env, m *model, rng *rand.Rand) string {
		shims := shimProcs(e.state)
		if len(shims) == 0 {
			return "no shim to kill"
		}
		s := pick(rng, shims)
		m.mu.Lock()
		if p := m.pods[s.id]; p != nil {
			p.shimKilled = true
		}
		m.mu.Unlock()
		syscall.Kill(s.pid, syscall.SIGKILL)
		return fmt.Sprintf("shim %d of pod %.12s killed", s.pid, s.id)
	}},
	{"kill-container", func(e *env, m *model, rng *rand.Rand) string {
		m.mu.Lock()
		defer m.mu.Unlock()
		running := runcContainers(e.state)
		var victims []*ctrModel
		for _, ct := range m.ctrs {
			if st, ok := running[ct.id]; ok && st.running {
				victims = append(victims, ct)
			}
		}
		if len(victims) == 0 {
			return "no running container to kill"
		}
		ct := pick(rng, victims)
		ct.killed = true
		syscall.Kill(running[ct.id].pid, syscall.SIGKILL)
		return fmt.Sprintf("process %d of container %.12s killed", running[ct.id].pid, ct.id)
	}},
	{"cni-fail", func(e *env, m *model, rng *rand.Rand) string {
		e.setCNIFault("fail")
		return "the bridge plugin fails"
	}},
	{"cni-hang", func(e *env, m *model, rng *rand.Rand) string {
		e.setCNIFault("hang")
		return "the bridge plugin hangs"
	}},
	{"registry-drop", func(e *env, m *model, rng *rand.Rand) string {
		e.proxy.drop.Store(true)
		return "the registry cuts every download short"
	}},
	{"disk-full", func(e *env, m *model, rng *rand.Rand) string {
		e.fillDisk(true)
		return "--root is full"
	}},
}

// restore ends every fault and restarts what was killed.
func (e *env) restore() error {
	e.setCNIFault("")
	e.proxy.drop.Store(false)
	e.fillDisk(false)
	if !e.running() {
		return e.start()
	}
	return nil
}
