package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/outpostdev/outpost/appliance/checks"
	"github.com/outpostdev/outpost/appliance/daemon"
	"github.com/outpostdev/outpost/appliance/demo"
)

// demoSmokePortOffset shifts the embedded demo's ports in `check smoke`
// when no -f is given, so the test copy runs beside a production demo.
const demoSmokePortOffset = 100

// reportOptions are the output flags every check command has.
type reportOptions struct {
	asJSON bool
	junit  string
}

func (o *reportOptions) register(fs *pflag.FlagSet) {
	fs.BoolVar(&o.asJSON, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&o.junit, "junit", "", "also write the report as JUnit XML to `FILE` (for CI)")
}

// emit prints the report, writes the JUnit file, and turns failures into
// exit status 1.
func (o *reportOptions) emit(g *globals, rep *checks.Report) error {
	var err error
	if o.asJSON {
		err = checks.WriteJSON(g.streams.Out, rep)
	} else {
		err = checks.WriteTable(g.streams.Out, rep)
	}
	if err != nil {
		return fmt.Errorf("printing the report: %w", err)
	}
	if o.junit != "" {
		f, err := os.Create(o.junit)
		if err != nil {
			return fmt.Errorf("writing the JUnit report: %w", err)
		}
		err = checks.WriteJUnit(f, rep)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing the JUnit report %s: %w", o.junit, err)
		}
	}
	if rep.Failed() {
		return &exitCodeError{code: checks.ExitFailed, msg: fmt.Sprintf("check %s: %d of %d checks failed", rep.Kind, rep.Summary[checks.Fail], len(rep.Results))}
	}
	return nil
}

func newCheckCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Test the appliance's images and a running copy of it (images, smoke, vuln)",
		Long: `Container tests as commands, for CI and for a customer's box:

  outpost check images   labels, non-root user, baked-in secrets, healthcheck, size budgets
  outpost check smoke    a separate test copy: health, endpoints, connections, ready markers
  outpost check vuln     an installed trivy or grype, offline, HIGH/CRITICAL summary

Each prints a table (--json for machines, --junit FILE for CI) and exits 1 when
a check fails; check vuln exits 3 when no scanner is installed.`,
	}
	cmd.AddCommand(newCheckImagesCmd(g), newCheckSmokeCmd(g), newCheckVulnCmd(g))
	return cmd
}

// imageSelection are the flags choosing which images a check reads.
type imageSelection struct {
	services []string
	archives []string
	bundle   string
	tmpDir   string
}

func (o *imageSelection) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.services, "service", nil, "only this service's image (repeatable)")
	fs.StringArrayVar(&o.archives, "archive", nil, "read images from this docker-archive `FILE` (podman save output) instead of Podman storage (repeatable)")
	fs.StringVar(&o.tmpDir, "tmp-dir", "", "where images are unpacked while read (default $TMPDIR)")
}

// registerBundle adds --bundle (check images reads bundles).
func (o *imageSelection) registerBundle(fs *pflag.FlagSet) {
	fs.StringVar(&o.bundle, "bundle", "", "read images from this Outpost bundle `FILE` instead of Podman storage")
}

// withImages loads the definition and opens Podman unless the archives
// provide every image, then calls fn with the engine (nil without Podman).
func (o *imageSelection) withImages(ctx context.Context, g *globals, def *defOptions, fn func(*loaded, checks.ImageEngine, *daemon.Env) error) error {
	l, err := def.load(ctx, g)
	if err != nil {
		return err
	}
	missing, err := checks.NotInArchives(l.app, o.services, o.archives, o.bundle)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return fn(l, nil, nil)
	}
	env, err := g.openEnv(ctx)
	if err != nil {
		return err
	}
	defer env.Close()
	if err := l.prepare(ctx, env); err != nil {
		return err
	}
	return fn(l, env.Engine, env)
}

