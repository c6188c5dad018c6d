package proxy

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
)

// TryDuration is how long a proxied request waits for a serving upstream
// (lb_try_duration) before it gets the maintenance page: requests arriving
// while a service restarts are held and retried, not failed at once. A
// reverse_proxy in a Caddyfile that sets lb_try_duration keeps its own.
const TryDuration = 5 * time.Second

// TryInterval is how often a waiting request looks for a serving upstream
// again (lb_try_interval).
const TryInterval = 250 * time.Millisecond

// UpstreamIdleTimeout is how long a pooled connection to a service's
// container may sit unused before the proxy closes it (Caddy's HTTP
// transport keep_alive idle_timeout, default 2 min), unless the vendor set
// one. Go's HTTP transport leaves behind connections that it dialled for
// a request another connection served; a Go server being shut down counts
// such a never-used connection as busy until it is 5 s old, so the
// container an upgrade just moved traffic away from would not exit on
// SIGTERM before its stop timeout. Idle for this long, the proxy closes
// them first. Busy connections are not affected; a quiet one costs a
// loopback dial.
const UpstreamIdleTimeout = time.Second

// GracePeriod bounds how long stopping or reloading the proxy waits for
// open requests (WebSockets included) before closing them.
const GracePeriod = 10 * time.Second

// MaintenanceRefresh is the Retry-After / Refresh interval of the
// maintenance page, in seconds.
const MaintenanceRefresh = 5

// DefaultHealthListen is the internal health listener when the definition
// names none (the Compose loader sets the same default).
const DefaultHealthListen = "127.0.0.1:2020"

// HealthServer is the name of the Caddy server of the internal health
// listener in the generated config.
const HealthServer = "outpost_health"

//go:embed maintenance.html
var builtinMaintenance string

// StorageDir is where Caddy keeps certificates and the local CA under
// Outpost's state directory.
func StorageDir(stateDir string) string { return filepath.Join(stateDir, "proxy", "caddy") }

// CARootPath is where the local CA's root certificate is exported (PEM,
// mode 0644) for services that mount it (x-outpost proxy.ca_mount) and
// for clients that must trust the appliance's certificates.
func CARootPath(stateDir string) string { return filepath.Join(stateDir, "proxy", "ca-root.crt") }

// Target is a service's container port the proxy routes to.
type Target struct {
	Service string `json:"service"`
	Port    uint16 `json:"port"`
}

// String returns "service:port".
func (t Target) String() string { return t.Service + ":" + strconv.Itoa(int(t.Port)) }

// Needs is what the proxy needs from an appliance's containers.
type Needs struct {
	// Targets are the service ports the proxy routes to, sorted; each
	// must be published on loopback.
	Targets []Target
	// Hosts are the host names of the proxy's sites, sorted; containers
	// resolve them to the host so they reach the proxy by its public name
	// (hairpin).
	Hosts []string
	// CAMount says whether the local CA root is mounted into containers
	// (ca_mount with tls internal).
	CAMount bool
	// Warnings are findings that do not stop the proxy.
	Warnings []string
}

// Analyze reads an appliance's proxy definition (adapting its Caddyfile)
// and reports what it needs from the containers. It checks what Build
// checks except the host ports. An appliance without a proxy needs
// nothing.
func Analyze(app *model.Appliance) (*Needs, error) {
	if app.Proxy == nil {
		return &Needs{}, nil
	}
	d, err := prepare(app)
	if err != nil {
		return nil, err
	}
	targets, err := d.rewriteUpstreams(nil)
	if err != nil {
		return nil, err
	}
	return &Needs{Targets: targets, Hosts: d.hosts(), CAMount: d.p.CAMount != "", Warnings: d.sortedWarnings()}, nil
}

// BuildOptions are Build's inputs besides the definition.
type BuildOptions struct {
	// StateDir is Outpost's state directory; Caddy's storage is
	// StorageDir(StateDir). Required.
	StateDir string
	// Ports maps service → container port → the loopback host port the
	// container port is published on. Every target must be present.
	Ports map[string]map[uint16]uint16
	// LogLevel is the lowest level of Caddy's log entries (default
	// slog.LevelInfo); Apply passes its logger's level so that Caddy does
	// not encode entries Outpost's logger would drop.
	LogLevel slog.Level
}

