package proxy

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Route is one row of the effective route table: requests to Listen that
// match Match are handled by Handle.
type Route struct {
	// Listen are the server's listen addresses, e.g. [":443"].
	Listen []string `json:"listen"`
	// Match describes the matchers on the way to the handler, outermost
	// first ("host=app.local path=/api/* header[X-Api]=2"); empty matches
	// every request.
	Match string `json:"match"`
	// Handle describes the handler chain, e.g. "strip_prefix /ws_api,
	// proxy" or "respond 200".
	Handle string `json:"handle"`
	// Upstreams are the proxy's targets, for a proxy route.
	Upstreams []Upstream `json:"upstreams,omitempty"`
}

// Upstream is one target of a proxy route.
type Upstream struct {
	// Service and Port name the service's container port; empty for an
	// address that is not a service.
	Service string `json:"service,omitempty"`
	Port    uint16 `json:"port,omitempty"`
	// Dial is the address Caddy connects to.
	Dial string `json:"dial"`
	// Serving says whether the service receives traffic now (running and
	// healthy); nil when unknown (the table was built without runtime
	// state).
	Serving *bool `json:"serving,omitempty"`
}

// routeTable flattens the config's servers into rows: nested subroutes
// are expanded, their matchers joined to their parents'.
func routeTable(cfg obj) []Route {
	servers, _ := child(child(cfg, "apps"), "http")["servers"].(obj)
	names := sortedKeys(servers)
	// The health listener last.
	sort.SliceStable(names, func(i, j int) bool { return names[i] != HealthServer && names[j] == HealthServer })
	var out []Route
	for _, name := range names {
		srv, _ := servers[name].(obj)
		listen := stringList(srv["listen"])
		routes, _ := srv["routes"].(arr)
		flatten(routes, listen, nil, nil, &out)
	}
	return out
}

func flatten(routes arr, listen, match, steps []string, out *[]Route) {
	steps = append([]string(nil), steps...)
	for _, r := range routes {
		ro, _ := r.(obj)
		if ro == nil {
			continue
		}
		m := match
		d := describeMatch(ro["match"])
		if d != "" {
			m = append(append([]string(nil), match...), d)
		}
		s := append([]string(nil), steps...)
		handlers, _ := ro["handle"].(arr)
		if d == "" && onlyMiddleware(handlers) {
			// A route without matchers that only rewrites (handle_path's
			// strip_prefix) applies to the routes after it.
			for _, h := range handlers {
				if ho, _ := h.(obj); ho != nil && ho["handler"] == "rewrite" {
					steps = append(steps, describeRewrite(ho))
				}
			}
			continue
		}
		for _, h := range handlers {
			ho, _ := h.(obj)
			if ho == nil {
				continue
			}
			name, _ := ho["handler"].(string)
			switch name {
			case "subroute":
				sub, _ := ho["routes"].(arr)
				flatten(sub, listen, m, s, out)
			case "headers":
				// Response headers are not what a route is about.
			case "vars", "encode", "request_body", "map", "push", "intercept", "log_append":
				// Middleware: shown with the route it leads to.
				s = append(s, name)
			case "rewrite":
				s = append(s, describeRewrite(ho))
			default:
				row := Route{Listen: listen, Match: strings.Join(m, " "), Handle: strings.Join(append(s, describeHandler(ho)), ", ")}
				if name == "reverse_proxy" {
					row.Upstreams = upstreamsOf(ho)
				}
				*out = append(*out, row)
			}
		}
	}
}

// describeMatch renders matcher sets: AND within a set, " | " between sets.
func describeMatch(v any) string {
	sets, _ := v.(arr)
	var parts []string
	for _, set := range sets {
		so, _ := set.(obj)
		var terms []string
		for _, k := range sortedKeys(so) {
			switch k {
			case "host", "path", "method", "protocol":
				terms = append(terms, k+"="+strings.Join(stringList(so[k]), ","))
			case "header":
				h, _ := so[k].(obj)
				for _, name := range sortedKeys(h) {
					terms = append(terms, fmt.Sprintf("header[%s]=%s", name, strings.Join(stringList(h[name]), ",")))
				}
			default:
				b, _ := json.Marshal(so[k])
				terms = append(terms, k+"="+string(b))
			}
		}
		if len(terms) > 0 {
			parts = append(parts, strings.Join(terms, " "))
		}
	}
	return strings.Join(parts, " | ")
}

func describeRewrite(h obj) string {
	switch {
	case h["strip_path_prefix"] != nil:
		return fmt.Sprintf("strip_prefix %v", h["strip_path_prefix"])
	case h["uri"] != nil:
		return fmt.Sprintf("rewrite %v", h["uri"])
	}
	return "rewrite"
}

func describeHandler(h obj) string {
	name, _ := h["handler"].(string)
	switch name {
	case "reverse_proxy":
		return "proxy"
	case "static_response":
		status := fmt.Sprint(h["status_code"])
		if status == "<nil>" {
			status = "200"
		}
		if hdr, ok := h["headers"].(obj); ok {
			if loc := stringList(hdr["Location"]); len(loc) > 0 {
				return fmt.Sprintf("redirect %s %s", status, loc[0])
			}
		}
		return "respond " + status
	}
	return name
}

func upstreamsOf(h obj) []Upstream {
	var out []Upstream
	if dyn, ok := h["dynamic_upstreams"].(obj); ok {
		ups, _ := dyn["upstreams"].(arr)
		for _, u := range ups {
			uo, _ := u.(obj)
			up := Upstream{Dial: fmt.Sprint(uo["dial"])}
			up.Service, _ = uo["service"].(string)
			switch p := uo["port"].(type) {
			case uint16:
				up.Port = p
			case json.Number:
				n, _ := p.Int64()
				up.Port = uint16(n)
			}
			out = append(out, up)
		}
		return out
	}
	ups, _ := h["upstreams"].(arr)
	for _, u := range ups {
		uo, _ := u.(obj)
		out = append(out, Upstream{Dial: fmt.Sprint(uo["dial"])})
	}
	return out
}

// onlyMiddleware reports whether handlers only modify the request or
// response (no handler that answers).
func onlyMiddleware(handlers arr) bool {
	for _, h := range handlers {
		ho, _ := h.(obj)
		switch ho["handler"] {
		case "rewrite", "headers", "vars":
		default:
			return false
		}
	}
	return len(handlers) > 0
}
