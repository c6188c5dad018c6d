package proxy

import (
	"maps"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// UpstreamSourceID is the Caddy module ID of Outpost's dynamic upstream
// source; Build writes it into every reverse_proxy that names a service.
const UpstreamSourceID = "http.reverse_proxy.upstreams.outpost"

// Upstreams is a Caddy dynamic upstream source (module
// http.reverse_proxy.upstreams.outpost) that yields only the targets whose
// service the runtime currently reports serving (running and healthy, or
// running without a health check). Health changes move traffic without a
// config reload: Caddy asks the source on every request and every retry,
// so a request that finds no serving target waits, within the handler's
// lb_try_duration, for one to come back, and otherwise fails with 503 (the
// maintenance page).
type Upstreams struct {
	// Upstreams are the candidate targets, in the order written.
	Upstreams []UpstreamTarget `json:"upstreams,omitempty"`
}

// UpstreamTarget is one candidate of an Upstreams source.
type UpstreamTarget struct {
	// Service is the Compose service whose health gates the target; empty
	// for an address that is not a service of the appliance (always used).
	Service string `json:"service,omitempty"`
	// Port is the service's container port.
	Port uint16 `json:"port,omitempty"`
	// Dial is the address Caddy connects to: the loopback host port
	// Outpost publishes the container port on.
	Dial string `json:"dial"`
}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  UpstreamSourceID,
		New: func() caddy.Module { return new(Upstreams) },
	}
}

// GetUpstreams returns the targets whose service is serving now. It runs
// on every proxied request: one atomic load and a map lookup per target.
func (u *Upstreams) GetUpstreams(*http.Request) ([]*reverseproxy.Upstream, error) {
	set := *serving.set.Load()
	out := make([]*reverseproxy.Upstream, 0, len(u.Upstreams))
	for _, t := range u.Upstreams {
		if dial, ok := diverted(t.Service, t.Port); ok && t.Service != "" {
			out = append(out, &reverseproxy.Upstream{Dial: dial})
			continue
		}
		if t.Service == "" || set[t.Service] {
			// A fresh Upstream each time: Caddy writes into the ones a
			// source returns, so sharing them between requests would race.
			out = append(out, &reverseproxy.Upstream{Dial: t.Dial})
		}
	}
	return out, nil
}

var _ reverseproxy.UpstreamSource = (*Upstreams)(nil)

// registry is the process-wide set of serving services the Upstreams
// source reads. It is global because Caddy instantiates modules from JSON;
// Caddy's own state is process-global too (one proxy per process).
type registry struct {
	mu  sync.Mutex // serialises writers; readers only load set
	set atomic.Pointer[map[string]bool]
}

var serving = newRegistry()

func newRegistry() *registry {
	r := &registry{}
	empty := map[string]bool{}
	r.set.Store(&empty)
	return r
}

// put records whether service is serving (copy on write: requests never
// take a lock).
func (r *registry) put(service string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.set.Load()
	if cur[service] == ok {
		return
	}
	next := maps.Clone(cur)
	if ok {
		next[service] = true
	} else {
		delete(next, service)
	}
	r.set.Store(&next)
}

// reset replaces the whole set.
func (r *registry) reset(services map[string]bool) {
	next := map[string]bool{}
	for s, ok := range services {
		if ok {
			next[s] = true
		}
	}
	r.mu.Lock()
	r.set.Store(&next)
	r.mu.Unlock()
}

// get reports whether service is serving.
func (r *registry) get(service string) bool {
	return (*r.set.Load())[service]
}
