//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Ports of the proxy test: high, and apart from the demo's 18443/2020.
const (
	proxySitePort   = 18543
	proxyHealthPort = 18520
	proxyHost       = "app.outpost.test"
)

// A Tale-shaped appliance: the vendor's proxy service is replaced by the
// embedded Caddy, configured by the vendor's Caddyfile.
const proxyCompose = `
name: proxyt
x-outpost:
  proxy:
    service: proxy
    caddyfile: ./Caddyfile
    tls: internal
    health_listen: 127.0.0.1:18520
    ca_mount: /etc/outpost/ca.crt
    ca_mount_services: [platform]
services:
  platform:
    image: localhost/outpost-demo:latest
    command: ["echo"]
    environment:
      PORTS: "3000"
      NAME: platform
      # Go (the probe inside) trusts the mounted local CA root.
      SSL_CERT_FILE: /etc/outpost/ca.crt
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:3000/health"]
      interval: 1s
      timeout: 3s
      retries: 3
    restart: unless-stopped
  convex:
    image: localhost/outpost-demo:latest
    command: ["echo"]
    environment:
      PORTS: "3210,3211,6791"
      NAME: convex
    networks:
      default:
        aliases: [convex-backend]
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:3210/health"]
      interval: 1s
      timeout: 3s
      retries: 3
    # Not restarted by Outpost: the test stops and starts it by hand.
    restart: "no"
  proxy:
    image: docker.io/library/caddy:2.11-alpine
    ports: ["80:80", "443:443"]
`

// The vendor's Caddyfile, with {$VAR} placeholders from .env.
const proxyCaddyfile = `{$APP_HOST:tale.local}:{$APP_PORT:443} {
	header -Server
	respond /health "OK" 200

	@metrics_auth {
		path /metrics/*
		header Authorization "Bearer {$METRICS_TOKEN}"
	}
	handle @metrics_auth {
		reverse_proxy convex:6791
	}
	respond /metrics/* 401

	@v2 header X-Api-Version 2
	handle /api/* {
		reverse_proxy @v2 convex-backend:3211
		reverse_proxy convex:3210
	}
	handle_path /ws_api/* {
		reverse_proxy convex:3210
	}
	redir /old /new 301
	reverse_proxy platform:3000
}

:{$HEALTH_PORT:2020} {
	respond /health 200
}
`

