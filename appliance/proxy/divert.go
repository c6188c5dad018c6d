package proxy

import (
	"maps"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
)

// diversions are the upstreams an upgrade moved to a service's second
// copy: service → container port → dial address. A diverted target is
// used whatever the service's serving state, because the upgrade has
// checked the copy's health itself and the service's own container is
// being replaced meanwhile.
var diversions = struct {
	mu  sync.Mutex // serialises writers
	set atomic.Pointer[map[string]map[uint16]string]
}{}

func init() {
	empty := map[string]map[uint16]string{}
	diversions.set.Store(&empty)
}

// Divert sends the requests for service's container ports to the given
// loopback host ports (container port → host port) from the next request
// on, without reloading Caddy; nil ports end the diversion. Requests
// already sent to the previous address finish there. Services of another
// appliance are ignored once the proxy serves one.
func (p *Proxy) Divert(appliance, service string, ports map[uint16]uint16) {
	p.mu.Lock()
	cur := p.appliance
	p.mu.Unlock()
	if cur != "" && cur != appliance {
		return
	}
	diversions.mu.Lock()
	defer diversions.mu.Unlock()
	next := maps.Clone(*diversions.set.Load())
	if len(ports) == 0 {
		delete(next, service)
	} else {
		m := map[uint16]string{}
		for cp, hp := range ports {
			m[cp] = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(hp)))
		}
		next[service] = m
	}
	diversions.set.Store(&next)
	p.log.Info("proxy upstream diverted", "appliance", appliance, "service", service, "ports", ports)
}

// diverted returns the dial address of a diverted target, if any.
func diverted(service string, port uint16) (string, bool) {
	d, ok := (*diversions.set.Load())[service][port]
	return d, ok
}
