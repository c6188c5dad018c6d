package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/demo"
	"github.com/outpostdev/outpost/appliance/doctor"
	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
)

func newUpCmd(g *globals) *cobra.Command {
	var def defOptions
	var timeout time.Duration
	var asJSON bool
	var ub upBundleFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create or update the appliance and wait until every service is healthy",
		Long: `Reconcile the appliance to its definition and wait until every service is
healthy. Unchanged running containers are kept; changed ones are recreated.
Services start in dependency order, independent branches in parallel, each
gated on its depends_on conditions. With no -f and no compose.yaml in the
working directory, the embedded demo appliance is used.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			b, err := ub.prepare(ctx, g, &def, bundleUse{})
			if err != nil {
				return err
			}
			l, err := def.load(ctx, g)
			if err != nil {
				return err
			}
			b.pin(l.app)
			progress := progressPrinter(g.streams.Err)
			var res *runtime.UpResult
			if c := g.client(); c != nil {
				if l.demo {
					env, err := g.openEnv(ctx)
					if err != nil {
						return err
					}
					err = l.prepare(ctx, env)
					env.Close()
					if err != nil {
						return err
					}
				}
				res, err = c.Up(ctx, l.app, timeout, progress)
			} else {
				env, err2 := g.openEnv(ctx)
				if err2 != nil {
					return err2
				}
				defer env.Close()
				if err := l.prepare(ctx, env); err != nil {
					return err
				}
				if err := recoverOpen(ctx, g, env, &def); err != nil {
					return err
				}
				app, err2 := env.WithSecrets(l.app)
				if err2 != nil {
					return err2
				}
				res, err = env.Runtime.Up(ctx, app, runtime.UpOptions{Timeout: timeout, Progress: progress})
				if err == nil {
					proxyNote(g, l.app)
				}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.streams.Out, res)
			}
			fmt.Fprintf(g.streams.Out, "%s is up: revision %d, %d services healthy in %s\n", l.app.Name, res.Revision, len(res.Services), res.Duration.Round(100*time.Millisecond))
			printStatus(g, res.Services)
			return nil
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up if not healthy within this time (default: no limit beyond each service's health rules)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	ub.register(cmd, "verify and load this bundle first, then bring up its Compose files (-f files are merged after them) with images pinned by ID")
	return cmd
}

func newDownCmd(g *globals) *cobra.Command {
	var def defOptions
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop and remove the appliance's containers and networks; volumes are always kept",
		Long: `Stop the appliance in reverse dependency order, each service within its stop
timeout, then remove its containers and networks. Volumes are never removed:
there is no flag for that here.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			progress := progressPrinter(g.streams.Err)
			if c := g.client(); c != nil && !def.given() && def.name == "" {
				return c.Down(ctx, progress)
			}
			env, err := g.openEnv(ctx)
			if err != nil {
				return err
			}
			defer env.Close()
			app, err := def.deployed(ctx, g, env)
			if err != nil {
				return err
			}
			if err := env.Runtime.Down(ctx, app, runtime.StopOptions{Progress: progress}); err != nil {
				return err
			}
			fmt.Fprintf(g.streams.Out, "%s is down; its volumes are kept\n", app.Name)
			return nil
		},
	}
	def.register(cmd.Flags())
	return cmd
}

func newStatusCmd(g *globals) *cobra.Command {
	var def defOptions
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "status",
		Aliases: []string{"ps"},
		Short:   "Show each service's state, health, image, ports, uptime and restarts",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var rep *daemon.StatusReply
			if c := g.client(); c != nil {
				r, err := c.Status(ctx)
				if err != nil {
					return err
				}
				rep = r
			}
			if rep == nil || rep.Appliance == "" {
				env, err := g.openEnv(ctx)
				if err != nil {
					return err
				}
				defer env.Close()
				app, err := def.deployed(ctx, g, env)
				if err != nil {
					return err
				}
				states, err := env.Runtime.Status(ctx, app)
				if err != nil {
					return err
				}
				_, rev, _ := env.Runtime.Deployed(ctx, app.Name)
				rep = &daemon.StatusReply{Appliance: app.Name, Version: app.Version, Revision: rev.ID, Services: states}
			}
			if asJSON {
				return printJSON(g.streams.Out, rep)
			}
			mode := "no daemon"
			if rep.Daemon {
				mode = fmt.Sprintf("daemon pid %d", rep.PID)
			}
			fmt.Fprintf(g.streams.Out, "%s %s (revision %d, %s)\n", rep.Appliance, rep.Version, rep.Revision, mode)
			printStatus(g, rep.Services)
			return nil
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printStatus(g *globals, states []runtime.ServiceState) {
	tw := tabwriter.NewWriter(g.streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tSTATE\tHEALTH\tIMAGE\tPORTS\tUPTIME\tRESTARTS")
	for _, s := range states {
		up := "-"
		if s.State == "running" && !s.StartedAt.IsZero() {
			up = time.Since(s.StartedAt).Round(time.Second).String()
		}
		ports := "-"
		if len(s.Ports) > 0 {
			ports = fmt.Sprint(s.Ports)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Service, s.State, s.Health, s.Image, ports, up, s.Restarts)
	}
	tw.Flush()
}

func newLogsCmd(g *globals) *cobra.Command {
	var def defOptions
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs SERVICE",
		Short: "Print a service's (or job's) logs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withDeployed(cmd.Context(), &def, true, func(ctx context.Context, env *daemon.Env, app *model.Appliance) error {
				return env.Runtime.Logs(ctx, app, args[0], engine.LogOptions{Tail: tail, Follow: follow}, g.streams.Out)
			})
		},
	}
	def.registerFile(cmd.Flags(), "")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log")
	cmd.Flags().IntVar(&tail, "tail", 0, "only the last N lines (0: all)")
	return cmd
}

