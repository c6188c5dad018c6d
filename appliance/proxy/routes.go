package proxy

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/outpostdev/outpost/appliance/model"
)

// loadRoutes turns x-outpost proxy.routes and sites into Caddy config: one
// server per port; on it, for each site, the routes in the order written
// (the first match handles the request), each also matching the site's
// host when it names one. The routes are flat, not wrapped in a subroute
// per site: each level of nesting costs allocations on every request. The
// Server header is removed from every response.
func (d *doc) loadRoutes() error {
	if len(d.p.Sites) == 0 {
		return fmt.Errorf("x-outpost.proxy.sites: routes need at least one site address, e.g. \"https://app.example.internal\" or \":80\"")
	}
	for i, addr := range d.p.Sites {
		a, err := httpcaddyfile.ParseAddress(addr)
		if err != nil {
			return fmt.Errorf("x-outpost.proxy.sites.%d: %q: %w", i, addr, err)
		}
		if a.Path != "" {
			return fmt.Errorf("x-outpost.proxy.sites.%d: %q: a site address has no path; match paths in routes", i, addr)
		}
		s := routesSite(addr, a, d.p.TLS)
		if s.https && s.host == "" {
			return fmt.Errorf("x-outpost.proxy.sites.%d: %q is served over HTTPS but names no host to issue a certificate for; write the host name clients use, e.g. https://app.internal:%s", i, addr, s.port)
		}
		d.sites = append(d.sites, s)
	}
	if _, err := d.caddyRoutes(""); err != nil {
		return err
	}
	byPort := map[string][]site{}
	for _, s := range d.sites {
		byPort[s.port] = append(byPort[s.port], s)
	}
	servers := obj{}
	ports := sortedKeys(byPort)
	sort.Slice(ports, func(i, j int) bool { return atoi(ports[i]) < atoi(ports[j]) })
	for i, port := range ports {
		sites := byPort[port]
		https := sites[0].https
		for _, s := range sites[1:] {
			if s.https != https {
				return fmt.Errorf("x-outpost.proxy.sites: %q and %q share port %s but not the scheme; serve HTTP and HTTPS on different ports", sites[0].addr, s.addr, port)
			}
		}
		// Sites naming hosts first: a site without a host catches the rest.
		sort.SliceStable(sites, func(i, j int) bool { return sites[i].host != "" && sites[j].host == "" })
		hostless := sites[len(sites)-1].host == ""
		var top arr
		hosts := map[string]bool{}
		for _, s := range sites {
			if hosts[strings.ToLower(s.host)] {
				continue
			}
			hosts[strings.ToLower(s.host)] = true
			routes, err := d.caddyRoutes(s.host)
			if err != nil {
				return err
			}
			top = append(top, routes...)
			if s.host != "" && hostless {
				// A request for this site that none of its routes match
				// must not fall through to the site without a host.
				top = append(top, obj{
					"match":    arr{obj{"host": arr{s.host}}},
					"handle":   arr{noServerHeader(), obj{"handler": "static_response", "status_code": 404}},
					"terminal": true,
				})
			}
		}
		srv := obj{"listen": arr{":" + port}, "routes": top}
		if !https {
			// Plain HTTP: no certificates even for host names on a port
			// that is not 80.
			srv["automatic_https"] = obj{"disable": true}
		}
		servers["srv"+strconv.Itoa(i)] = srv
	}
	d.cfg = obj{"apps": obj{"http": obj{"servers": servers}}}
	return nil
}