type echoReply struct {
	Name    string            `json:"name"`
	Port    int               `json:"port"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
}

// proxyClient talks to the site by name, trusting the exported CA root.
type proxyClient struct {
	t      *testing.T
	http   *http.Client
	tls    *tls.Config
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	base   string
	wsBase string
}

func newProxyClient(t *testing.T, caFile string) *proxyClient {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("reading the exported CA root: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", caFile)
	}
	tc := &tls.Config{RootCAs: roots}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", proxySitePort))
	}
	return &proxyClient{
		t: t,
		http: &http.Client{
			Timeout:       30 * time.Second,
			Transport:     &http.Transport{TLSClientConfig: tc, DialContext: dial},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		tls:    tc,
		dial:   dial,
		base:   fmt.Sprintf("https://%s:%d", proxyHost, proxySitePort),
		wsBase: fmt.Sprintf("wss://%s:%d", proxyHost, proxySitePort),
	}
}

func (c *proxyClient) get(path string, header ...string) (int, string, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// echo GETs path and decodes the echo role's reply.
func (c *proxyClient) echo(path string, header ...string) echoReply {
	c.t.Helper()
	code, body, h := c.get(path, header...)
	if code != 200 {
		c.t.Fatalf("GET %s = %d %.300s", path, code, body)
	}
	if s := h.Get("Server"); s != "" {
		c.t.Errorf("GET %s: Server header %q, want none", path, s)
	}
	var r echoReply
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		c.t.Fatalf("GET %s: %v: %.300s", path, err, body)
	}
	return r
}

// hostIP is the host's primary address (what containers reach it by).
func hostIP(t *testing.T) string {
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// The embedded proxy runs a vendor's Tale-shaped Caddyfile end to end:
// TLS from the local CA (the client trusts the exported root), catch-all,
// /api split by header to two ports of one service, a prefix-stripped
// WebSocket echo, /health served by Caddy, a bearer-gated /metrics, a
// redirect, no Server header; the maintenance page while the upstream is stopped and
// traffic again once it is healthy; hairpin and the CA mount from inside a
// container; the health listener on loopback only; no admin endpoint.
func TestProxyTaleRoutes(t *testing.T) {
	start := time.Now()
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "proxyt")
	h.write("compose.yml", proxyCompose)
	h.write("Caddyfile", proxyCaddyfile)
	h.write(".env", fmt.Sprintf("APP_HOST=%s\nAPP_PORT=%d\nHEALTH_PORT=%d\nMETRICS_TOKEN=s3cret-token\n", proxyHost, proxySitePort, proxyHealthPort))

	d := h.daemon("-f", "compose.yml")
	eventually(t, 5*time.Minute, "daemon brings proxyt up", func() error {
		if d.exited() {
			t.Fatalf("daemon exited: %v\n%s", d.err, h.logs())
		}
		r := h.run(time.Minute, "status", "--json")
		if r.code != 0 {
			return fmt.Errorf("status: %s", r.stderr)
		}
		var s statusReply
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			return err
		}
		if !s.Daemon {
			return fmt.Errorf("status not served by the daemon")
		}
		return allHealthy(s, 2)
	})
	c := newProxyClient(t, filepath.Join(h.stateDir, "proxy", "ca-root.crt"))

	// The route table.
	if r := c.echo("/some/page"); r.Name != "platform" || r.Port != 3000 || r.Path != "/some/page" {
		t.Errorf("catch-all reached %+v", r)
	}
	if r := c.echo("/api/items"); r.Name != "convex" || r.Port != 3210 {
		t.Errorf("/api/items reached %+v, want convex:3210", r)
	}
	if r := c.echo("/api/items", "X-Api-Version", "2"); r.Name != "convex" || r.Port != 3211 {
		t.Errorf("/api/items with X-Api-Version: 2 reached %+v, want convex:3211", r)
	}
	if r := c.echo("/ws_api/version"); r.Port != 3210 || r.Path != "/version" {
		t.Errorf("/ws_api/version reached %+v, want convex:3210 /version (prefix stripped)", r)
	}
	if code, body, hd := c.get("/health"); code != 200 || body != "OK" || hd.Get("Server") != "" {
		t.Errorf("/health = %d %q Server=%q", code, body, hd.Get("Server"))
	}
	if code, _, hd := c.get("/old"); code != 301 || hd.Get("Location") != "/new" {
		t.Errorf("/old = %d Location %q, want a 301 to /new", code, hd.Get("Location"))
	}
	if code, _, _ := c.get("/metrics/prometheus"); code != 401 {
		t.Errorf("/metrics without the token = %d, want 401", code)
	}
	if code, _, _ := c.get("/metrics/prometheus", "Authorization", "Bearer wrong"); code != 401 {
		t.Errorf("/metrics with a wrong token = %d, want 401", code)
	}
	if r := c.echo("/metrics/prometheus", "Authorization", "Bearer s3cret-token"); r.Port != 6791 {
		t.Errorf("/metrics with the token reached %+v, want convex:6791", r)
	}

	// A WebSocket through the proxy, prefix stripped.
	wsd := websocket.Dialer{TLSClientConfig: c.tls, NetDialContext: c.dial, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := wsd.Dial(c.wsBase+"/ws_api/echo", nil)
	if err != nil {
		t.Fatalf("WebSocket through the proxy: %v (%v)", err, resp)
	}
	for _, msg := range []string{"ping", "pong"} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, got, err := ws.ReadMessage(); err != nil || string(got) != "/echo "+msg {
			t.Fatalf("WebSocket echo of %q = %q, %v", msg, got, err)
		}
	}
	ws.Close()

	// The internal health listener answers on loopback only; Caddy's
	// admin endpoint is nowhere.
	if code, body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/health", proxyHealthPort)); err != nil || code != 200 || body != "OK" {
		t.Errorf("health listener = %d %q %v", code, body, err)
	}
	if code, _, err := httpGet(fmt.Sprintf("http://%s:%d/health", hostIP(t), proxyHealthPort)); err == nil {
		t.Errorf("the health listener answers on the host's public address (%d)", code)
	}
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:2019", 2*time.Second); err == nil {
		conn.Close()
		t.Errorf("something answers on Caddy's admin port 127.0.0.1:2019")
	}
	if !strings.Contains(h.logs(), "the Caddyfile's server on :18520 is replaced by the internal health listener") {
		t.Errorf("no warning about the Caddyfile's :18520 site")
	}

	// Hairpin: a container reaches the proxy by the public name, over TLS
	// verified with the mounted CA root.
	probe := exec.Command("podman", "exec", "proxyt-platform", "/outpost", "demo-role", "probe", "--timeout", "10s",
		"--http", fmt.Sprintf("https://%s:%d/health", proxyHost, proxySitePort), "--file", "/etc/outpost/ca.crt")
	if out, err := probe.CombinedOutput(); err != nil {
		t.Errorf("hairpin from platform: %v\n%s", err, out)
	}
	if out := podman(t, "inspect", "proxyt-platform", "--format", "{{range .Mounts}}{{.Destination}} {{.RW}};{{end}}"); !strings.Contains(out, "/etc/outpost/ca.crt false") {
		t.Errorf("CA mount of platform: %q, want /etc/outpost/ca.crt read-only", out)
	}
	if out := podman(t, "inspect", "proxyt-convex", "--format", "{{range .Mounts}}{{.Destination}};{{end}}"); strings.Contains(out, "/etc/outpost/ca.crt") {
		t.Errorf("convex is not in ca_mount_services but mounts the CA: %q", out)
	}
	// Upstream ports are published on loopback only.
	for _, port := range []string{"3210", "3211", "6791"} {
		if out := podman(t, "port", "proxyt-convex", port+"/tcp"); !strings.HasPrefix(out, "127.0.0.1:") {
			t.Errorf("convex %s published as %q, want on 127.0.0.1", port, out)
		}
	}

	// The route table as `outpost proxy routes` reports it.
	var st struct {
		Running bool
		TLS     string
		CARoot  string `json:"ca_root"`
		Routes  []struct {
			Match     string
			Upstreams []struct {
				Service string
				Port    int
				Serving *bool
			}
		}
	}
	routes := h.must(time.Minute, "proxy", "routes", "--json")
	if err := json.Unmarshal([]byte(routes.stdout), &st); err != nil {
		t.Fatalf("proxy routes --json: %v\n%s", err, routes.stdout)
	}
	found := false
	for _, r := range st.Routes {
		for _, u := range r.Upstreams {
			if u.Service == "convex" && u.Port == 3211 && strings.Contains(r.Match, "header[X-Api-Version]=2") {
				found = u.Serving != nil && *u.Serving
			}
		}
	}
	if !st.Running || st.TLS != "internal" || !found {
		t.Errorf("proxy routes: running=%v tls=%s convex:3211 serving=%v\n%s", st.Running, st.TLS, found, routes.stdout)
	}
	if table := h.must(time.Minute, "proxy", "routes").stdout; !strings.Contains(table, "convex:3211 → 127.0.0.1:") || !strings.Contains(table, "healthy") {
		t.Errorf("proxy routes table:\n%s", table)
	}

	// Stopped upstream: the maintenance page (after the try duration),
	// while the other routes keep working.
	podman(t, "stop", "-t", "2", "proxyt-convex")
	eventually(t, time.Minute, "convex seen stopped", func() error {
		for _, s := range h.status().Services {
			if s.Service == "convex" && s.State == "running" {
				return fmt.Errorf("convex still %s", s.State)
			}
		}
		return nil
	})
	code, body, hd := c.get("/api/items")
	if code != 503 || !strings.Contains(body, "starting or being updated") || hd.Get("Retry-After") == "" ||
		!strings.Contains(hd.Get("Content-Type"), "text/html") || hd.Get("Server") != "" {
		t.Errorf("with convex stopped, /api/items = %d %v %.200q", code, hd, body)
	}
	if r := c.echo("/"); r.Name != "platform" {
		t.Errorf("platform while convex is stopped: %+v", r)
	}

	// Started again: traffic resumes once it is healthy.
	podman(t, "start", "proxyt-convex")
	eventually(t, 2*time.Minute, "traffic to convex resumes", func() error {
		code, body, _ := c.get("/api/items")
		if code != 200 {
			return fmt.Errorf("/api/items = %d %.100q", code, body)
		}
		return nil
	})

	// Safe by default: Caddy's storage is under the state directory, its
	// logs are in Outpost's stream, and it autosaved no config.
	if _, err := os.Stat(filepath.Join(h.stateDir, "proxy", "caddy", "pki", "authorities", "local", "root.crt")); err != nil {
		t.Errorf("Caddy's storage is not under the state directory: %v", err)
	}
	if !strings.Contains(h.logs(), "component=caddy") {
		t.Errorf("no Caddy log line in the daemon's log stream")
	}
	if home, err := os.UserHomeDir(); err == nil {
		if fi, err := os.Stat(filepath.Join(home, ".config", "caddy", "autosave.json")); err == nil && fi.ModTime().After(start) {
			t.Errorf("Caddy autosaved its config to %s", filepath.Join(home, ".config", "caddy", "autosave.json"))
		}
	}
}

// A site on a privileged port without CAP_NET_BIND_SERVICE is refused
// with the fix, before anything starts.
func TestProxyPrivilegedPortRefused(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || n <= 443 {
		t.Skipf("this host lets unprivileged users bind 443 (ip_unprivileged_port_start=%s)", strings.TrimSpace(string(b)))
	}
	h := newHarness(t)
	h.must(10*time.Minute, "demo-image")
	cleanupAppliance(h, "proxypriv")
	f := h.write("compose.yml", `
name: proxypriv
x-outpost:
  proxy:
    sites: ["https://tale.local"]
    health_listen: 127.0.0.1:18521
    routes: [{upstream: "web:3000"}]
services:
  web:
    image: localhost/outpost-demo:latest
    command: ["echo"]
    environment: {PORTS: "3000"}
`)
	r := h.run(3*time.Minute, "run", "-f", f)
	if r.code == 0 {
		t.Fatalf("run succeeded binding :443 unprivileged")
	}
	for _, want := range []string{":443", "CAP_NET_BIND_SERVICE", "setcap cap_net_bind_service=+ep", "AmbientCapabilities"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error lacks %q:\n%s", want, r.stderr)
		}
	}
	if names := containersOf(t, "proxypriv"); len(names) != 0 {
		t.Errorf("containers created although the proxy could not start: %v", names)
	}
}
