package runtime

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// ProxyNeeds is what the embedded proxy needs from an appliance's
// containers. The runtime applies it when it creates them; the proxy
// itself is run by the daemon.
type ProxyNeeds struct {
	// Ports lists, per service, the container ports the proxy routes to.
	// Each is published on 127.0.0.1 at a host port Outpost allocates once
	// and remembers (see ProxyPorts).
	Ports map[string][]uint16
	// Hosts are the public host names of the proxy's sites. Every service
	// resolves them to the host, so containers reach the proxy by the
	// name users use (hairpin); a service that maps a name in its own
	// extra_hosts keeps its mapping.
	Hosts []string
	// CARoot is the host path of the local CA's root certificate; when
	// set it is mounted read-only at Proxy.CAMount in the services of
	// Proxy.CAMountServices.
	CARoot string
}

// ProxyNeedsFunc computes the proxy's needs for an appliance that has a
// proxy (app.Proxy != nil).
type ProxyNeedsFunc func(ctx context.Context, app *model.Appliance) (ProxyNeeds, error)

// SetProxyNeeds installs the function the runtime asks what the proxy
// needs from containers. Without one, proxy definitions are ignored here.
func (r *Runtime) SetProxyNeeds(f ProxyNeedsFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.proxyNeeds = f
}

func (r *Runtime) needs(ctx context.Context, app *model.Appliance) (ProxyNeeds, error) {
	r.mu.Lock()
	f := r.proxyNeeds
	r.mu.Unlock()
	if f == nil || app.Proxy == nil {
		return ProxyNeeds{}, nil
	}
	n, err := f(ctx, app)
	if err != nil {
		return n, fmt.Errorf("reading what the proxy needs from the containers: %w", err)
	}
	return n, nil
}

// Host ports for the proxy's upstreams are allocated in this range: below
// Linux's ephemeral ports (32768+), so outgoing connections never hold
// them.
const (
	proxyPortMin = 20000
	proxyPortMax = 29999
)

// ProxyPorts returns, for every container port the proxy routes to, the
// loopback host port it is published on: a fixed port the service already
// publishes on loopback or all addresses, else a port allocated in the
// store (once; later calls return the same one). service → container
// port → host port.
func (r *Runtime) ProxyPorts(ctx context.Context, app *model.Appliance) (map[string]map[uint16]uint16, error) {
	n, err := r.needs(ctx, app)
	if err != nil {
		return nil, err
	}
	return r.proxyPorts(ctx, app, n)
}

func (r *Runtime) proxyPorts(ctx context.Context, app *model.Appliance, n ProxyNeeds) (map[string]map[uint16]uint16, error) {
	out := map[string]map[uint16]uint16{}
	for _, svcName := range sortedKeys(n.Ports) {
		svc, ok := app.Services[svcName]
		if !ok {
			return nil, fmt.Errorf("the proxy routes to service %q, which the appliance does not run", svcName)
		}
		out[svcName] = map[uint16]uint16{}
		for _, cp := range n.Ports[svcName] {
			if hp := fixedLoopbackPort(svc, cp); hp != 0 {
				out[svcName][cp] = hp
				continue
			}
			hp, err := r.st.AllocatePort(ctx, app.Name, svcName, cp, "tcp", pickProxyPort)
			if err != nil {
				return nil, fmt.Errorf("publishing %s:%d for the proxy: %w", svcName, cp, err)
			}
			out[svcName][cp] = hp
		}
	}
	return out, nil
}

// fixedLoopbackPort returns the host port a service already publishes
// container port cp on, when the proxy can dial it on 127.0.0.1.
func fixedLoopbackPort(svc *model.Service, cp uint16) uint16 {
	for _, p := range svc.Ports {
		if p.ContainerPort != cp || p.HostPort == 0 || (p.Protocol != "" && p.Protocol != "tcp") {
			continue
		}
		switch p.HostIP {
		case "", "0.0.0.0", "127.0.0.1":
			return p.HostPort
		}
	}
	return 0
}

// pickProxyPort picks a port in the proxy range that no allocation holds
// and nothing listens on now, starting at a random place.
func pickProxyPort(taken map[uint16]bool) (uint16, error) {
	span := proxyPortMax - proxyPortMin + 1
	start := rand.IntN(span)
	for i := 0; i < span; i++ {
		p := uint16(proxyPortMin + (start+i)%span)
		if taken[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(p))))
		if err != nil {
			continue
		}
		_ = l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d on 127.0.0.1", proxyPortMin, proxyPortMax)
}

// applyProxyNeeds adds to a service's container spec what the proxy
// needs: its upstream ports published on loopback, the sites' host names
// resolving to the host, and the CA root mount. They are part of the
// config hash, so a container is recreated when they change.
func (r *Runtime) applyProxyNeeds(ctx context.Context, app *model.Appliance, svc *model.Service, spec *engine.ContainerSpec) error {
	n, err := r.needs(ctx, app)
	if err != nil || app.Proxy == nil {
		return err
	}
	if len(n.Ports[svc.Name]) > 0 {
		ports, err := r.proxyPorts(ctx, app, ProxyNeeds{Ports: map[string][]uint16{svc.Name: n.Ports[svc.Name]}})
		if err != nil {
			return err
		}
		for _, cp := range n.Ports[svc.Name] {
			if fixedLoopbackPort(svc, cp) != 0 {
				continue
			}
			spec.Ports = append(spec.Ports, engine.PortSpec{HostIP: "127.0.0.1", HostPort: ports[svc.Name][cp], ContainerPort: cp, Protocol: "tcp"})
		}
	}
	if len(n.Hosts) > 0 {
		mapped := map[string]bool{}
		for _, h := range spec.ExtraHosts {
			name, _, _ := strings.Cut(h, ":")
			mapped[strings.ToLower(name)] = true
		}
		hosts := slices.Clone(spec.ExtraHosts)
		for _, h := range n.Hosts {
			if !mapped[strings.ToLower(h)] {
				hosts = append(hosts, h+":host-gateway")
			}
		}
		spec.ExtraHosts = hosts
	}
	if n.CARoot != "" && app.Proxy.CAMount != "" && slices.Contains(app.Proxy.CAMountServices, svc.Name) {
		for _, m := range spec.Mounts {
			if m.Target == app.Proxy.CAMount {
				return fmt.Errorf("services.%s: x-outpost.proxy.ca_mount %s is also a volume target of the service; choose another ca_mount", svc.Name, app.Proxy.CAMount)
			}
		}
		spec.Mounts = append(spec.Mounts, engine.MountSpec{Type: string(model.MountBind), Source: n.CARoot, Target: app.Proxy.CAMount, ReadOnly: true})
	}
	return nil
}

// Serving reports which services of the appliance this process knows to
// be serving (running and healthy, or running without a health check).
func (r *Runtime) Serving(appliance string) map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for name, s := range r.status[appliance] {
		out[name] = s.Serving()
	}
	return out
}