// routesSite resolves a site address of routes: https:// and port 443 are
// HTTPS, http:// and port 80 plain HTTP; otherwise the TLS mode decides
// for a host name (HTTPS unless tls is off; a bare port is plain HTTP),
// on 443 or 80 when no port is written.
func routesSite(addr string, a httpcaddyfile.Address, mode model.TLSMode) site {
	s := site{addr: addr, scheme: a.Scheme, host: a.Host, port: a.Port}
	switch {
	case a.Scheme == "https":
		s.https = true
	case a.Scheme == "http":
	case a.Port == "443":
		s.https = true
	case a.Port == "80":
	default:
		// A host name gets a certificate unless tls is off; a bare port
		// has no name to certify and is plain HTTP.
		s.https = mode != model.TLSOff && a.Host != ""
	}
	if s.port == "" {
		s.port = "80"
		if s.https {
			s.port = "443"
		}
	}
	return s
}

// caddyRoutes turns the vendor's routes into Caddy routes, in order, for
// the site named siteHost ("" for a site without a host): each route also
// matches that host, and a route whose own host differs is left out.
func (d *doc) caddyRoutes(siteHost string) (arr, error) {
	var out arr
	for i, r := range d.p.Routes {
		key := fmt.Sprintf("x-outpost.proxy.routes.%d", i)
		if siteHost != "" && r.Host != "" && !strings.EqualFold(r.Host, siteHost) {
			continue // it can never match on this site
		}
		match := obj{}
		if r.Path != "" {
			if !strings.HasPrefix(r.Path, "/") {
				return nil, fmt.Errorf("%s.path: %q must start with /", key, r.Path)
			}
			match["path"] = arr{r.Path}
		}
		if r.Host != "" {
			match["host"] = arr{r.Host}
		} else if siteHost != "" {
			match["host"] = arr{siteHost}
		}
		if len(r.Header) > 0 {
			h := obj{}
			for _, k := range sortedKeys(r.Header) {
				h[k] = arr{r.Header[k]}
			}
			match["header"] = h
		}
		// The Server header removal is in every route rather than in a
		// route of its own before them: one route less per request.
		handle := arr{noServerHeader()}
		if len(r.Headers) > 0 {
			set, del := obj{}, arr{}
			for _, k := range sortedKeys(r.Headers) {
				if name, ok := strings.CutPrefix(k, "-"); ok {
					del = append(del, name)
				} else {
					set[k] = arr{r.Headers[k]}
				}
			}
			resp := obj{"deferred": true}
			if len(set) > 0 {
				resp["set"] = set
			}
			if len(del) > 0 {
				resp["delete"] = del
			}
			handle = append(handle, obj{"handler": "headers", "response": resp})
		}
		if r.StripPrefix != "" {
			handle = append(handle, obj{"handler": "rewrite", "strip_path_prefix": r.StripPrefix})
		}
		if r.Rewrite != "" {
			handle = append(handle, obj{"handler": "rewrite", "uri": r.Rewrite})
		}
		n := 0
		switch {
		case r.Upstream != "":
			n++
			if _, _, err := net.SplitHostPort(r.Upstream); err != nil {
				return nil, fmt.Errorf("%s.upstream: %q is not service:port", key, r.Upstream)
			}
			handle = append(handle, obj{"handler": "reverse_proxy", "upstreams": arr{obj{"dial": r.Upstream}}})
		case r.Redirect != "":
			n++
			status := r.Status
			if status == 0 {
				status = 302
			}
			handle = append(handle, obj{"handler": "static_response", "status_code": status, "headers": obj{"Location": arr{r.Redirect}}})
		case r.Respond != "":
			n++
			status := r.Status
			if status == 0 {
				status = 200
			}
			handle = append(handle, obj{"handler": "static_response", "status_code": status, "body": r.Respond})
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: a route needs one of upstream, redirect, respond", key)
		}
		route := obj{"handle": handle, "terminal": true}
		if len(match) > 0 {
			route["match"] = arr{match}
		}
		out = append(out, route)
	}
	return out, nil
}

// noServerHeader is the handler removing the Server header (Caddy's and
// the upstream's) from the response.
func noServerHeader() obj {
	return obj{"handler": "headers", "response": obj{"delete": arr{"Server"}, "deferred": true}}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
