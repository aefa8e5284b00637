package metadata

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func testContainer(id, sandboxID, name string) Container {
	return Container{
		ID:        id,
		SandboxID: sandboxID,
		Name:      name,
		Config:    []byte{0x12, 0x03, 'a', 'p', 'p'},
		ImageRef:  "docker.io/library/busybox:1",
		ImageID:   "sha256:abcd",
		State:     ContainerCreated,
		CreatedAt: time.Unix(1700000000, 1),
		LogPath:   "/var/log/pods/x/" + name + "/0.log",
		Bundle:    "/run/corral/bundles/" + id,
	}
}

// newStoreWithSandboxes returns a store holding sandboxes "sb1" and "sb2".
func newStoreWithSandboxes(t *testing.T) *Store {
	t.Helper()
	s, _ := newStore(t)
	for _, id := range []string{"sb1", "sb2"} {
		if err := s.CreateSandbox(testSandbox(id, "pod-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestContainerCreate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup []Container
		c     Container
		check func(error) bool
	}{
		{"ok", nil, testContainer("c1", "sb1", "app"), nil},
		{"same ID", []Container{testContainer("c1", "sb1", "other")}, testContainer("c1", "sb1", "app"), errdefs.IsAlreadyExists},
		{"same name in sandbox", []Container{testContainer("c1", "sb1", "app")}, testContainer("c2", "sb1", "app"), errdefs.IsAlreadyExists},
		{"same name other sandbox", []Container{testContainer("c1", "sb1", "app")}, testContainer("c2", "sb2", "app"), nil},
		{"next attempt", []Container{testContainer("c1", "sb1", "app")},
			func() Container { c := testContainer("c2", "sb1", "app"); c.Attempt = 1; return c }(), nil},
		{"no sandbox", nil, testContainer("c1", "gone", "app"), errdefs.IsNotFound},
		{"bad sandbox ID", nil, testContainer("c1", "", "app"), errdefs.IsInvalidArgument},
		{"bad ID", nil, testContainer("c/1", "sb1", "app"), errdefs.IsInvalidArgument},
		{"bad state", nil, func() Container { c := testContainer("c1", "sb1", "app"); c.State = "paused"; return c }(), errdefs.IsInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStoreWithSandboxes(t)
			for _, c := range tc.setup {
				if err := s.CreateContainer(c); err != nil {
					t.Fatal(err)
				}
			}
			err := s.CreateContainer(tc.c)
			if tc.check == nil {
				if err != nil {
					t.Fatal(err)
				}
				got, err := s.GetContainer(tc.c.ID)
				if err != nil {
					t.Fatal(err)
				}
				sameJSON(t, got, tc.c)
				return
			}
			if !tc.check(err) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestContainerUpdate(t *testing.T) {
	errFn := errors.New("fn failed")
	exit := time.Unix(1700000100, 999)
	for _, tc := range []struct {
		name  string
		fn    func(*Container) error
		check func(error) bool
		want  func(*Container)
	}{
		{"exit", func(c *Container) error {
			c.State, c.ExitCode, c.Reason, c.FinishedAt = ContainerExited, 1, "Error", exit
			return nil
		}, nil, func(c *Container) { c.State, c.ExitCode, c.Reason, c.FinishedAt = ContainerExited, 1, "Error", exit }},
		{"fn error writes nothing", func(c *Container) error {
			c.State = ContainerRunning
			return errFn
		}, func(err error) bool { return errors.Is(err, errFn) }, nil},
		{"move sandbox", func(c *Container) error { c.SandboxID = "sb2"; return nil }, errdefs.IsInvalidArgument, nil},
		{"rename", func(c *Container) error { c.Name = "x"; return nil }, errdefs.IsInvalidArgument, nil},
		{"ID change", func(c *Container) error { c.ID = "c2"; return nil }, errdefs.IsInvalidArgument, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStoreWithSandboxes(t)
			orig := testContainer("c1", "sb1", "app")
			if err := s.CreateContainer(orig); err != nil {
				t.Fatal(err)
			}
			got, err := s.UpdateContainer("c1", tc.fn)
			stored, gerr := s.GetContainer("c1")
			if gerr != nil {
				t.Fatal(gerr)
			}
			if tc.check != nil {
				if !tc.check(err) {
					t.Fatalf("got %v", err)
				}
				sameJSON(t, stored, orig)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := orig
			tc.want(&want)
			sameJSON(t, got, want)
			sameJSON(t, stored, want)
			if !stored.FinishedAt.Equal(exit) {
				t.Errorf("FinishedAt %v, want %v", stored.FinishedAt, exit)
			}
		})
	}
}

func TestContainerDeleteAndList(t *testing.T) {
	s := newStoreWithSandboxes(t)
	for _, c := range []Container{
		testContainer("c1", "sb1", "app"),
		testContainer("c2", "sb1", "sidecar"),
		testContainer("c3", "sb2", "app"),
	} {
		if err := s.CreateContainer(c); err != nil {
			t.Fatal(err)
		}
	}
	inSB1, err := s.ListContainers(func(c Container) bool { return c.SandboxID == "sb1" })
	if err != nil {
		t.Fatal(err)
	}
	if len(inSB1) != 2 || inSB1[0].ID != "c1" || inSB1[1].ID != "c2" {
		t.Errorf("containers of sb1: %+v", inSB1)
	}
	if err := s.DeleteContainer("c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteContainer("c1"); !errdefs.IsNotFound(err) {
		t.Errorf("second delete: %v, want NotFound", err)
	}
	if _, err := s.GetContainer("c1"); !errdefs.IsNotFound(err) {
		t.Errorf("get after delete: %v, want NotFound", err)
	}
	// The name is free again for a new attempt-0 container.
	if err := s.CreateContainer(testContainer("c4", "sb1", "app")); err != nil {
		t.Errorf("name not freed: %v", err)
	}
	all, err := s.ListContainers(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Errorf("%d containers, want 3", len(all))
	}
}

func TestContainerNameRace(t *testing.T) {
	s := newStoreWithSandboxes(t)
	const n = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range n {
		wg.Go(func() {
			err := s.CreateContainer(testContainer(fmt.Sprintf("c%02d", i), "sb1", "app"))
			if err != nil && !errdefs.IsAlreadyExists(err) {
				t.Errorf("loser got %v", err)
			}
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d winners, want 1", wins)
	}
}

// CreateContainer racing with the sandbox's removal: either the container
// is refused or the removal is, never a container without its sandbox.
func TestContainerVersusSandboxRemoval(t *testing.T) {
	for i := range 20 {
		s := newStoreWithSandboxes(t)
		var wg sync.WaitGroup
		var cErr, sErr error
		wg.Go(func() { cErr = s.CreateContainer(testContainer("c1", "sb1", "app")) })
		wg.Go(func() { sErr = s.DeleteSandbox("sb1") })
		wg.Wait()
		if (cErr == nil) == (sErr == nil) {
			t.Fatalf("round %d: create %v, delete %v: want exactly one to succeed", i, cErr, sErr)
		}
		if cErr != nil && !errdefs.IsNotFound(cErr) || sErr != nil && !errdefs.IsFailedPrecondition(sErr) {
			t.Fatalf("round %d: create %v, delete %v", i, cErr, sErr)
		}
	}
}

// Fifty updates of one record at once, each a read-modify-write: none lost.
func TestContainerNoLostUpdate(t *testing.T) {
	s := newStoreWithSandboxes(t)
	if err := s.CreateContainer(testContainer("c1", "sb1", "app")); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := s.UpdateContainer("c1", func(c *Container) error {
				c.ExitCode++
				return nil
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	c, err := s.GetContainer("c1")
	if err != nil {
		t.Fatal(err)
	}
	if c.ExitCode != n {
		t.Errorf("counter %d after %d increments", c.ExitCode, n)
	}
}

func TestContainerErrorsNameTheRecord(t *testing.T) {
	s := newStoreWithSandboxes(t)
	err := s.CreateContainer(testContainer("c1", "gone", "app"))
	if err == nil || !strings.Contains(err.Error(), `"gone"`) {
		t.Errorf("got %v, want the missing sandbox named", err)
	}
}

// An update that leaves the record as stored returns it without a commit
// (no write, no fdatasync); one that changes it commits.
func TestUpdateUnchangedDoesNotCommit(t *testing.T) {
	s := newStoreWithSandboxes(t)
	if err := s.CreateContainer(testContainer("c1", "sb1", "app")); err != nil {
		t.Fatal(err)
	}
	exit := func(c *Container) error {
		c.State, c.ExitCode, c.Reason = ContainerExited, 137, "Error"
		return nil
	}
	writes := func() int64 { st := s.db.Stats(); return st.TxStats.GetWrite() }

	before := writes()
	first, err := s.UpdateContainer("c1", exit)
	if err != nil {
		t.Fatal(err)
	}
	if writes() == before {
		t.Fatal("a changing update wrote nothing")
	}
	before = writes()
	again, err := s.UpdateContainer("c1", exit)
	if err != nil {
		t.Fatalf("unchanged update: %v", err)
	}
	if n := writes() - before; n != 0 {
		t.Errorf("an unchanged update wrote %d times", n)
	}
	sameJSON(t, again, first)
	stored, err := s.GetContainer("c1")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, stored, first)

	// Sandboxes share the code.
	if _, err := s.UpdateSandbox("sb1", func(sb *Sandbox) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := writes() - before; n != 0 {
		t.Errorf("an unchanged sandbox update wrote %d times", n)
	}
}
