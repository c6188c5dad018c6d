package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpostdev/outpost/appliance/model"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// taleApp is a Tale-shaped appliance: the services the proxy routes to.
func taleApp(p *model.Proxy) *model.Appliance {
	return &model.Appliance{
		Name: "tale",
		Services: map[string]*model.Service{
			"platform": {Name: "platform"},
			"convex":   {Name: "convex", Networks: map[string][]string{"internal": {"convex-backend"}}},
			"db":       {Name: "db"},
		},
		Proxy:   p,
		Sources: []string{"/nonexistent/compose.yml"},
	}
}

var talePorts = map[string]map[uint16]uint16{
	"platform": {3000: 20001},
	"convex":   {3210: 20002, 3211: 20003, 6791: 20004},
}

func caddyfileText(t *testing.T, name string, env map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	text, _ := ResolveEnv(string(b), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return text
}

func TestBuildGolden(t *testing.T) {
	cases := []struct {
		name  string
		proxy func(t *testing.T) *model.Proxy
	}{
		{"tale-caddyfile", func(t *testing.T) *model.Proxy {
			return &model.Proxy{
				Service: "proxy", Caddyfile: "Caddyfile", TLS: model.TLSInternal, HealthListen: "127.0.0.1:2020",
				CAMount: "/etc/ssl/outpost-ca.crt", CAMountServices: []string{"convex"},
				CaddyfileText: caddyfileText(t, "tale.Caddyfile", map[string]string{"APP_HOST": "app.outpost.test", "METRICS_TOKEN": "s3cret"}),
			}
		}},
		{"upstream-tale-caddyfile", func(t *testing.T) *model.Proxy {
			return &model.Proxy{
				Service: "proxy", Caddyfile: "Caddyfile", TLS: model.TLSACME, HealthListen: "127.0.0.1:2020",
				CaddyfileText:   caddyfileText(t, "upstream-tale.Caddyfile", nil),
				MaintenanceHTML: "<p>back soon</p>",
			}
		}},
		{"routes", func(*testing.T) *model.Proxy {
			return &model.Proxy{
				TLS: model.TLSInternal, HealthListen: "127.0.0.1:18020",
				Sites: []string{"https://app.outpost.test:18443", "https://alt.outpost.test:18443", "http://:18080"},
				Routes: []model.Route{
					{Path: "/health", Respond: "OK"},
					{Path: "/metrics/*", Header: map[string]string{"Authorization": "Bearer s3cret"}, Upstream: "convex:6791"},
					{Path: "/metrics/*", Respond: "unauthorized", Status: 401},
					{Path: "/api/*", Header: map[string]string{"X-Api-Version": "2"}, Upstream: "convex:3211"},
					{Path: "/api/*", Upstream: "convex:3210"},
					{Path: "/ws_api/*", StripPrefix: "/ws_api", Upstream: "convex-backend:3210"},
					{Path: "/old", Redirect: "/new", Status: 301},
					{Path: "/legacy/*", Rewrite: "/v1{uri}", Headers: map[string]string{"X-Frame-Options": "DENY", "-X-Powered-By": ""}, Upstream: "platform:3000"},
					{Host: "static.outpost.test", Respond: "static"},
					{Upstream: "platform:3000"},
				},
			}
		}},
		{"routes-tls-off", func(*testing.T) *model.Proxy {
			return &model.Proxy{
				TLS: model.TLSOff, HealthListen: "127.0.0.1:2020",
				Sites:  []string{":18081"},
				Routes: []model.Route{{Upstream: "platform:3000"}},
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			app := taleApp(tc.proxy(t))
			cfg, err := Build(app, BuildOptions{StateDir: "/var/lib/outpost", Ports: talePorts})
			if err != nil {
				t.Fatal(err)
			}
			var table bytes.Buffer
			for _, r := range cfg.Routes {
				fmt.Fprintf(&table, "%v  %s  →  %s", r.Listen, orStar(r.Match), r.Handle)
				for _, u := range r.Upstreams {
					fmt.Fprintf(&table, "  [%s:%d %s]", u.Service, u.Port, u.Dial)
				}
				table.WriteString("\n")
			}
			fmt.Fprintf(&table, "targets: %v\nhosts: %v\nlisten: %v\n", cfg.Targets, cfg.Hosts, cfg.Listen)
			for _, w := range cfg.Warnings {
				fmt.Fprintf(&table, "warning: %s\n", w)
			}
			golden(t, tc.name+".golden.json", cfg.JSON)
			golden(t, tc.name+".routes.golden", table.Bytes())

			// Analyze agrees with Build on what the containers need.
			needs, err := Analyze(app)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(needs.Targets) != fmt.Sprint(cfg.Targets) || fmt.Sprint(needs.Hosts) != fmt.Sprint(cfg.Hosts) {
				t.Errorf("Analyze = %v %v, Build = %v %v", needs.Targets, needs.Hosts, cfg.Targets, cfg.Hosts)
			}
			// The JSON is valid Caddy config: every module it names exists
			// and provisions (without starting listeners).
			validateConfig(t, cfg.JSON)
		})
	}
}

func orStar(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test ./appliance/proxy -update to accept):\n%s", name, got)
	}
}