// Config is a built proxy configuration.
type Config struct {
	// JSON is the complete Caddy configuration, indented, keys sorted.
	JSON []byte
	// Routes is the effective route table.
	Routes []Route
	// Targets are the service ports routed to, sorted.
	Targets []Target
	// Hosts are the sites' host names, sorted (see Needs).
	Hosts []string
	// Listen are the addresses Caddy listens on (including :80 for
	// HTTP→HTTPS redirects when a site is served on 443).
	Listen []string
	// TLS is the definition's TLS mode.
	TLS model.TLSMode
	// CertHosts are the host names of the HTTPS sites, for which Caddy
	// manages certificates.
	CertHosts []string
	// HealthListen is the internal health listener's address.
	HealthListen string
	// Warnings are findings that do not stop the proxy.
	Warnings []string
}

// Build turns an appliance's proxy definition into the Caddy config that
// Outpost runs: the vendor's routes or adapted Caddyfile, with upstreams
// naming services rewritten to Outpost's health-gated upstream source on
// their loopback host ports, the maintenance page for 502–504, the TLS
// mode applied (a local CA for internal), the internal health listener,
// the admin endpoint disabled, config autosave off, storage under
// StateDir and logs into Outpost's stream. It is pure: nothing is read
// but the definition (the Caddyfile must have been captured, see Capture;
// otherwise it is read from disk).
func Build(app *model.Appliance, opts BuildOptions) (*Config, error) {
	if app.Proxy == nil {
		return nil, errors.New("building proxy config: the appliance has no x-outpost proxy")
	}
	if opts.StateDir == "" {
		return nil, errors.New("building proxy config: no state directory")
	}
	d, err := prepare(app)
	if err != nil {
		return nil, err
	}
	if opts.Ports == nil {
		opts.Ports = map[string]map[uint16]uint16{}
	}
	targets, err := d.rewriteUpstreams(opts.Ports)
	if err != nil {
		return nil, err
	}
	d.addMaintenance()
	d.applyTLS()
	d.serverDefaults()
	d.addHealthServer()
	d.globals(opts)
	out, err := marshal(d.cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding proxy config: %w", err)
	}
	return &Config{
		JSON:         out,
		Routes:       routeTable(d.cfg),
		Targets:      targets,
		Hosts:        d.hosts(),
		Listen:       d.listens(),
		TLS:          d.p.TLS,
		CertHosts:    d.certHosts(),
		HealthListen: d.p.HealthListen,
		Warnings:     d.sortedWarnings(),
	}, nil
}

// marshal encodes the config tree indented; encoding/json sorts map keys,
// so equal configs give equal bytes (Caddy skips reloading them).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// obj and arr are Caddy JSON as generic trees.
type (
	obj = map[string]any
	arr = []any
)

// child returns m[key] as an object, creating it when absent.
func child(m obj, key string) obj {
	if c, ok := m[key].(obj); ok {
		return c
	}
	c := obj{}
	m[key] = c
	return c
}

// site is one site address of the proxy.
type site struct {
	addr   string // as written
	scheme string
	host   string
	port   string // resolved: the explicit port, else 443 or 80
	https  bool
}

// doc is a proxy definition being turned into Caddy config.
type doc struct {
	app       *model.Appliance
	p         *model.Proxy
	cfg       obj
	sites     []site
	caddyfile bool
	warnings  []string
	// redirects: Caddy's automatic HTTP→HTTPS redirects stay on (and
	// listen on :80) only when a site is served on 443.
	redirects bool
}

func (d *doc) warnf(format string, args ...any) {
	d.warnings = append(d.warnings, fmt.Sprintf(format, args...))
}

func (d *doc) sortedWarnings() []string {
	w := append([]string(nil), d.warnings...)
	sort.Strings(w)
	return dedupe(w)
}

