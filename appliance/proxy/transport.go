package proxy

import (
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// TransportID is the Caddy module ID of Outpost's upstream transport;
// Build writes it into every reverse_proxy whose upstreams are services
// and whose transport is Caddy's HTTP one (or unset).
const TransportID = "http.reverse_proxy.transport.outpost"

// Transport is Caddy's HTTP transport, with the same JSON fields
// (`"protocol": "outpost"`), whose idle connections Outpost can close
// when it moves a service's traffic between containers (Divert).
//
// Why: a connection the transport dialled for a request that another,
// freed connection then served sits in the pool unused. A Go server
// being shut down gracefully counts such a connection as busy until it
// is 5 s old, so the copy an upgrade started beside, or the container it
// replaces, did not exit on SIGTERM and was killed after its whole stop
// timeout (measured in bench/upgrade: 5.2 s of an upgrade spent waiting).
// Closing the pool when traffic moves ends those connections at once;
// requests in flight keep theirs.
type Transport struct {
	reverseproxy.HTTPTransport
}

// transports are the provisioned Transports of the running config.
var transports = struct {
	mu  sync.Mutex
	set map[*Transport]struct{}
}{set: map[*Transport]struct{}{}}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  TransportID,
		New: func() caddy.Module { return new(Transport) },
	}
}

// Provision sets up Caddy's transport and registers t for Divert.
func (t *Transport) Provision(ctx caddy.Context) error {
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	transports.mu.Lock()
	transports.set[t] = struct{}{}
	transports.mu.Unlock()
	return nil
}

// Cleanup unregisters t and cleans up Caddy's transport.
func (t *Transport) Cleanup() error {
	transports.mu.Lock()
	delete(transports.set, t)
	transports.mu.Unlock()
	return t.HTTPTransport.Cleanup()
}

// closeIdleUpstreamConns closes the idle connections of every registered
// transport. New requests dial afresh; requests in flight are untouched.
func closeIdleUpstreamConns() int {
	transports.mu.Lock()
	defer transports.mu.Unlock()
	n := 0
	for t := range transports.set {
		if t.Transport != nil {
			t.Transport.CloseIdleConnections()
			n++
		}
	}
	return n
}

var (
	_ caddy.Provisioner  = (*Transport)(nil)
	_ caddy.CleanerUpper = (*Transport)(nil)
)