func TestBuildRefuses(t *testing.T) {
	cases := []struct {
		name  string
		proxy *model.Proxy
		ports map[string]map[uint16]uint16
		want  string
	}{
		{"https site with tls off", &model.Proxy{TLS: model.TLSOff, Sites: []string{"https://app.local"}, Routes: []model.Route{{Upstream: "platform:3000"}}},
			talePorts, `tls is off but "https://app.local" would be served over HTTPS`},
		{"caddyfile host site with tls off", &model.Proxy{TLS: model.TLSOff, Caddyfile: "Caddyfile", CaddyfileText: "app.local {\n\treverse_proxy platform:3000\n}\n"},
			talePorts, "write http:// site addresses (e.g. http://app.local)"},
		{"http only with tls internal", &model.Proxy{TLS: model.TLSInternal, Sites: []string{"http://app.local", ":8080"}, Routes: []model.Route{{Upstream: "platform:3000"}}},
			talePorts, `tls is internal but no site is served over HTTPS ("http://app.local", ":8080"); set tls: off`},
		{"caddyfile plain port with acme", &model.Proxy{TLS: model.TLSACME, Caddyfile: "Caddyfile", CaddyfileText: ":8080 {\n\treverse_proxy platform:3000\n}\n"},
			talePorts, "tls is acme but no site is served over HTTPS"},
		{"ca_mount without internal", &model.Proxy{TLS: model.TLSACME, CAMount: "/ca.crt", Sites: []string{"https://app.local"}, Routes: []model.Route{{Upstream: "platform:3000"}}},
			talePorts, "only tls: internal has a local CA to mount"},
		{"https without host", &model.Proxy{TLS: model.TLSInternal, Sites: []string{"https://:8443"}, Routes: []model.Route{{Upstream: "platform:3000"}}},
			talePorts, "names no host to issue a certificate for"},
		{"site on the health port", &model.Proxy{TLS: model.TLSOff, HealthListen: "127.0.0.1:2020", Sites: []string{":2020"}, Routes: []model.Route{{Upstream: "platform:3000"}}},
			talePorts, "port 2020 is the internal health listener's"},
		{"port not published", &model.Proxy{TLS: model.TLSOff, Sites: []string{":8080"}, Routes: []model.Route{{Upstream: "platform:9999"}}},
			talePorts, "no host port is published for platform:9999"},
		{"mixed schemes on a port", &model.Proxy{TLS: model.TLSInternal, Sites: []string{"https://a.local:8443", "http://b.local:8443"}, Routes: []model.Route{{Upstream: "platform:3000"}}},
			talePorts, "share port 8443 but not the scheme"},
		{"caddyfile syntax", &model.Proxy{TLS: model.TLSInternal, Caddyfile: "Caddyfile", CaddyfileText: "app.local {\n\treverse_proxy platform:3000\n"},
			talePorts, "x-outpost.proxy.caddyfile"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(taleApp(tc.proxy), BuildOptions{StateDir: "/s", Ports: tc.ports})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestResolveEnv(t *testing.T) {
	env := map[string]string{"HOST": "app.local", "EMPTY": ""}
	got, unset := ResolveEnv("{$HOST}:{$PORT:443} {$EMPTY:x}|{$MISSING}|{$}|{$OPEN", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if want := "app.local:443 ||{$}|{$OPEN"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if fmt.Sprint(unset) != "[MISSING]" {
		t.Errorf("unset = %v", unset)
	}
}

func TestCaptureReadsFilesBesideTheComposeFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Caddyfile"), []byte("{$HOST:app.local} {\n\treverse_proxy platform:3000\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "down.html"), []byte("<p>down</p>"), 0o644); err != nil {
		t.Fatal(err)
	}
	app := taleApp(&model.Proxy{Caddyfile: "./Caddyfile", MaintenancePage: "down.html", TLS: model.TLSInternal})
	app.Sources = []string{filepath.Join(dir, "compose.yml")}
	if _, err := Capture(app, map[string]string{"HOST": "tale.example"}); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(app.Proxy.CaddyfileText, "tale.example {") || app.Proxy.MaintenanceHTML != "<p>down</p>" {
		t.Fatalf("captured %q / %q", app.Proxy.CaddyfileText, app.Proxy.MaintenanceHTML)
	}
	needs, err := Analyze(app)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(needs.Targets, needs.Hosts) != "[platform:3000] [tale.example]" {
		t.Fatalf("needs = %v %v", needs.Targets, needs.Hosts)
	}

	app.Proxy = &model.Proxy{Caddyfile: "missing", TLS: model.TLSInternal}
	if _, err := Capture(app, nil); err == nil || !strings.Contains(err.Error(), "x-outpost.proxy.caddyfile") {
		t.Fatalf("missing Caddyfile: %v", err)
	}
}

func TestCheckBind(t *testing.T) {
	defer func(f func() (int, bool)) { bindEnv = f }(bindEnv)
	bindEnv = func() (int, bool) { return 1024, false }
	err := checkBind([]string{":443", ":8443", "127.0.0.1:2020"})
	if !errors.Is(err, ErrPrivilegedPort) || !strings.Contains(err.Error(), ":443") || strings.Contains(err.Error(), ":8443,") ||
		!strings.Contains(err.Error(), "setcap cap_net_bind_service=+ep") || !strings.Contains(err.Error(), "AmbientCapabilities=CAP_NET_BIND_SERVICE") {
		t.Fatalf("err = %v", err)
	}
	if err := checkBind([]string{":8443"}); err != nil {
		t.Fatal(err)
	}
	bindEnv = func() (int, bool) { return 1024, true }
	if err := checkBind([]string{":443"}); err != nil {
		t.Fatal(err)
	}
}

func TestRegistry(t *testing.T) {
	r := newRegistry()
	r.put("web", true)
	r.put("api", true)
	r.put("web", false)
	if r.get("web") || !r.get("api") {
		t.Fatalf("set = %v", *r.set.Load())
	}
	r.reset(map[string]bool{"db": true, "x": false})
	if r.get("api") || !r.get("db") || r.get("x") {
		t.Fatalf("after reset = %v", *r.set.Load())
	}
}

func TestLogLine(t *testing.T) {
	var buf bytes.Buffer
	l := newTextLogger(&buf)
	logLine(l, []byte(`{"level":"warn","ts":1.5,"logger":"tls","msg":"certificate expiring","subject":"app.local","n":3}`))
	logLine(l, []byte(`not json`))
	out := buf.String()
	for _, want := range []string{"level=WARN", `msg="certificate expiring"`, "component=caddy", "logger=tls", "n=3", "subject=app.local", `line="not json"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ts=") {
		t.Errorf("zap's ts was kept:\n%s", out)
	}
}

func TestRouteTableJSON(t *testing.T) {
	cfg, err := Build(taleApp(&model.Proxy{TLS: model.TLSOff, Sites: []string{":8080"}, Routes: []model.Route{{Path: "/api/*", Upstream: "convex:3210"}}}),
		BuildOptions{StateDir: "/s", Ports: talePorts})
	if err != nil {
		t.Fatal(err)
	}
	st := StatusOf(cfg, "tale", "/s", false, func(s string) bool { return s == "convex" })
	b, _ := json.Marshal(st.Routes[0])
	if want := `{"listen":[":8080"],"match":"path=/api/*","handle":"proxy","upstreams":[{"service":"convex","port":3210,"dial":"127.0.0.1:20002","serving":true}]}`; string(b) != want {
		t.Fatalf("route = %s\nwant    %s", b, want)
	}
}

// Redirects from :80 are counted only when Caddy will add them.
func TestListenRedirects(t *testing.T) {
	for text, want := range map[string]string{
		"tale.local {\n\treverse_proxy platform:3000\n}\n":                                       "[127.0.0.1:2020 :443 :80]",
		"{\n\tauto_https disable_redirects\n}\ntale.local {\n\treverse_proxy platform:3000\n}\n": "[127.0.0.1:2020 :443]",
		"tale.local:8443 {\n\treverse_proxy platform:3000\n}\n":                                  "[127.0.0.1:2020 :8443]",
	} {
		cfg, err := Build(taleApp(&model.Proxy{TLS: model.TLSInternal, Caddyfile: "Caddyfile", CaddyfileText: text}), BuildOptions{StateDir: "/s", Ports: talePorts})
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(cfg.Listen); got != want {
			t.Errorf("%q: listen %s, want %s", text, got, want)
		}
	}
}

// Service upstreams close pooled connections idle for UpstreamIdleTimeout
// (so a container traffic moved away from is not held up in its graceful
// shutdown); the vendor's transport options are kept, its own idle
// timeout wins, and upstreams that are no service keep Caddy's defaults.
func TestBuildUpstreamIdleTimeout(t *testing.T) {
	app := taleApp(&model.Proxy{
		Service: "proxy", Caddyfile: "Caddyfile", TLS: model.TLSOff,
		CaddyfileText: ":18082 {\n" +
			"\treverse_proxy /a/* platform:3000 {\n\t\ttransport http {\n\t\t\tread_timeout 7s\n\t\t}\n\t}\n" +
			"\treverse_proxy /b/* convex:3210\n" +
			"\treverse_proxy /c/* convex:3211 {\n\t\ttransport http {\n\t\t\tkeepalive 30s\n\t\t}\n\t}\n" +
			"\treverse_proxy /d/* 127.0.0.1:9000\n" +
			"}\n",
	})
	cfg, err := Build(app, BuildOptions{StateDir: "/var/lib/outpost", Ports: talePorts})
	if err != nil {
		t.Fatal(err)
	}
	validateConfig(t, cfg.JSON)
	var doc map[string]any
	if err := json.Unmarshal(cfg.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	walk(doc, func(h obj) {
		if h["handler"] != "reverse_proxy" {
			return
		}
		key := "static"
		if d, ok := h["dynamic_upstreams"].(obj); ok {
			u := d["upstreams"].(arr)[0].(obj)
			key = fmt.Sprintf("%s:%v", u["service"], u["port"])
		}
		tr, _ := json.Marshal(h["transport"])
		got[key] = string(tr)
	})
	want := map[string]string{
		"platform:3000": `{"keep_alive":{"idle_timeout":"1s"},"protocol":"http","read_timeout":7000000000}`,
		"convex:3210":   `{"keep_alive":{"idle_timeout":"1s"},"protocol":"http"}`,
		"convex:3211":   `{"keep_alive":{"idle_timeout":30000000000},"protocol":"http"}`,
		"static":        `null`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("transports =\n%v\nwant\n%v", got, want)
	}
}
