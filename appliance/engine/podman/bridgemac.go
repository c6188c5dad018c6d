package podman

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/network"
)

// Pinning the bridge's MAC address.
//
// A Linux bridge without an explicitly set address takes the lowest MAC
// of its ports, so its address changes whenever a container whose host-side
// veth has a lower MAC joins or leaves. Containers that resolved the
// gateway's address before the change keep sending to the old one; when
// they also keep receiving from the gateway (a published port reached
// through the rootless network namespace is masqueraded to the gateway
// address, and each reply confirms the stale ARP entry), the entry never
// expires and everything they send through the gateway is lost — name
// lookups to aardvark-dns included. Measured on Debian 12 (Podman 4.3.1,
// netavark 1.4.0): the demo appliance's api, whose port the embedded proxy
// reaches, could no longer resolve "store" once web and worker had started,
// in about one `up` in three, and stayed so for minutes. netavark 1.9
// fixed this by setting the bridge's address explicitly
// (containers/netavark#833); for older netavark the engine does the same
// after each container start: it sets every bridge the container is on to
// the address it has, which makes the kernel stop changing it.

// minFixedNetavark is the first netavark that pins bridge addresses itself.
var minFixedNetavark = semver{major: 1, minor: 9}

// needsBridgePin decides at Connect whether the engine pins bridges: a local
// service (the bridges are in this host's namespaces) on netavark older
// than 1.9. Podman before 4.4 does not report netavark's version; it is
// then read from the binary beside Podman's, or assumed old.
func needsBridgePin(uri, backend, version string, helperVersion func() string) bool {
	if backend != "netavark" || !strings.HasPrefix(uri, "unix://") {
		return false
	}
	if version == "" && helperVersion != nil {
		version = helperVersion()
	}
	v, err := parseVersion(version)
	if err != nil {
		return true
	}
	return !v.atLeast(minFixedNetavark.major, minFixedNetavark.minor)
}

// netavarkVersion runs the netavark binary Podman uses and returns its
// version line, or "".
func netavarkVersion() string {
	for _, p := range []string{"/usr/libexec/podman/netavark", "/usr/lib/podman/netavark", "/usr/local/libexec/podman/netavark", "/usr/local/lib/podman/netavark"} {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := exec.CommandContext(ctx, p, "--version").Output()
		cancel()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
	}
	return ""
}

// bridgeNameRe is what a Linux interface name may hold; anything else from
// Podman's answer is refused before it reaches a command line.
var bridgeNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// pinBridges sets the MAC address of every bridge network the container id
// is on to its current value. Failures are logged: the container runs, and
// on most hosts nothing goes wrong without the pin.
func (e *Engine) pinBridges(ctx context.Context, id string) {
	data, err := containers.Inspect(e.callCtx(ctx), id, nil)
	if err != nil || data.NetworkSettings == nil {
		return
	}
	var bridges []string
	for name := range data.NetworkSettings.Networks {
		rep, err := network.Inspect(e.callCtx(ctx), name, nil)
		if err != nil || rep.Driver != "bridge" || !bridgeNameRe.MatchString(rep.NetworkInterface) {
			continue
		}
		bridges = append(bridges, rep.NetworkInterface)
	}
	if len(bridges) == 0 {
		return
	}
	// `ip link set dev BR address X` with X the bridge's own address
	// marks the address as set by the administrator; the kernel then
	// never recomputes it from the ports.
	var script strings.Builder
	for _, br := range bridges {
		fmt.Fprintf(&script, "mac=$(ip -br link show dev %[1]s | awk '{print $3}') && [ -n \"$mac\" ] && ip link set dev %[1]s address \"$mac\" || rc=1\n", br)
	}
	script.WriteString("exit ${rc:-0}\n")
	argv := []string{"sh", "-c", "rc=0\n" + script.String()}
	if e.rootless {
		// The bridges live in Podman's rootless network namespace.
		podman, err := exec.LookPath("podman")
		if err != nil {
			e.logger.Debug("pinning bridge addresses: podman not on PATH", "error", err)
			return
		}
		argv = append([]string{podman, "unshare", "--rootless-netns"}, argv...)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	// Run from / so a working directory the user cannot enter after the
	// namespace switch does not matter.
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		e.logger.Warn("could not pin the bridge's MAC address; containers may lose their gateway when others start (netavark before 1.9)",
			"bridges", strings.Join(bridges, ","), "error", err, "output", strings.TrimSpace(string(out)))
	}
}
