package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/outpostdev/outpost/appliance/model"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func backendPort(t *testing.T, s *httptest.Server) uint16 {
	t.Helper()
	_, p, _ := net.SplitHostPort(s.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return uint16(n)
}

// The embedded proxy serves a route table over TLS from its local CA,
// carries WebSockets, gates upstreams on the serving state without a
// reload (holding requests that arrive while none serves), answers with
// the maintenance page when none comes back, serves the health listener,
// and has no admin endpoint.
func TestProxyRuntime(t *testing.T) {
	platform := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "platform-internal")
		fmt.Fprintf(w, "platform %s", r.URL.Path)
	}))
	defer platform.Close()
	upgrader := websocket.Upgrader{}
	convex := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			c, err := upgrader.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			for {
				mt, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				_ = c.WriteMessage(mt, append([]byte(r.URL.Path+" "), msg...))
			}
		}
		fmt.Fprintf(w, "convex %s", r.URL.Path)
	}))
	defer convex.Close()

	sitePort, healthPort := freePort(t), freePort(t)
	stateDir := t.TempDir()
	app := taleApp(&model.Proxy{
		TLS:          model.TLSInternal,
		HealthListen: "127.0.0.1:" + strconv.Itoa(healthPort),
		Sites:        []string{fmt.Sprintf("https://app.outpost.test:%d", sitePort)},
		Routes: []model.Route{
			{Path: "/ws_api/*", StripPrefix: "/ws_api", Upstream: "convex:3210"},
			{Upstream: "platform:3000"},
		},
	})
	ports := map[string]map[uint16]uint16{"platform": {3000: backendPort(t, platform)}, "convex": {3210: backendPort(t, convex)}}
	var logs bytes.Buffer
	p := New(Options{StateDir: stateDir, Log: newTextLogger(&logs)})
	ctx := context.Background()
	if _, err := p.Apply(ctx, app, ports, map[string]bool{"platform": true, "convex": true}); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	// Clients trust the exported root and reach the site by its name.
	pem, err := os.ReadFile(CARootPath(stateDir))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatal("exported CA root is not PEM")
	}
	if st, _ := os.Stat(CARootPath(stateDir)); st.Mode().Perm() != 0o644 {
		t.Errorf("CA root mode %v, want 0644", st.Mode().Perm())
	}
	tlsConf := &tls.Config{RootCAs: roots, ServerName: "app.outpost.test"}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", sitePort))
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf, DialContext: dial}}
	base := fmt.Sprintf("https://app.outpost.test:%d", sitePort)
	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	if code, body, h := get("/hello"); code != 200 || body != "platform /hello" || h.Get("Server") != "" {
		t.Fatalf("GET /hello = %d %q Server=%q", code, body, h.Get("Server"))
	}
	if code, body, _ := get("/ws_api/x"); code != 200 || body != "convex /x" {
		t.Fatalf("GET /ws_api/x = %d %q (prefix not stripped?)", code, body)
	}

	// WebSocket through the proxy, prefix stripped.
	wsd := websocket.Dialer{TLSClientConfig: tlsConf, NetDialContext: dial, HandshakeTimeout: 10 * time.Second}
	wsURL := fmt.Sprintf("wss://app.outpost.test:%d/ws_api/echo", sitePort)
	ws, resp, err := wsd.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("websocket dial: %v (%v)", err, resp)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "/echo ping" {
		t.Fatalf("websocket echo = %q, %v", msg, err)
	}
	ws.Close()

	// A request arriving while convex is not serving is held, and served
	// once convex serves again, within the try duration: no reload.
	p.SetServing("tale", "convex", false)
	go func() {
		time.Sleep(700 * time.Millisecond)
		p.SetServing("tale", "convex", true)
	}()
	start := time.Now()
	if code, body, _ := get("/ws_api/held"); code != 200 || body != "convex /held" {
		t.Fatalf("held request = %d %q", code, body)
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > TryDuration {
		t.Errorf("held request took %s", d)
	}

	// No serving upstream within the try duration: the maintenance page.
	p.SetServing("tale", "convex", false)
	p.SetServing("other-appliance", "convex", true) // ignored
	start = time.Now()
	code, body, h := get("/ws_api/down")
	if code != 503 || !strings.Contains(body, "starting or being updated") || h.Get("Retry-After") != "5" ||
		h.Get("Cache-Control") != "no-store" || h.Get("Server") != "" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("maintenance = %d %v %.80q", code, h, body)
	}
	if d := time.Since(start); d < TryDuration-time.Second {
		t.Errorf("maintenance page after %s, before the try duration %s", d, TryDuration)
	}
	// The other route is unaffected.
	if code, _, _ := get("/"); code != 200 {
		t.Fatalf("platform while convex is down: %d", code)
	}

	// The internal health listener; no admin endpoint.
	if code, body, err := plainGet(fmt.Sprintf("http://127.0.0.1:%d/health", healthPort)); err != nil || code != 200 || body != "OK" {
		t.Fatalf("health listener = %d %q %v", code, body, err)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:2019", time.Second); err == nil {
		c.Close()
		t.Errorf("something answers on Caddy's admin port 2019")
	}

	st := p.Status()
	if !st.Running || st.CARoot != CARootPath(stateDir) || len(st.Routes) != 3 {
		t.Fatalf("status = %+v", st)
	}
	if u := st.Routes[0].Upstreams[0]; u.Service != "convex" || u.Serving == nil || *u.Serving {
		t.Errorf("convex route upstream = %+v, want not serving", u)
	}

	// Re-applying the same definition does not reload; Caddy logs went to
	// slog.
	if _, err := p.Apply(ctx, app, ports, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "component=caddy") {
		t.Errorf("no Caddy log line reached slog:\n%s", logs.String())
	}

	// The CA exists: EnsureCA reuses it.
	if path, err := EnsureCA(stateDir, nil); err != nil || path != CARootPath(stateDir) {
		t.Fatalf("EnsureCA = %q, %v", path, err)
	}

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := plainGet(fmt.Sprintf("http://127.0.0.1:%d/health", healthPort)); err == nil {
		t.Errorf("health listener still answers after Stop")
	}
}

func plainGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// EnsureCA creates the local CA without a running proxy (a foreground
// `outpost up` mounting it into containers), and the proxy then uses it.
func TestEnsureCAWithoutProxy(t *testing.T) {
	stateDir := t.TempDir()
	path, err := EnsureCA(stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(path)
	if err != nil || !bytes.Contains(first, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("root %q: %v", first, err)
	}
	if st, err := os.Stat(StorageDir(stateDir)); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("storage dir: %v %v", st, err)
	}
	p := New(Options{StateDir: stateDir})
	app := taleApp(&model.Proxy{TLS: model.TLSInternal, HealthListen: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		Sites: []string{fmt.Sprintf("https://app.outpost.test:%d", freePort(t))}, Routes: []model.Route{{Respond: "hi"}}})
	if _, err := p.Apply(context.Background(), app, nil, nil); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	again, _ := os.ReadFile(path)
	if !bytes.Equal(first, again) {
		t.Fatal("the proxy replaced the CA EnsureCA created")
	}
}

// A privileged port without the capability fails before Caddy starts.
func TestApplyPrivilegedPort(t *testing.T) {
	defer func(f func() (int, bool)) { bindEnv = f }(bindEnv)
	bindEnv = func() (int, bool) { return 1024, false }
	p := New(Options{StateDir: t.TempDir()})
	app := taleApp(&model.Proxy{TLS: model.TLSInternal, Sites: []string{"https://tale.local"}, Routes: []model.Route{{Respond: "hi"}}})
	_, err := p.Apply(context.Background(), app, nil, nil)
	if err == nil || !strings.Contains(err.Error(), ":443, :80") || !strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE") {
		t.Fatalf("err = %v", err)
	}
}

// The running proxy closes a service connection idle for
// UpstreamIdleTimeout, so a Go server being shut down (the container an
// upgrade moved traffic away from) finds none it must wait 5 s for.
func TestIdleUpstreamConnsAreClosed(t *testing.T) {
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "platform")
	}))
	backend.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		if s == http.StateClosed || s == http.StateHijacked {
			delete(open, c)
		} else {
			open[c] = true
		}
	}
	backend.Start()
	defer backend.Close()
	openConns := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(open)
	}
	sitePort := freePort(t)
	app := taleApp(&model.Proxy{TLS: model.TLSOff, Sites: []string{fmt.Sprintf(":%d", sitePort)}, Routes: []model.Route{{Upstream: "platform:3000"}}})
	p := New(Options{StateDir: t.TempDir(), Log: newTextLogger(io.Discard)})
	if _, err := p.Apply(context.Background(), app, map[string]map[uint16]uint16{"platform": {3000: backendPort(t, backend)}}, map[string]bool{"platform": true}); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	url := fmt.Sprintf("http://127.0.0.1:%d/", sitePort)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, body, err := plainGet(url); err != nil || code != 200 || body != "platform" {
				t.Errorf("GET = %d %q %v", code, body, err)
			}
		}()
	}
	wg.Wait()
	if openConns() == 0 {
		t.Fatal("the proxy keeps no connection to the upstream after the load: nothing to test")
	}
	start := time.Now()
	for openConns() > 0 {
		if time.Since(start) > UpstreamIdleTimeout+2*time.Second {
			t.Fatalf("%d connections to the upstream still open %s after the load", openConns(), time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(start); d < UpstreamIdleTimeout/2 {
		t.Errorf("connections closed after %s: before the idle timeout, so the pool does not work", d)
	}
	// And a Go server shutting down now returns at once.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := backend.Config.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("the backend's graceful shutdown took %s", d)
	}
}