// prepare loads the definition into a config tree and checks it: TLS mode
// against the site addresses, and the health listener.
func prepare(app *model.Appliance) (*doc, error) {
	p := *app.Proxy
	if p.TLS == "" {
		p.TLS = model.TLSInternal
	}
	if p.HealthListen == "" {
		p.HealthListen = DefaultHealthListen
	}
	if err := model.CheckLoopback(p.HealthListen); err != nil {
		return nil, fmt.Errorf("x-outpost.proxy.health_listen: %w", err)
	}
	d := &doc{app: app, p: &p}
	var err error
	if p.Caddyfile != "" {
		err = d.loadCaddyfile()
	} else {
		err = d.loadRoutes()
	}
	if err != nil {
		return nil, err
	}
	if err := d.checkTLS(); err != nil {
		return nil, err
	}
	if err := d.checkHealthPort(); err != nil {
		return nil, err
	}
	return d, nil
}

// checkTLS refuses site addresses that contradict the TLS mode.
func (d *doc) checkTLS() error {
	var https, plain []string
	for _, s := range d.sites {
		if s.https {
			https = append(https, s.addr)
		} else {
			plain = append(plain, s.addr)
		}
		if s.https && s.port == "443" {
			d.redirects = true
		}
	}
	switch d.p.TLS {
	case model.TLSOff:
		if len(https) > 0 {
			return fmt.Errorf("x-outpost.proxy: tls is off but %s would be served over HTTPS; write http:// site addresses (e.g. http://%s) or set tls: internal (a local CA) or acme",
				quoteList(https), hostOr(d.sites, https[0]))
		}
		d.redirects = false
	case model.TLSInternal, model.TLSACME:
		if len(https) == 0 {
			return fmt.Errorf("x-outpost.proxy: tls is %s but no site is served over HTTPS (%s); set tls: off for plain HTTP, or use https:// site addresses",
				d.p.TLS, quoteList(plain))
		}
	default:
		return fmt.Errorf("x-outpost.proxy.tls: %q is not one of internal, acme, off", d.p.TLS)
	}
	if d.p.CAMount != "" && d.p.TLS != model.TLSInternal {
		return fmt.Errorf("x-outpost.proxy.ca_mount: only tls: internal has a local CA to mount, but tls is %s; remove ca_mount or set tls: internal", d.p.TLS)
	}
	return nil
}

