package server

import (
	"testing"

	"github.com/containerd/errdefs"
)

func TestPendingSet(t *testing.T) {
	var p pendingSet
	s := &Server{}
	release := p.hold("a")
	p.hold("b")
	if !p.has("a") || !p.has("b") || p.has("c") {
		t.Fatal("held IDs not pending")
	}
	release()
	p.release("b")
	p.release("b") // idempotent
	if p.has("a") || p.has("b") {
		t.Error("released IDs still pending")
	}
	s.pending.hold("x")
	if err := s.notFoundIfPending("x"); !errdefs.IsNotFound(err) {
		t.Errorf("a pending ID answers %v, want NotFound", err)
	}
	if err := s.notFoundIfPending("y"); err != nil {
		t.Errorf("a shown ID answers %v", err)
	}
}
