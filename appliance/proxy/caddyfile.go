package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/outpostdev/outpost/appliance/model"
)

// Capture completes a freshly loaded definition's proxy with what lives
// outside the Compose files: the Caddyfile's text with its {$VAR} and
// {$VAR:default} placeholders resolved from env (the appliance's
// interpolation environment: process environment over env files), and
// the maintenance page's HTML. Both are stored in the definition, so a
// revision records exactly what the proxy serves and the daemon needs
// neither the files nor the CLI's environment. It then checks the proxy
// as the daemon will (Caddyfile syntax, TLS mode against the sites), so
// mistakes surface at `outpost up`/`config` time. It returns warnings,
// e.g. placeholders whose variable is unset. Paths are relative to the
// first Compose file.
func Capture(app *model.Appliance, env map[string]string) ([]string, error) {
	p := app.Proxy
	if p == nil {
		return nil, nil
	}
	var warnings []string
	if p.Caddyfile != "" {
		path := app.ResolvePath(p.Caddyfile)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("x-outpost.proxy.caddyfile: reading %s: %w", path, err)
		}
		text, unset := ResolveEnv(string(b), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		for _, v := range unset {
			warnings = append(warnings, fmt.Sprintf("x-outpost.proxy.caddyfile: {$%s} is unset and has no default; it becomes an empty string", v))
		}
		p.CaddyfileText = text
	}
	if p.MaintenancePage != "" {
		path := app.ResolvePath(p.MaintenancePage)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("x-outpost.proxy.maintenance_page: reading %s: %w", path, err)
		}
		p.MaintenanceHTML = string(b)
	}
	needs, err := Analyze(app)
	if err != nil {
		return nil, err
	}
	return append(warnings, needs.Warnings...), nil
}

// ResolveEnv replaces the Caddyfile environment placeholders {$VAR} and
// {$VAR:default} in text the way Caddy's own parser does, but looking
// variables up with lookup instead of in the process environment. It
// returns the names of variables that were unset and had no default.
func ResolveEnv(text string, lookup func(string) (string, bool)) (string, []string) {
	const open, closing = "{$", "}"
	var b strings.Builder
	var unset []string
	rest := text
	for {
		i := strings.Index(rest, open)
		if i < 0 {
			break
		}
		j := strings.Index(rest[i+len(open):], closing)
		if j < 0 {
			break
		}
		name := rest[i+len(open) : i+len(open)+j]
		b.WriteString(rest[:i])
		rest = rest[i+len(open)+j+len(closing):]
		if name == "" {
			b.WriteString(open + closing)
			continue
		}
		key, def, hasDef := strings.Cut(name, ":")
		v, ok := lookup(key)
		if !ok {
			v = def
			if !hasDef {
				unset = append(unset, key)
			}
		}
		b.WriteString(v)
	}
	b.WriteString(rest)
	sort.Strings(unset)
	return b.String(), dedupe(unset)
}

// caddyfileName is the file name the adapter reports errors against
// (imports resolve relative to it).
func (d *doc) caddyfileName() string {
	return d.app.ResolvePath(d.p.Caddyfile)
}

// loadCaddyfile adapts the captured Caddyfile with Caddy's own adapter and
// reads its site addresses. A definition that was not captured (loaded by
// a caller that skipped Capture) reads the file, resolving placeholders
// from the process environment as Caddy would.
func (d *doc) loadCaddyfile() error {
	d.caddyfile = true
	name := d.caddyfileName()
	text := d.p.CaddyfileText
	if text == "" {
		b, err := os.ReadFile(name)
		if err != nil {
			return fmt.Errorf("x-outpost.proxy.caddyfile: reading %s: %w (load the definition again with `outpost up -f`)", name, err)
		}
		text, _ = ResolveEnv(string(b), os.LookupEnv)
	}
	blocks, err := caddyfile.Parse(name, []byte(text))
	if err != nil {
		return fmt.Errorf("x-outpost.proxy.caddyfile: %w", err)
	}
	for _, sb := range blocks {
		if sb.IsNamedRoute {
			continue
		}
		for _, k := range sb.GetKeysText() {
			a, err := httpcaddyfile.ParseAddress(k)
			if err != nil {
				return fmt.Errorf("x-outpost.proxy.caddyfile: site address %q: %w", k, err)
			}
			d.sites = append(d.sites, caddyfileSite(k, a))
		}
	}
	if len(d.sites) == 0 {
		return fmt.Errorf("x-outpost.proxy.caddyfile %s has no site block; add one, e.g. `app.example.internal { reverse_proxy web:8080 }`", name)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return errors.New("the caddyfile adapter is not compiled in")
	}
	out, warns, err := adapter.Adapt([]byte(text), map[string]any{"filename": name})
	if err != nil {
		return fmt.Errorf("x-outpost.proxy.caddyfile: adapting %s: %w", name, err)
	}
	for _, w := range warns {
		d.warnf("x-outpost.proxy.caddyfile: %s", w.String())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	var cfg obj
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("x-outpost.proxy.caddyfile: reading the adapted config: %w", err)
	}
	d.cfg = cfg
	return nil
}

// caddyfileSite says how Caddy serves a Caddyfile site address: HTTPS for
// https://, for port 443, and for a host name on any port but 80 (Caddy's
// automatic HTTPS); plain HTTP for http://, port 80 and bare ports.
func caddyfileSite(addr string, a httpcaddyfile.Address) site {
	s := site{addr: addr, scheme: a.Scheme, host: a.Host, port: a.Port}
	switch {
	case a.Scheme == "https":
		s.https = true
	case a.Scheme == "http":
	case a.Port == "443":
		s.https = true
	case a.Port == "80":
	case a.Host != "":
		s.https = true
	}
	if s.port == "" {
		s.port = "80"
		if s.https {
			s.port = "443"
		}
	}
	return s
}