func newEventsCmd(g *globals) *cobra.Command {
	var def defOptions
	var asJSON bool
	var since int64
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the appliance's recorded events (starts, health changes, restarts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withDeployed(cmd.Context(), &def, false, func(ctx context.Context, env *daemon.Env, app *model.Appliance) error {
				evs, err := env.Store.Events(ctx, app.Name, since, 10000)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(g.streams.Out, evs)
				}
				for _, e := range evs {
					fmt.Fprintf(g.streams.Out, "%s  %-10s %-14s %s\n", e.At.Format(time.RFC3339Nano), e.Service, e.Kind, firstLine(e.Message))
				}
				return nil
			})
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().Int64Var(&since, "since", 0, "only events after this event ID")
	return cmd
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}

func newConfigCmd(g *globals) *cobra.Command {
	var def defOptions
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate the definition and print it resolved (merged, interpolated) as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := def.load(cmd.Context(), g)
			if err != nil {
				return err
			}
			return printJSON(g.streams.Out, l.app)
		},
	}
	def.register(cmd.Flags())
	return cmd
}

func newDoctorCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check every host prerequisite for rootless Podman and say how to fix what fails",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep := doctor.Run(cmd.Context(), doctor.Options{})
			if asJSON {
				if err := printJSON(g.streams.Out, rep); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(g.streams.Out, 0, 4, 2, ' ', 0)
				for _, c := range rep.Checks {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status, c.Name, c.Detail)
					if c.Fix != "" && c.Status != doctor.StatusPass {
						fmt.Fprintf(tw, "\t\tfix: %s\n", c.Fix)
					}
				}
				tw.Flush()
			}
			if !rep.OK() {
				return &exitCodeError{code: 1, msg: "some prerequisites fail; see the fixes above"}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newRunCmd(g *globals) *cobra.Command {
	var def defOptions
	var timeout time.Duration
	var pprofAddr string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: start the appliance health-gated, supervise it, serve the control API",
		Long: `Run is what the system service executes. It starts the appliance (the -f
definition, else the deployed one), tells systemd READY once every service is
healthy, restarts crashed or unhealthy services with backoff, serves the
control API on $RUNTIME_DIR/outpost.sock, and on SIGTERM stops the appliance
in reverse dependency order.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			if pprofAddr != "" {
				if err := servePprof(ctx, pprofAddr, g.log); err != nil {
					return err
				}
			}
			env, err := g.openEnv(ctx)
			if err != nil {
				return err
			}
			defer env.Close()
			if err := recoverOpen(ctx, g, env, &def); err != nil {
				return err
			}
			var l *loaded
			if def.given() {
				if l, err = def.load(ctx, g); err != nil {
					return err
				}
			} else if app, err := def.deployed(ctx, g, env); err == nil {
				l = &loaded{app: app}
			} else if errors.Is(err, daemon.ErrNoAppliance) {
				if l, err = def.load(ctx, g); err != nil {
					return err
				}
			} else {
				return err
			}
			if err := l.prepare(ctx, env); err != nil {
				return err
			}
			progress := progressPrinter(g.streams.Err)
			return daemon.Run(ctx, env, l.app, daemon.RunOptions{UpTimeout: timeout, Progress: progress})
		},
	}
	def.register(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "fail if the appliance is not healthy within this time")
	cmd.Flags().StringVar(&pprofAddr, "debug-pprof", "", "serve Go runtime profiles on this loopback HOST:PORT (diagnosis)")
	_ = cmd.Flags().MarkHidden("debug-pprof")
	return cmd
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintln(g.streams.Out, "outpost", Version)
			return nil
		},
	}
}

func newDemoImageCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "demo-image",
		Short:  "Build the demo image offline from this binary and load it into Podman",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := g.openEnv(cmd.Context())
			if err != nil {
				return err
			}
			defer env.Close()
			id, err := demo.EnsureImage(cmd.Context(), env.Engine, demo.DefaultImage, "", env.Log)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.streams.Out, demo.DefaultImage, id)
			return nil
		},
	}
}

func newDemoRoleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:                "demo-role ROLE [ARGS...]",
		Short:              "Run a demo-appliance role (used inside the demo images)",
		Hidden:             true,
		DisableFlagParsing: true,
		Args:               cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			err := demo.RunRole(ctx, args[0], args[1:], g.streams.Out, g.streams.Err)
			var ee *demo.ExitError
			if errors.As(err, &ee) {
				msg := ee.Error()
				if ee.Reported {
					msg = ""
				}
				return &exitCodeError{code: ee.Code, msg: msg}
			}
			return err
		},
	}
}
