package demo

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Calls between the demo's containers find their peer by name through the
// network's DNS server. On Podman with aardvark-dns before 1.11 (Debian 12
// ships 1.4) that server closes and reopens its sockets whenever a
// container joins or leaves the network, so a query sent in those few
// milliseconds is refused or lost (docs/architecture.md, "Working around
// the Podman of Debian 12"). Upgrades start and remove
// containers while the others serve, so the demo retries a lookup that
// failed that way, as a vendor's service should.
//
// "No such host" is retried too: the containers' resolv.conf lists the
// host's nameservers after aardvark-dns, so a query aardvark-dns refused
// goes on to the host's resolver, which does not know the peer.
const (
	// peerLookupAttempts bounds the dials tried when the lookup fails.
	peerLookupAttempts = 4
	// peerAttemptTimeout bounds one dial, lookup included: a query the
	// server lost is asked again after this, not after the resolver's 5 s.
	peerAttemptTimeout = 700 * time.Millisecond
	// peerRetryDelay is the pause before the second dial; it doubles.
	peerRetryDelay = 20 * time.Millisecond
)

// peerDialer dials a peer container, asking the name again when the
// lookup failed (refused, timed out, server failure, or not found by the
// resolver the query fell through to). Other dial errors are returned at
// once.
type peerDialer struct {
	dialer net.Dialer
}

// DialContext implements the dial function of http.Transport. Each
// attempt is bounded by peerAttemptTimeout through its context.
func (p *peerDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	delay := peerRetryDelay
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, peerAttemptTimeout)
		conn, err := p.dialer.DialContext(actx, network, addr)
		cancel()
		if err == nil {
			return conn, nil
		}
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || attempt == peerLookupAttempts || ctx.Err() != nil {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		delay *= 2
	}
}

// peerClient is the HTTP client for calls to another demo container.
func peerClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = (&peerDialer{dialer: net.Dialer{KeepAlive: 30 * time.Second}}).DialContext
	return &http.Client{Timeout: timeout, Transport: tr}
}
