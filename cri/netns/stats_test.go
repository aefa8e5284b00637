package netns

import (
	"os"
	"strings"
	"testing"
)

const netDev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0
  eth0: 98765432   65000    1    2    0     0          0         3 12345678   43210    4    5    0     0       0          0
`

func TestParseNetDev(t *testing.T) {
	got, err := ParseNetDev(strings.NewReader(netDev))
	if err != nil {
		t.Fatal(err)
	}
	want := []Interface{
		{Name: "lo", RxBytes: 1234, RxPackets: 10, TxBytes: 1234, TxPackets: 10},
		{Name: "eth0", RxBytes: 98765432, RxPackets: 65000, RxErrors: 1, RxDropped: 2, TxBytes: 12345678, TxPackets: 43210, TxErrors: 4, TxDropped: 5},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("interface %d: %+v, want %+v", i, got[i], want[i])
		}
	}

	header := strings.Join(strings.SplitN(netDev, "\n", 3)[:2], "\n") + "\n"
	for _, bad := range []string{
		header + "eth0 1 2 3\n",
		header + "eth0: 1 2 3\n",
		header + ": 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
		header + "eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n",
		header + "eth0: -1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n",
	} {
		if got, err := ParseNetDev(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed as %+v", bad, got)
		}
	}
	if got, err := ParseNetDev(strings.NewReader(header)); err != nil || len(got) != 0 {
		t.Errorf("no interfaces: %+v, %v", got, err)
	}
}

func TestInterfacesOfSelf(t *testing.T) {
	ifs, err := Interfaces(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, i := range ifs {
		found = found || i.Name == "lo"
	}
	if !found {
		t.Errorf("no lo among %+v", ifs)
	}
	if _, err := Interfaces(0); err == nil {
		t.Error("pid 0 read")
	}
}

func FuzzParseNetDev(f *testing.F) {
	f.Add(netDev)
	f.Fuzz(func(t *testing.T, s string) {
		ParseNetDev(strings.NewReader(s))
	})
}
