package checks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/proxy"
	"github.com/outpostdev/outpost/appliance/runtime"
)

// The test project gets its own embedded proxy, run by this process the
// way `outpost run` runs the production one: its own state directory, so
// its own local CA (which the smoke test trusts for its https checks), and
// the test definition's (shifted) site and health addresses.

// proxyNeeds tells the runtime what the test project's proxy needs from
// its containers (as the daemon does for production).
func proxyNeeds(stateDir string, s *smoker) runtime.ProxyNeedsFunc {
	return func(_ context.Context, app *model.Appliance) (runtime.ProxyNeeds, error) {
		n, err := proxy.Analyze(app)
		if err != nil {
			return runtime.ProxyNeeds{}, err
		}
		out := runtime.ProxyNeeds{Ports: map[string][]uint16{}, Hosts: n.Hosts}
		for _, t := range n.Targets {
			out.Ports[t.Service] = append(out.Ports[t.Service], t.Port)
		}
		if n.CAMount {
			if out.CARoot, err = proxy.EnsureCA(stateDir, s.opts.Log); err != nil {
				return out, err
			}
		}
		return out, nil
	}
}

// startProxy runs the test project's proxy and reports it; it returns a
// stop function (nil when it did not start).
func (s *smoker) startProxy(ctx context.Context, stateDir string) func() {
	start := time.Now()
	p := proxy.New(proxy.Options{StateDir: stateDir, Log: s.opts.Log})
	s.rt.OnServingChange(func(app string, st runtime.ServiceState) {
		if app == s.test.Name {
			p.SetServing(app, st.Service, st.Serving())
		}
	})
	res := Result{Subject: "proxy", Check: CheckProxy}
	ports, err := s.rt.ProxyPorts(ctx, s.test)
	if err == nil {
		var cfg *proxy.Config
		cfg, err = p.Apply(ctx, s.test, ports, s.rt.Serving(s.test.Name))
		if err == nil {
			res.Status, res.Detail = Pass, fmt.Sprintf("embedded proxy serving %s (tls %s)", strings.Join(cfg.Listen, ", "), cfg.TLS)
			if cfg.TLS == model.TLSInternal {
				s.trustCA(proxy.CARootPath(stateDir), &res)
			}
			if cfg.HealthListen != "" {
				ok, detail := s.httpFromHost(ctx, "http://"+cfg.HealthListen+"/health", http.StatusOK)
				res.Notes = append(res.Notes, "health listener: "+detail)
				if !ok {
					res.Status = Fail
				}
			}
		}
	}
	res.Duration = time.Since(start)
	if err != nil {
		res.Status, res.Detail = Fail, "starting the test project's embedded proxy: "+err.Error()
		s.rep.add(res)
		return nil
	}
	s.rep.add(res)
	return func() {
		if err := p.Stop(); err != nil {
			s.opts.Log.Warn("stopping the smoke test's proxy failed", "err", err)
		}
	}
}

// trustCA adds the test proxy's local CA root to the https client's trust.
func (s *smoker) trustCA(path string, res *Result) {
	pem, err := os.ReadFile(path)
	if err != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("local CA root not readable (%v): https checks use the system roots", err))
		return
	}
	pool := s.opts.RootCAs
	if pool == nil {
		if pool, err = x509.SystemCertPool(); err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
	} else {
		pool = pool.Clone()
	}
	pool.AppendCertsFromPEM(pem)
	tr := s.client.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	res.Notes = append(res.Notes, "https checks trust the test proxy's local CA")
}

// shiftAddress adds offset to the port of a proxy site address
// ("https://app.local:8443", "app.local", ":80", "http://x") or a
// host:port listener, making implied ports (443, 80) explicit.
func shiftAddress(addr string, offset int) (string, error) {
	scheme, rest, hasScheme := strings.Cut(addr, "://")
	if !hasScheme {
		scheme, rest = "", addr
	}
	hostport, path, _ := strings.Cut(rest, "/")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
		switch scheme {
		case "http":
			port = "80"
		default:
			port = "443"
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("address %q: port %q is not a number", addr, port)
	}
	n += offset
	if n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q: --port-offset %d moves its port outside 1-65535", addr, offset)
	}
	out := net.JoinHostPort(host, strconv.Itoa(n))
	if hasScheme {
		out = scheme + "://" + out
	}
	if path != "" {
		out += "/" + path
	}
	return out, nil
}
