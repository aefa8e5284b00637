package main

import (
	"fmt"
	"net"
	"os"
)

// sdNotify sends state ("READY=1", "STOPPING=1") to the service manager
// when corrald runs as a systemd Type=notify service, so that units
// ordered after corrald (the kubelet) start once the CRI answers, not
// once the process exists. Outside systemd (no NOTIFY_SOCKET) it does
// nothing. This is sd_notify(3)'s protocol: one datagram on a unix socket,
// "@" standing for the abstract namespace.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