func hostOr(sites []site, addr string) string {
	for _, s := range sites {
		if s.addr == addr && s.host != "" {
			return s.host
		}
	}
	return "app.internal"
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// checkHealthPort makes room for the internal health listener: a site
// server on its port is dropped (Tale's Caddyfile serves `:2020/health` on
// every address; Outpost serves it on loopback only).
func (d *doc) checkHealthPort() error {
	_, hport, _ := net.SplitHostPort(d.p.HealthListen)
	servers := child(child(child(d.cfg, "apps"), "http"), "servers")
	for _, name := range sortedKeys(servers) {
		srv, _ := servers[name].(obj)
		for _, l := range stringList(srv["listen"]) {
			if listenPort(l) != hport {
				continue
			}
			if !d.caddyfile {
				return fmt.Errorf("x-outpost.proxy.sites: port %s is the internal health listener's (%s); use another port for the site or set health_listen", hport, d.p.HealthListen)
			}
			d.warnf("the Caddyfile's server on %s is replaced by the internal health listener on %s (/health → 200 OK, loopback only)", l, d.p.HealthListen)
			delete(servers, name)
			break
		}
	}
	return nil
}

// listenPort returns the port of a Caddy listen address ("tcp/:80",
// ":443", "127.0.0.1:2020").
func listenPort(l string) string {
	if i := strings.Index(l, "/"); i >= 0 {
		l = l[i+1:]
	}
	_, port, err := net.SplitHostPort(l)
	if err != nil {
		return ""
	}
	return port
}

// hosts returns the sites' host names that containers can be given as
// host aliases: not IP addresses, localhost, wildcards or placeholders.
func (d *doc) hosts() []string {
	var out []string
	for _, s := range d.sites {
		h := strings.ToLower(s.host)
		if h == "" || h == "localhost" || strings.HasSuffix(h, ".localhost") || net.ParseIP(h) != nil ||
			strings.ContainsAny(h, "*{}") {
			continue
		}
		out = append(out, h)
	}
	sort.Strings(out)
	return dedupe(out)
}

// certHosts returns the host names of the HTTPS sites, sorted.
func (d *doc) certHosts() []string {
	var out []string
	for _, s := range d.sites {
		if s.https && s.host != "" && !strings.ContainsAny(s.host, "*{}") {
			out = append(out, strings.ToLower(s.host))
		}
	}
	sort.Strings(out)
	return dedupe(out)
}

// serviceNames maps every name a service answers to on the appliance's
// networks (its name and aliases), lowercased, to the service.
func (d *doc) serviceNames() map[string]string {
	names := map[string]string{}
	for _, svcName := range d.app.ServiceNames() {
		svc := d.app.Services[svcName]
		for _, aliases := range svc.Networks {
			for _, a := range aliases {
				names[strings.ToLower(a)] = svcName
			}
		}
	}
	for _, svcName := range d.app.ServiceNames() {
		names[strings.ToLower(svcName)] = svcName
	}
	return names
}

// rewriteUpstreams finds every reverse_proxy and turns upstreams that
// name a service (platform:3000, an alias, http://convex:3210) into
// Outpost's health-gated upstream source on the loopback host port from
// ports. With ports nil it only collects the targets.
func (d *doc) rewriteUpstreams(ports map[string]map[uint16]uint16) ([]Target, error) {
	names := d.serviceNames()
	seen := map[Target]bool{}
	var errs []error
	walk(d.cfg, func(h obj) {
		if h["handler"] != "reverse_proxy" {
			return
		}
		if _, ok := h["dynamic_upstreams"]; ok {
			return
		}
		ups, _ := h["upstreams"].(arr)
		var out arr
		gated := false
		for _, u := range ups {
			uo, _ := u.(obj)
			dial, _ := uo["dial"].(string)
			t, ok := serviceTarget(dial, names)
			if !ok {
				if host := dialHost(dial); host != "" && !strings.ContainsAny(host, ".:{") && net.ParseIP(host) == nil && host != "localhost" {
					d.warnf("upstream %s names no service of the appliance; Caddy dials it as written", dial)
				}
				out = append(out, obj{"dial": dial})
				continue
			}
			gated = true
			seen[t] = true
			if ports == nil {
				continue
			}
			hp, ok := ports[t.Service][t.Port]
			if !ok || hp == 0 {
				errs = append(errs, fmt.Errorf("upstream %s: no host port is published for %s", dial, t))
				continue
			}
			out = append(out, obj{"service": t.Service, "port": t.Port, "dial": net.JoinHostPort("127.0.0.1", strconv.Itoa(int(hp)))})
		}
		if !gated || ports == nil {
			return
		}
		delete(h, "upstreams")
		h["dynamic_upstreams"] = obj{"source": "outpost", "upstreams": out}
		switch tr, _ := h["transport"].(obj); {
		case tr == nil:
			h["transport"] = obj{"protocol": "http", "keep_alive": obj{"idle_timeout": UpstreamIdleTimeout.String()}}
		case tr["protocol"] == "http":
			if ka := child(tr, "keep_alive"); ka["idle_timeout"] == nil {
				ka["idle_timeout"] = UpstreamIdleTimeout.String()
			}
		}
		lb := child(h, "load_balancing")
		if _, ok := lb["try_duration"]; !ok {
			lb["try_duration"] = TryDuration.String()
		}
		if _, ok := lb["try_interval"]; !ok {
			lb["try_interval"] = TryInterval.String()
		}
	})
	if len(errs) > 0 {
		return nil, fmt.Errorf("building proxy config: %w", errors.Join(errs...))
	}
	targets := make([]Target, 0, len(seen))
	for t := range seen {
		targets = append(targets, t)
	}
	sort.Slice(targets, func(i, j int) bool {
		if targets[i].Service != targets[j].Service {
			return targets[i].Service < targets[j].Service
		}
		return targets[i].Port < targets[j].Port
	})
	return targets, nil
}

// dialHost returns the host of a Caddy dial address, "" when it has none.
func dialHost(dial string) string {
	dial = strings.TrimPrefix(dial, "tcp/")
	host, _, err := net.SplitHostPort(dial)
	if err != nil {
		return ""
	}
	return strings.ToLower(host)
}

// serviceTarget reports whether dial ("platform:3000") names a service.
func serviceTarget(dial string, names map[string]string) (Target, bool) {
	dial = strings.TrimPrefix(dial, "tcp/")
	if strings.ContainsAny(dial, "{/") {
		return Target{}, false
	}
	host, port, err := net.SplitHostPort(dial)
	if err != nil {
		return Target{}, false
	}
	svc, ok := names[strings.ToLower(host)]
	if !ok {
		return Target{}, false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return Target{}, false
	}
	return Target{Service: svc, Port: uint16(n)}, true
}

// walk calls f for every object in the tree, parents before children.
func walk(v any, f func(obj)) {
	switch t := v.(type) {
	case obj:
		f(t)
		for _, k := range sortedKeys(t) {
			walk(t[k], f)
		}
	case arr:
		for _, e := range t {
			walk(e, f)
		}
	}
}

// siteServers returns the HTTP servers of the sites (every server but the
// health listener), by name.
func (d *doc) siteServers() map[string]obj {
	out := map[string]obj{}
	servers, _ := child(child(d.cfg, "apps"), "http")["servers"].(obj)
	for name, s := range servers {
		if so, ok := s.(obj); ok && name != HealthServer {
			out[name] = so
		}
	}
	return out
}

// addMaintenance makes every site server answer proxy failures (no
// serving upstream within the try duration: 503; upstream unreachable:
// 502/504) with the maintenance page: 503, no-store, auto-refresh. Error
// routes the Caddyfile defines come first and win.
func (d *doc) addMaintenance() {
	page := d.p.MaintenanceHTML
	if page == "" {
		page = builtinMaintenance
	}
	refresh := strconv.Itoa(MaintenanceRefresh)
	route := obj{
		"match": arr{obj{"expression": "{http.error.status_code} in [502, 503, 504]"}},
		"handle": arr{
			obj{"handler": "headers", "response": obj{
				"set": obj{
					"Cache-Control": arr{"no-store"},
					"Content-Type":  arr{"text/html; charset=utf-8"},
					"Refresh":       arr{refresh},
					"Retry-After":   arr{refresh},
				},
				"delete": arr{"Server"},
			}},
			obj{"handler": "static_response", "status_code": 503, "body": page},
		},
		"terminal": true,
	}
	for _, srv := range d.siteServers() {
		errs := child(srv, "errors")
		routes, _ := errs["routes"].(arr)
		errs["routes"] = append(routes, route)
	}
}

// applyTLS applies the TLS mode. internal: every certificate Caddy
// manages comes from its local CA (a catch-all automation policy with the
// internal issuer; policies the Caddyfile gives issuers keep theirs), and
// the CA is never installed into the system trust store. off: automatic
// HTTPS is disabled on every server.
func (d *doc) applyTLS() {
	apps := child(d.cfg, "apps")
	switch d.p.TLS {
	case model.TLSOff:
		for _, srv := range d.siteServers() {
			child(srv, "automatic_https")["disable"] = true
		}
		if _, ok := apps["pki"]; ok {
			d.noTrustInstall()
		}
		return
	case model.TLSInternal:
		auto := child(child(apps, "tls"), "automation")
		policies, _ := auto["policies"].(arr)
		catchAll := false
		for _, p := range policies {
			po, _ := p.(obj)
			if po == nil {
				continue
			}
			if _, ok := po["issuers"]; !ok {
				if _, mgr := po["get_certificate"]; !mgr {
					po["issuers"] = arr{obj{"module": "internal"}}
				}
			}
			if _, ok := po["subjects"]; !ok {
				catchAll = true
			}
		}
		if !catchAll {
			policies = append(policies, obj{"issuers": arr{obj{"module": "internal"}}})
		}
		auto["policies"] = policies
	}
	d.noTrustInstall()
}

// noTrustInstall stops Caddy from installing its local CA into the host's
// trust store (it would try sudo); Outpost exports the root instead.
func (d *doc) noTrustInstall() {
	local := child(child(child(child(d.cfg, "apps"), "pki"), "certificate_authorities"), "local")
	local["install_trust"] = false
}

// serverDefaults sets what Outpost wants of every site server unless the
// Caddyfile says otherwise: HTTP/1.1 and HTTP/2 only (no QUIC listener),
// and no automatic redirect server on :80 unless a site is served on 443.
func (d *doc) serverDefaults() {
	for _, srv := range d.siteServers() {
		if _, ok := srv["protocols"]; !ok {
			srv["protocols"] = arr{"h1", "h2"}
		}
		ah := child(srv, "automatic_https")
		if !d.redirects {
			if _, ok := ah["disable_redirects"]; !ok {
				ah["disable_redirects"] = true
			}
		}
	}
	httpApp := child(child(d.cfg, "apps"), "http")
	if _, ok := httpApp["grace_period"]; !ok {
		httpApp["grace_period"] = GracePeriod.String()
	}
}

// addHealthServer adds the internal health listener: GET /health → 200
// "OK" on the loopback address only, plain HTTP.
func (d *doc) addHealthServer() {
	servers := child(child(child(d.cfg, "apps"), "http"), "servers")
	servers[HealthServer] = obj{
		"listen":          arr{d.p.HealthListen},
		"protocols":       arr{"h1"},
		"automatic_https": obj{"disable": true},
		"routes": arr{obj{
			"match":    arr{obj{"path": arr{"/health"}}},
			"handle":   arr{obj{"handler": "static_response", "status_code": 200, "body": "OK"}},
			"terminal": true,
		}},
	}
}

// globals sets the process-level settings: the admin endpoint off (the
// config can only change through Outpost), no autosave (SQLite is the one
// source of truth), Caddy's storage under the state directory (and no
// storage cleaning, whose instance ID would live outside it), and Caddy's
// default log into Outpost's slog stream. Caddyfile global options for
// these are replaced, with a warning.
func (d *doc) globals(opts BuildOptions) {
	if a, ok := d.cfg["admin"].(obj); ok && len(a) > 0 {
		d.warnf("the Caddyfile's admin settings are ignored: Outpost disables Caddy's admin endpoint")
	}
	d.cfg["admin"] = obj{"disabled": true, "config": obj{"persist": false}}
	if s, ok := d.cfg["storage"].(obj); ok && len(s) > 0 {
		d.warnf("the Caddyfile's storage is ignored: Caddy's storage is %s", StorageDir(opts.StateDir))
	}
	d.cfg["storage"] = obj{"module": "file_system", "root": StorageDir(opts.StateDir)}
	// Storage cleaning stamps an instance ID that Caddy keeps in
	// ~/.local/share/caddy; without it nothing is written outside the state
	// directory. Certificates are renewed in place, so little accumulates.
	tlsApp := child(child(d.cfg, "apps"), "tls")
	if _, ok := tlsApp["disable_storage_clean"]; !ok {
		tlsApp["disable_storage_clean"] = true
	}
	level := "INFO"
	switch {
	case opts.LogLevel <= slog.LevelDebug:
		level = "DEBUG"
	case opts.LogLevel >= slog.LevelError:
		level = "ERROR"
	case opts.LogLevel >= slog.LevelWarn:
		level = "WARN"
	}
	logs := child(child(d.cfg, "logging"), "logs")
	logs["default"] = obj{
		"writer":  obj{"output": logWriterName},
		"encoder": obj{"format": logEncoderName},
		"level":   level,
	}
}

// listens returns every address the config listens on, sorted.
func (d *doc) listens() []string {
	var out []string
	servers, _ := child(child(d.cfg, "apps"), "http")["servers"].(obj)
	for _, s := range servers {
		so, _ := s.(obj)
		out = append(out, stringList(so["listen"])...)
	}
	if d.redirects {
		// Caddy adds a redirect listener on :80 unless every site
		// server turned redirects off.
		for _, srv := range d.siteServers() {
			ah, _ := srv["automatic_https"].(obj)
			if ah["disable"] != true && ah["disable_redirects"] != true {
				out = append(out, ":80")
				break
			}
		}
	}
	sort.Strings(out)
	return dedupe(out)
}

func stringList(v any) []string {
	a, _ := v.(arr)
	out := make([]string, 0, len(a))
	for _, e := range a {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// dedupe removes adjacent duplicates of a sorted slice.
func dedupe(ss []string) []string {
	out := ss[:0]
	for i, s := range ss {
		if i == 0 || s != ss[i-1] {
			out = append(out, s)
		}
	}
	return out
}
