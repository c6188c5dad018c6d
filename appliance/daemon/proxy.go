package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/proxy"
	"github.com/outpostdev/outpost/appliance/runtime"
)

// The embedded proxy lives in the daemon: it starts before the appliance
// (serving the maintenance page until services are healthy), follows the
// runtime's serving changes, and stops after the appliance. A foreground
// `outpost up` creates the containers the way the proxy needs them
// (published upstream ports, host aliases, the CA mount) but serves no
// routes: the proxy only lives while `outpost run` does.

// proxyNeeds is the runtime's ProxyNeedsFunc: the proxy's upstream ports
// and site host names from its definition and, when services mount the
// local CA root, the root (created if the proxy never ran).
func proxyNeeds(stateDir string, log *slog.Logger) runtime.ProxyNeedsFunc {
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
			if out.CARoot, err = proxy.EnsureCA(stateDir, log); err != nil {
				return out, err
			}
		}
		return out, nil
	}
}

// startProxy runs app's proxy (replacing the config of a running one), or
// stops the proxy when app has none. The runtime's current serving states
// seed the upstreams.
func (d *Daemon) startProxy(ctx context.Context, app *model.Appliance) error {
	if app == nil || app.Proxy == nil {
		return d.proxy.Stop()
	}
	ports, err := d.env.Runtime.ProxyPorts(ctx, app)
	if err != nil {
		return err
	}
	if _, err := d.proxy.Apply(ctx, app, ports, d.env.Runtime.Serving(app.Name)); err != nil {
		return fmt.Errorf("appliance %s: %w", app.Name, err)
	}
	return nil
}

// ProxyStatus describes the proxy of app when no daemon runs it: the route
// table it would serve, with the services' health probed now.
func ProxyStatus(ctx context.Context, env *Env, app *model.Appliance) (proxy.Status, error) {
	if app.Proxy == nil {
		return proxy.Status{}, fmt.Errorf("appliance %s has no x-outpost proxy", app.Name)
	}
	ports, err := env.Runtime.ProxyPorts(ctx, app)
	if err != nil {
		return proxy.Status{}, err
	}
	cfg, err := proxy.Build(app, proxy.BuildOptions{StateDir: env.Paths.StateDir, Ports: ports})
	if err != nil {
		return proxy.Status{}, err
	}
	states, err := env.Runtime.Status(ctx, app)
	if err != nil {
		return proxy.Status{}, err
	}
	serving := map[string]bool{}
	for _, s := range states {
		serving[s.Service] = s.Serving()
	}
	return proxy.StatusOf(cfg, app.Name, env.Paths.StateDir, false, func(s string) bool { return serving[s] }), nil
}

func (d *Daemon) handleProxy(w http.ResponseWriter, _ *http.Request) {
	st := d.proxy.Status()
	if app := d.current(); app != nil && st.Appliance == "" {
		st.Appliance = app.Name
	}
	writeJSON(w, http.StatusOK, st)
}

// Proxy returns the daemon's proxy status and route table.
func (c *Client) Proxy(ctx context.Context) (*proxy.Status, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/proxy", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("the running daemon is older than this outpost and has no proxy API; restart it")
	}
	var st proxy.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decoding the daemon's proxy status: %w", err)
	}
	return &st, nil
}
