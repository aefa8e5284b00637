package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestSystemdUnit checks the settings that let a restart of the unit leave
// pods running and keep the daemon alive under memory pressure; the
// integration tests run systemd-analyze verify on it as installed.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("corrald.service")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			set[k] = v
		}
	}
	for k, want := range map[string]string{
		"Type":        "notify",
		"KillMode":    "process",
		"Delegate":    "yes",
		"Restart":     "always",
		"LimitNOFILE": "1048576",
		"TasksMax":    "infinity",
		"ExecStart":   "/usr/local/bin/corrald --config /etc/corral/config.toml",
		"WantedBy":    "multi-user.target",
	} {
		if set[k] != want {
			t.Errorf("%s=%q, want %q", k, set[k], want)
		}
	}
	if n, err := strconv.Atoi(set["OOMScoreAdjust"]); err != nil || n > -500 {
		t.Errorf("OOMScoreAdjust=%q: the daemon must be among the last the OOM killer picks", set["OOMScoreAdjust"])
	}
}
