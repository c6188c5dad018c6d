package demo

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeDNS answers A queries on 127.0.0.1: "peer.test." is 127.0.0.1, any
// other name does not exist. It drops the first `drop` queries unanswered,
// like aardvark-dns while it reopens its sockets.
type fakeDNS struct {
	conn    net.PacketConn
	drop    int64
	queries atomic.Int64
}

func startFakeDNS(t *testing.T, drop int64) *fakeDNS {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeDNS{conn: conn, drop: drop}
	t.Cleanup(func() { conn.Close() })
	go f.serve()
	return f
}

func (f *fakeDNS) serve() {
	buf := make([]byte, 512)
	for {
		n, from, err := f.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if f.queries.Add(1) <= f.drop {
			continue
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
		found := q.Name.String() == "peer.test."
		if !found {
			b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RCode: dnsmessage.RCodeNameError})
		}
		_ = b.StartQuestions()
		_ = b.Question(q)
		if found && q.Type == dnsmessage.TypeA {
			_ = b.StartAnswers()
			_ = b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 1}, dnsmessage.AResource{A: [4]byte{127, 0, 0, 1}})
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		_, _ = f.conn.WriteTo(msg, from)
	}
}

// dialer returns a peerDialer whose resolver asks f, refusing the first
// `refuse` connections to it the way a closed UDP port does.
func (f *fakeDNS) dialer(refuse int64) (*peerDialer, *atomic.Int64) {
	var dials atomic.Int64
	addr := f.conn.LocalAddr().String()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		if dials.Add(1) <= refuse {
			return nil, &net.OpError{Op: "read", Net: "udp", Err: syscall.ECONNREFUSED}
		}
		var d net.Dialer
		return d.DialContext(ctx, "udp4", addr)
	}}
	return &peerDialer{dialer: net.Dialer{Resolver: r}}, &dials
}

func listenPeer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func TestPeerDialRetriesRefusedLookup(t *testing.T) {
	port := listenPeer(t)
	f := startFakeDNS(t, 0)
	// How often the resolver itself tries one lookup (attempts × servers
	// of this machine's resolv.conf).
	bare, perLookup := f.dialer(1 << 30)
	if _, err := bare.dialer.DialContext(context.Background(), "tcp4", "peer.test.:"+port); err == nil {
		t.Fatal("lookup succeeded with every query refused")
	}
	// Refused for two whole lookups: only a third one succeeds.
	refuse := 2 * perLookup.Load()
	p, dials := f.dialer(refuse)
	c, err := p.DialContext(context.Background(), "tcp4", "peer.test.:"+port)
	if err != nil {
		t.Fatalf("dial after %d refused queries: %v", refuse, err)
	}
	c.Close()
	if dials.Load() <= refuse {
		t.Errorf("resolver dialled %d times, want more than the %d refused", dials.Load(), refuse)
	}
}

func TestPeerDialRetriesLostQuery(t *testing.T) {
	port := listenPeer(t)
	f := startFakeDNS(t, 1)
	p, _ := f.dialer(0)
	start := time.Now()
	c, err := p.DialContext(context.Background(), "tcp4", "peer.test.:"+port)
	if err != nil {
		t.Fatalf("dial after a lost query: %v", err)
	}
	c.Close()
	// The lost query is asked again after peerAttemptTimeout, not after the
	// resolver's own 5 s.
	if d := time.Since(start); d > peerAttemptTimeout+time.Second {
		t.Errorf("dial took %v", d)
	}
	if f.queries.Load() < 2 {
		t.Errorf("%d queries, want the lost one and another", f.queries.Load())
	}
}

func TestPeerDialGivesUp(t *testing.T) {
	f := startFakeDNS(t, 0)
	p, dials := f.dialer(1 << 30)
	start := time.Now()
	_, err := p.DialContext(context.Background(), "tcp4", "peer.test.:80")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) {
		t.Fatalf("err = %v, want a DNS error", err)
	}
	if dials.Load() < peerLookupAttempts {
		t.Errorf("resolver dialled %d times, want at least one per attempt (%d)", dials.Load(), peerLookupAttempts)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("giving up took %v", d)
	}
}

// A name not found may be the host's resolver answering for a query
// aardvark-dns refused: it is asked again, a bounded number of times.
func TestPeerDialRetriesUnknownNameBounded(t *testing.T) {
	f := startFakeDNS(t, 0)
	p, _ := f.dialer(0)
	start := time.Now()
	_, err := p.DialContext(context.Background(), "tcp4", "missing.test.:80")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Fatalf("err = %v, want not found", err)
	}
	if n := f.queries.Load(); n != peerLookupAttempts {
		t.Errorf("%d queries for a name that does not exist, want one per attempt (%d)", n, peerLookupAttempts)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("giving up took %v", d)
	}
}

func TestPeerDialStopsWithContext(t *testing.T) {
	f := startFakeDNS(t, 1<<30)
	p, _ := f.dialer(0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.DialContext(ctx, "tcp4", "peer.test.:80"); err == nil {
		t.Fatal("dial succeeded with every query lost")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("dial ignored its context: took %v", d)
	}
}
