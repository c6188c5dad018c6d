package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/compose"
	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/proxy"
)

func newProxyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Inspect the embedded proxy (Caddy inside the daemon)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newProxyRoutesCmd(g))
	return cmd
}

func newProxyRoutesCmd(g *globals) *cobra.Command {
	var def defOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "Print the effective route table: matchers → service:port, and each upstream's health",
		Long: `Print the route table the embedded proxy serves: for each listen address,
the matchers (host, path, headers) leading to a handler, and for proxy
routes the service port, the loopback address Outpost publishes it on and
whether the service receives traffic now (running and healthy). With a
daemon running this is the live table; without one it is the table the
daemon would serve, with health probed now.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var st *proxy.Status
			if c := g.client(); c != nil && !def.given() && def.name == "" {
				s, err := c.Proxy(ctx)
				if err != nil {
					return err
				}
				if s.Running {
					st = s
				}
			}
			if st == nil {
				env, err := g.openEnv(ctx)
				if err != nil {
					return err
				}
				defer env.Close()
				app, err := def.deployed(ctx, g, env)
				if err != nil {
					return err
				}
				s, err := daemon.ProxyStatus(ctx, env, app)
				if err != nil {
					return err
				}
				st = &s
			}
			if asJSON {
				return printJSON(g.streams.Out, st)
			}
			printRoutes(g, st)
			return nil
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printRoutes(g *globals, st *proxy.Status) {
	state := "not running (it runs inside `outpost run`)"
	if st.Running {
		state = "running"
	}
	fmt.Fprintf(g.streams.Out, "%s: proxy %s, tls %s, listening on %s\n", st.Appliance, state, st.TLS, strings.Join(st.Listen, " "))
	fmt.Fprintf(g.streams.Out, "health listener: http://%s/health\n", st.HealthListen)
	if st.CARoot != "" {
		fmt.Fprintf(g.streams.Out, "local CA root:   %s\n", st.CARoot)
	}
	for _, w := range st.Warnings {
		fmt.Fprintf(g.streams.Out, "warning: %s\n", w)
	}
	tw := tabwriter.NewWriter(g.streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LISTEN\tMATCH\tHANDLE\tUPSTREAM\tHEALTH")
	for _, r := range st.Routes {
		match := r.Match
		if match == "" {
			match = "*"
		}
		listen := strings.Join(r.Listen, ",")
		if len(r.Upstreams) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\n", listen, match, r.Handle)
			continue
		}
		for i, u := range r.Upstreams {
			target, health := u.Dial, "-"
			if u.Service != "" {
				target = fmt.Sprintf("%s:%d → %s", u.Service, u.Port, u.Dial)
			}
			if u.Serving != nil {
				health = "unhealthy"
				if *u.Serving {
					health = "healthy"
				}
			}
			if i > 0 {
				listen, match = "", ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", listen, match, r.Handle, target, health)
		}
	}
	tw.Flush()
}

// captureProxy completes a loaded definition's proxy with the Caddyfile
// and maintenance page contents (see proxy.Capture) and prints warnings.
func captureProxy(g *globals, app *model.Appliance, opts compose.Options) error {
	if app.Proxy == nil {
		return nil
	}
	env, err := compose.Environment(opts)
	if err != nil {
		return fmt.Errorf("reading the environment for the proxy: %w", err)
	}
	warnings, err := proxy.Capture(app, env)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintln(g.streams.Err, "warning:", w)
	}
	return nil
}

// proxyNote tells a foreground `up` that routes need the daemon.
func proxyNote(g *globals, app *model.Appliance) {
	if app.Proxy == nil {
		return
	}
	sites := strings.Join(app.Proxy.Sites, ", ")
	if sites == "" {
		sites = "from " + app.Proxy.Caddyfile
	}
	fmt.Fprintf(g.streams.Err, "note: %s's routes (%s) are served by the embedded proxy, which runs inside the daemon; start it with `outpost run` (or install the service) to serve them\n",
		app.Name, sites)
}