func newCheckImagesCmd(g *globals) *cobra.Command {
	var def defOptions
	var sel imageSelection
	var out reportOptions
	cmd := &cobra.Command{
		Use:   "images",
		Short: "Inspect every image: OCI labels, non-root user, no baked-in secrets, healthcheck, size budgets",
		Long: `Read every image the definition uses from Podman storage (or --archive files)
without running it, and report per image and per check PASS, WARN or FAIL:

  labels       the required OCI labels (x-outpost.checks.required_labels;
               default org.opencontainers.image.version and .source)
  non-root     the image (or Compose user:) is not root, or its entrypoint drops
               privileges (declare it in x-outpost.checks.privilege_drop)
  secrets      no secret-looking environment values or known key formats, no
               .env, private keys, credential files or registry tokens in any
               layer (a file deleted by a later layer still counts)
  healthcheck  a HEALTHCHECK in the image or a healthcheck in the Compose file
  size         uncompressed and gzip-compressed size against
               x-outpost.checks.size_budgets and compressed_size_budgets

Exits 1 when any check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			return sel.withImages(ctx, g, &def, func(l *loaded, eng checks.ImageEngine, _ *daemon.Env) error {
				rep, err := checks.Images(ctx, checks.ImagesOptions{
					Appliance: l.app, Engine: eng, Archives: sel.archives, Bundle: sel.bundle, Services: sel.services,
					TempDir: sel.tmpDir, Progress: progressPrinter(g.streams.Err), Log: g.log,
				})
				if err != nil {
					return err
				}
				return out.emit(g, rep)
			})
		},
	}
	def.register(cmd.Flags())
	sel.register(cmd.Flags())
	sel.registerBundle(cmd.Flags())
	out.register(cmd.Flags())
	return cmd
}

func newCheckSmokeCmd(g *globals) *cobra.Command {
	var def defOptions
	var out reportOptions
	var opts checks.SmokeOptions
	var cacert string
	cmd := &cobra.Command{
		Use:   "smoke",
		Short: "Bring up a separate test copy of the appliance, check it works, and remove it",
		Long: `Bring the appliance up under a separate project name (default <name>-smoke)
with its own containers, networks and empty volumes, all labelled as test, and
check:

  healthy        every service becomes healthy within its budget
                 (x-outpost.checks.health_budgets, else its health rules)
  ready-markers  every ready marker exists
  http, connect  each x-outpost.checks.smoke entry: a URL answers with the
                 expected status, from this host or from inside a service
                 (from:), and service-to-service TCP connections succeed

Then the test project and only its test-labelled volumes are removed; the
production appliance is never touched. Give the test profile's shifted ports
with -f (e.g. -f compose.yml -f compose.test.yml) or --port-offset. Failures
show the last log lines of the service concerned. Exits 1 when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Ctrl-C or SIGTERM stops the checks; the test project is still
			// torn down.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			l, err := def.load(ctx, g)
			if err != nil {
				return err
			}
			if l.demo && !cmd.Flags().Changed("port-offset") {
				opts.PortOffset = demoSmokePortOffset
			}
			if cacert != "" {
				pem, err := os.ReadFile(cacert)
				if err != nil {
					return fmt.Errorf("--cacert: %w", err)
				}
				pool, err := x509.SystemCertPool()
				if err != nil || pool == nil {
					pool = x509.NewCertPool()
				}
				if !pool.AppendCertsFromPEM(pem) {
					return fmt.Errorf("--cacert %s: no PEM certificate in it", cacert)
				}
				opts.RootCAs = pool
			}
			env, err := g.openEnv(ctx)
			if err != nil {
				return err
			}
			defer env.Close()
			if err := l.prepare(ctx, env); err != nil {
				return err
			}
			opts.Appliance, opts.Engine, opts.Log = l.app, env.Engine, g.log
			opts.Progress = progressPrinter(g.streams.Err)
			opts.EnsureProbeImage = func(ctx context.Context) (string, error) {
				if _, err := demo.EnsureImage(ctx, env.Engine, demo.DefaultImage, "", env.Log); err != nil {
					return "", err
				}
				return demo.DefaultImage, nil
			}
			rep, err := checks.Smoke(ctx, opts)
			if err != nil {
				return err
			}
			return out.emit(g, rep)
		},
	}
	def.register(cmd.Flags())
	out.register(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVar(&opts.Project, "project", "", "name of the test project (default <name>-smoke)")
	fs.IntVar(&opts.PortOffset, "port-offset", 0, "add this to every published host port (default 0; 100 for the embedded demo)")
	fs.DurationVar(&opts.Timeout, "timeout", 0, "give up if the test project is not healthy within this time (default: each service's health rules)")
	fs.BoolVar(&opts.Keep, "keep", false, "leave the test project running afterwards (the next run removes it)")
	fs.StringVar(&cacert, "cacert", "", "trust this CA certificate (PEM) for https endpoints, e.g. the appliance's local CA")
	fs.IntVar(&opts.LogLines, "log-lines", 30, "last log lines shown for a failing service")
	return cmd
}

func newCheckVulnCmd(g *globals) *cobra.Command {
	var def defOptions
	var sel imageSelection
	var out reportOptions
	var scanner, failOn string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "vuln",
		Short: "Scan every image with an installed trivy or grype, offline, and summarise HIGH/CRITICAL",
		Long: `Export every image the definition uses and scan it with trivy or grype (the
first installed, or --scanner), offline: the scanner's database must already be
on this box. Reports per image the findings by severity and lists those of the
--fail-on severities. Exits 1 when an image has such a finding, and 3 when no
scanner is installed (the message says how to install one). Outpost itself
makes no network access.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if _, _, err := checks.FindScanner(scanner); errors.Is(err, checks.ErrNoScanner) {
				return &exitCodeError{code: checks.ExitNoScanner, msg: err.Error()}
			} else if err != nil {
				return err
			}
			return sel.withImages(ctx, g, &def, func(l *loaded, eng checks.ImageEngine, _ *daemon.Env) error {
				var sev []string
				for _, s := range strings.Split(failOn, ",") {
					if s = strings.TrimSpace(s); s != "" {
						sev = append(sev, s)
					}
				}
				rep, err := checks.Vuln(ctx, checks.VulnOptions{
					Appliance: l.app, Engine: eng, Archives: sel.archives, Services: sel.services,
					Scanner: scanner, FailOn: sev, TempDir: sel.tmpDir, Timeout: timeout,
					Progress: progressPrinter(g.streams.Err), Log: g.log,
				})
				if errors.Is(err, checks.ErrNoScanner) {
					return &exitCodeError{code: checks.ExitNoScanner, msg: err.Error()}
				}
				if err != nil {
					return err
				}
				return out.emit(g, rep)
			})
		},
	}
	def.register(cmd.Flags())
	sel.register(cmd.Flags())
	out.register(cmd.Flags())
	cmd.Flags().StringVar(&scanner, "scanner", "", "trivy or grype (default: the first installed)")
	cmd.Flags().StringVar(&failOn, "fail-on", "CRITICAL,HIGH", "comma-separated severities that fail the check")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "bound on each image's scan")
	return cmd
}
