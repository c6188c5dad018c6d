package podman

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// hostGatewayIP returns the address "host-gateway" resolves to for rootless
// containers on Podman before 4.7: the host's primary IPv4 address (the
// source address of its default route).
//
// Why that address: rootless containers on a bridge network live in
// Podman's rootless network namespace, which reaches the outside through
// slirp4netns with host loopback disabled. 127.0.0.1 is therefore the
// namespace's own loopback, not the host's, and the bridge gateway is inside
// the namespace too. A connection to the host's own external address leaves
// through slirp4netns and arrives on the host, so services listening on that
// address or on 0.0.0.0 are reachable; services bound only to 127.0.0.1 are
// not. Podman 4.3 rejects the token; from 4.7 on Podman resolves it to its
// own host.containers.internal address (which also handles pasta's address
// mapping in Podman 5), and Outpost passes it through.
func hostGatewayIP() (string, error) {
	// A UDP "connection" sends nothing; it only asks the kernel which
	// source address the default route would use.
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		addr := c.LocalAddr().(*net.UDPAddr).IP
		_ = c.Close()
		if addr != nil && !addr.IsLoopback() && !addr.IsUnspecified() {
			return addr.String(), nil
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("listing network interfaces: %w", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || virtualInterface(ifc.Name) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip4 := ipn.IP.To4(); ip4 != nil && ip4.IsGlobalUnicast() {
				return ip4.String(), nil
			}
		}
	}
	return "", errors.New("the host has no non-loopback IPv4 address for containers to reach it by")
}

// virtualInterface reports interfaces of container engines and VMs, whose
// addresses are not the host's own.
func virtualInterface(name string) bool {
	for _, p := range []string{"podman", "cni-", "veth", "docker", "br-", "virbr", "lxcbr", "tap", "tun"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
