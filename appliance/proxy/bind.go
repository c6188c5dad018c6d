package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// capNetBindService is CAP_NET_BIND_SERVICE's bit in the capability sets.
const capNetBindService = 10

// ErrPrivilegedPort is returned (wrapped) when the proxy must listen on a
// port below the host's unprivileged port start without the capability
// to.
var ErrPrivilegedPort = errors.New("binding a privileged port needs CAP_NET_BIND_SERVICE")

// bindEnv is what checkBind reads from the host; a variable for tests.
var bindEnv = hostBindEnv

// hostBindEnv returns the lowest port an unprivileged process may bind
// and whether this process may bind below it.
func hostBindEnv() (start int, capable bool) {
	start = 1024
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			start = n
		}
	}
	if os.Geteuid() == 0 {
		return start, true
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return start, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return start, err == nil && caps&(1<<capNetBindService) != 0
		}
	}
	return start, false
}

// checkBind fails, before Caddy tries, when a listen address needs a
// privileged port this process cannot bind, and says how to fix it.
func checkBind(listen []string) error {
	start, capable := bindEnv()
	if capable {
		return nil
	}
	var low []string
	for _, l := range listen {
		if p, err := strconv.Atoi(listenPort(l)); err == nil && p > 0 && p < start {
			low = append(low, l)
		}
	}
	if len(low) == 0 {
		return nil
	}
	return fmt.Errorf("the embedded proxy must listen on %s, but ports below %d need the CAP_NET_BIND_SERVICE capability, which this process (uid %d) does not have: %w.\n"+
		"Fix it in one of these ways:\n"+
		"  - run Outpost as its installed system service (`outpost install`): its unit grants AmbientCapabilities=CAP_NET_BIND_SERVICE\n"+
		"  - grant the binary the capability: sudo setcap cap_net_bind_service=+ep %s\n"+
		"  - serve the sites on ports from %d up (e.g. https://app.internal:8443 in x-outpost.proxy.sites or the Caddyfile); a site on 443 also needs :80 for HTTP→HTTPS redirects",
		strings.Join(low, ", "), start, os.Geteuid(), ErrPrivilegedPort, executable(), start)
}

// explainLoadError adds what to do to the listen failures Caddy reports.
func explainLoadError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, syscall.EACCES) || (strings.Contains(msg, "bind") && strings.Contains(msg, "permission denied")):
		return fmt.Errorf("starting the embedded proxy: %w; ports below 1024 need CAP_NET_BIND_SERVICE: run Outpost as its installed service, or `sudo setcap cap_net_bind_service=+ep %s`, or use ports from 1024 up", err, executable())
	case errors.Is(err, syscall.EADDRINUSE) || strings.Contains(msg, "address already in use"):
		return fmt.Errorf("starting the embedded proxy: %w; another process holds the port: stop it, or change the site address or health_listen", err)
	}
	return fmt.Errorf("starting the embedded proxy: %w", err)
}

func executable() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "$(command -v outpost)"
}
