// Command startup is Outpost's start-up benchmark: in one run it brings a
// 6-service, Tale-shaped dependency graph (bench/startup/compose.yml) from
// nothing to all-healthy, several rounds each, with
//
//   - outpost: `outpost up -f compose.yml --name X` (returns when all are healthy);
//   - podman-compose: `podman-compose -p X up -d`, then `podman healthcheck run`
//     on every container in parallel until all pass (1.0.3 ignores
//     depends_on conditions: it starts everything, in dependency order,
//     without waiting for health);
//   - pc-gated: `podman-compose -p X up --no-start` (create only), then the
//     bench itself starts each container once its dependencies are healthy,
//     polling `podman healthcheck run` (what one has to script around
//     podman-compose 1.0.3 to respect service_healthy);
//   - limit: the critical-path limit: each service alone, `podman run -d`
//     until its healthcheck first passes (`podman exec`, polled tightly),
//     summed along the dependency chain with the largest sum.
//
// It prints median and min of each and the ratios outpost/limit and
// podman-compose/outpost. It exits non-zero only when something fails to
// run, never for missing a target. It shells out to outpost, podman and
// podman-compose, and must run as the user that owns the rootless Podman
// storage. See bench/README.md.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
)

// Variant names, in report order.
const (
	vOutpost = "outpost"
	vPC      = "podman-compose"
	vGated   = "pc-gated"
	vLimit   = "limit"
)

// prefixes of the bench's project / appliance names per variant; the
// round number is appended. Everything the bench creates is named from
// these, so a clean state is "nothing whose name starts with one of them".
var prefixes = map[string]string{vOutpost: "bnout", vPC: "bnpc", vGated: "bngate", vLimit: "bnlim"}

type config struct {
	rounds        int
	composeFile   string
	outpost       string
	podmanCompose string
	image         string
	baseImage     string
	busybox       string
	pollPC        time.Duration
	pollLimit     time.Duration
	timeout       time.Duration
	variants      map[string]bool
	trace         bool
	stateDir      string
	runtimeDir    string
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var c config
	var variants string
	flag.IntVar(&c.rounds, "rounds", 3, "rounds per variant, each from a clean state")
	flag.StringVar(&c.composeFile, "f", "compose.yml", "the benchmark's Compose file")
	flag.StringVar(&c.outpost, "outpost", "", "outpost binary (default ./outpost if present, else outpost on PATH)")
	flag.StringVar(&c.podmanCompose, "podman-compose", "podman-compose", "podman-compose binary")
	flag.StringVar(&c.image, "image", "localhost/outpost-bench:latest", "image the compose file uses; built from -base-image plus busybox as /bin/sh")
	flag.StringVar(&c.baseImage, "base-image", "localhost/outpost-demo:latest", "the demo image (`outpost demo-image`)")
	flag.StringVar(&c.busybox, "busybox", "/bin/busybox", "static busybox copied into the image as /bin/sh (podman-compose wraps healthchecks in /bin/sh -c)")
	flag.DurationVar(&c.pollPC, "poll", 150*time.Millisecond, "pause between `podman healthcheck run` polls per container (podman-compose variants)")
	flag.DurationVar(&c.pollLimit, "poll-limit", 50*time.Millisecond, "pause between `podman exec` probes (limit variant)")
	flag.DurationVar(&c.timeout, "timeout", 3*time.Minute, "bound on one variant's start")
	flag.StringVar(&variants, "variants", "outpost,podman-compose,pc-gated,limit", "variants to run, comma-separated")
	flag.BoolVar(&c.trace, "trace", false, "after each outpost round print its per-service timeline (events + container logs)")
	flag.StringVar(&c.stateDir, "state-dir", "", "outpost --state-dir (default: a fresh temporary directory)")
	flag.Parse()

	c.variants = map[string]bool{}
	for _, v := range strings.Split(variants, ",") {
		v = strings.TrimSpace(v)
		if _, ok := prefixes[v]; !ok {
			return fmt.Errorf("-variants: unknown variant %q (want outpost, podman-compose, pc-gated, limit)", v)
		}
		c.variants[v] = true
	}
	if c.rounds < 1 {
		return errors.New("-rounds must be at least 1")
	}
	if c.outpost == "" {
		c.outpost = "outpost"
		if st, err := os.Stat("outpost"); err == nil && !st.IsDir() {
			c.outpost = "./outpost"
		}
	}
	if p, err := exec.LookPath(c.outpost); err == nil {
		c.outpost, _ = filepath.Abs(p)
	} else if c.variants[vOutpost] {
		return fmt.Errorf("outpost binary: %w", err)
	}
	if c.variants[vPC] || c.variants[vGated] {
		if _, err := exec.LookPath(c.podmanCompose); err != nil {
			return fmt.Errorf("podman-compose: %w (apt-get install podman-compose)", err)
		}
	}
	var err error
	if c.composeFile, err = filepath.Abs(c.composeFile); err != nil {
		return err
	}
	app, err := loadCompose(c.composeFile)
	if err != nil {
		return err
	}
	for _, s := range app.Services {
		if s.Image != c.image {
			return fmt.Errorf("service %s uses image %s; the bench builds and expects %s (-image)", s.Name, s.Image, c.image)
		}
	}

	tmp, err := os.MkdirTemp("", "outpost-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if c.stateDir == "" {
		c.stateDir = filepath.Join(tmp, "state")
	}
	// Short: the private podman service's socket lives below it.
	c.runtimeDir = filepath.Join(tmp, "rt")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := cleanAll(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	defer func() { _ = cleanAll(context.WithoutCancel(ctx)) }()
	if err := ensureImage(ctx, &c, tmp); err != nil {
		return err
	}
	printHeader(ctx, &c, app)

	results := map[string][]time.Duration{}
	extra := map[string][]time.Duration{} // secondary numbers, by label
	var limitPaths []string
	for r := 1; r <= c.rounds; r++ {
		for _, v := range []string{vOutpost, vPC, vGated, vLimit} {
			if !c.variants[v] {
				continue
			}
			name := fmt.Sprintf("%s%d", prefixes[v], r)
			var (
				d   time.Duration
				err error
			)
			switch v {
			case vOutpost:
				var inner time.Duration
				d, inner, err = runOutpost(ctx, &c, app, name)
				if err == nil {
					extra["outpost: its own reported up duration"] = append(extra["outpost: its own reported up duration"], inner)
					extra["outpost: process overhead (wall − reported)"] = append(extra["outpost: process overhead (wall − reported)"], d-inner)
				}
			case vPC:
				var upRet time.Duration
				d, upRet, err = runPodmanCompose(ctx, &c, app, name)
				if err == nil {
					extra["podman-compose: `up -d` returned after"] = append(extra["podman-compose: `up -d` returned after"], upRet)
				}
			case vGated:
				var created time.Duration
				d, created, err = runGated(ctx, &c, app, name)
				if err == nil {
					extra["pc-gated: `up --no-start` (create) took"] = append(extra["pc-gated: `up --no-start` (create) took"], created)
				}
			case vLimit:
				var path []string
				var single map[string]time.Duration
				d, path, single, err = runLimit(ctx, &c, app, name)
				if err == nil {
					limitPaths = append(limitPaths, strings.Join(path, " → "))
					for _, s := range app.Order {
						k := "limit: " + s + " alone"
						extra[k] = append(extra[k], single[s])
					}
				}
			}
			if cerr := cleanPrefix(context.WithoutCancel(ctx), name); cerr != nil && err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r, v, err)
			}
			fmt.Printf("round %d  %-15s %6.2fs\n", r, v, d.Seconds())
			results[v] = append(results[v], d)
		}
	}
	report(&c, results, extra, limitPaths)
	return nil
}

// printHeader describes the machine and the DAG.
func printHeader(ctx context.Context, c *config, app *benchApp) {
	fmt.Println("== Outpost start-up benchmark ==")
	kernel, _ := exec.Command("uname", "-r").Output()
	fmt.Printf("host: %d CPUs, kernel %s", runtime.NumCPU(), kernel)
	if out, err := podmanOut(ctx, "version", "--format", "{{.Client.Version}}"); err == nil {
		fmt.Printf("podman %s", strings.TrimSpace(out))
	}
	if out, err := podmanOut(ctx, "info", "--format", "{{.Host.OCIRuntime.Name}}, cgroups {{.Host.CgroupsVersion}}, {{.Store.GraphDriverName}} storage"); err == nil {
		fmt.Printf(" (%s)", strings.TrimSpace(out))
	}
	fmt.Println()
	if c.variants[vPC] || c.variants[vGated] {
		if out, err := exec.CommandContext(ctx, c.podmanCompose, "version").CombinedOutput(); err == nil {
			for _, l := range strings.Split(string(out), "\n") {
				// 1.0.3 prints "podman-composer version  1.0.3".
				if f := strings.Fields(l); len(f) >= 3 && strings.HasPrefix(f[0], "podman-compose") && f[1] == "version" {
					fmt.Println("podman-compose", f[len(f)-1])
				}
			}
		}
	}
	if c.variants[vOutpost] {
		if out, err := exec.CommandContext(ctx, c.outpost, "version").Output(); err == nil {
			fmt.Printf("outpost: %s", firstLine(string(out))+"\n")
		}
	}
	fmt.Printf("compose: %s, image %s\n", c.composeFile, c.image)
	fmt.Println("services (topological order):")
	for _, n := range app.Order {
		s := app.Services[n]
		delay := ""
		for _, e := range s.Env {
			if strings.HasPrefix(e, "INIT_DELAY=") {
				delay = strings.TrimPrefix(e, "INIT_DELAY=")
			}
		}
		deps := strings.Join(s.Deps, ", ")
		if deps == "" {
			deps = "-"
		}
		fmt.Printf("  %-10s INIT_DELAY %-7s depends on %s\n", n, delay, deps)
	}
	fmt.Printf("longest chain: %s\n", strings.Join(app.longestChain(), " → "))
	fmt.Printf("rounds: %d, variants in each round: %s\n\n", c.rounds, strings.Join(enabled(c), ", "))
}

func enabled(c *config) []string {
	var out []string
	for _, v := range []string{vOutpost, vPC, vGated, vLimit} {
		if c.variants[v] {
			out = append(out, v)
		}
	}
	return out
}

// ---- variants ----

// runOutpost times `outpost up` (wall clock, until it returns) and returns
// also the duration outpost itself reports.
func runOutpost(ctx context.Context, c *config, app *benchApp, name string) (time.Duration, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	args := []string{"--state-dir", c.stateDir, "--runtime-dir", c.runtimeDir}
	cmd := exec.CommandContext(ctx, c.outpost, append(args, "up", "-f", c.composeFile, "--name", name, "--json")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("outpost up: %w\n%s%s", err, stdout.String(), stderr.String())
	}
	var res struct {
		Duration time.Duration `json:"duration"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return 0, 0, fmt.Errorf("reading `outpost up --json` output: %w\n%s", err, stdout.String())
	}
	if c.trace {
		traceOutpost(context.WithoutCancel(ctx), c, app, name, t0, d)
	}
	down := exec.CommandContext(context.WithoutCancel(ctx), c.outpost, append(args, "down", "-f", c.composeFile, "--name", name)...)
	if out, err := down.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("outpost down: %w\n%s", err, out)
	}
	return d, res.Duration, nil
}

// traceOutpost prints, per service, when outpost created, started and saw
// it healthy, and when the service itself logged that it was initialised,
// all relative to t0 (when `outpost up` was invoked).
func traceOutpost(ctx context.Context, c *config, app *benchApp, name string, t0 time.Time, wall time.Duration) {
	out, err := exec.CommandContext(ctx, c.outpost, "--state-dir", c.stateDir, "--runtime-dir", c.runtimeDir,
		"events", "-f", c.composeFile, "--name", name, "--json").Output()
	if err != nil {
		fmt.Printf("  trace: outpost events: %v\n", err)
		return
	}
	var evs []struct {
		Service string    `json:"service"`
		Kind    string    `json:"kind"`
		At      time.Time `json:"at"`
	}
	if err := json.Unmarshal(out, &evs); err != nil {
		fmt.Printf("  trace: parsing events: %v\n", err)
		return
	}
	at := map[string]map[string]time.Duration{}
	var first time.Duration = -1
	for _, e := range evs {
		if at[e.Service] == nil {
			at[e.Service] = map[string]time.Duration{}
		}
		if _, seen := at[e.Service][e.Kind]; !seen {
			at[e.Service][e.Kind] = e.At.Sub(t0)
		}
		if first < 0 || e.At.Sub(t0) < first {
			first = e.At.Sub(t0)
		}
	}
	sec := func(d time.Duration, ok bool) string {
		if !ok {
			return "-"
		}
		return fmt.Sprintf("%.2f", d.Seconds())
	}
	fmt.Printf("  trace %s (seconds since `outpost up` was invoked; first event at %.2f):\n", name, first.Seconds())
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  service\tdeps healthy\tcreated\tstarted\tinitialised (log)\thealthy\tgate lag\tdetect lag\t")
	for _, n := range app.Order {
		ev := at[n]
		var depsOK time.Duration
		hasDeps := len(app.Services[n].Deps) > 0
		for _, d := range app.Services[n].Deps {
			depsOK = max(depsOK, at[d]["healthy"])
		}
		cr, okCr := ev["created"]
		st, okSt := ev["started"]
		hl, okHl := ev["healthy"]
		ready, okReady := logTime(ctx, name+"-"+n, "store initialised")
		readyD := ready.Sub(t0)
		gate, detect := "-", "-"
		if hasDeps && okCr {
			gate = fmt.Sprintf("%.2f", (cr - depsOK).Seconds())
		}
		if okReady && okHl {
			detect = fmt.Sprintf("%.2f", (hl - readyD).Seconds())
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", n, sec(depsOK, hasDeps), sec(cr, okCr), sec(st, okSt),
			sec(readyD, okReady), sec(hl, okHl), gate, detect)
	}
	tw.Flush()
	if up, ok := at[""]["up"]; ok {
		fmt.Printf("  appliance 'up' event at %.2f; `outpost up` exited at %.2f\n", up.Seconds(), wall.Seconds())
	}
}

// traceHealthy prints when each service was first seen healthy.
func traceHealthy(app *benchApp, proj string, at map[string]time.Duration, note string) {
	var parts []string
	for _, n := range app.Order {
		if d, ok := at[n]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2f", n, d.Seconds()))
		}
	}
	fmt.Printf("  trace %s healthy at: %s\n", proj, strings.Join(parts, ", "))
	if note != "" {
		fmt.Printf("  trace %s %s\n", proj, note)
	}
}

// logTime returns the timestamp of the container's first log line that
// contains substr (`podman logs -t`).
func logTime(ctx context.Context, ctr, substr string) (time.Time, bool) {
	out, err := exec.CommandContext(ctx, "podman", "logs", "-t", ctr).CombinedOutput()
	if err != nil {
		return time.Time{}, false
	}
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, substr) {
			continue
		}
		ts, _, _ := strings.Cut(l, " ")
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// runPodmanCompose times `podman-compose up -d` plus polling every
// container's healthcheck until all pass. It returns that and when `up -d`
// returned.
func runPodmanCompose(ctx context.Context, c *config, app *benchApp, proj string) (time.Duration, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	t0 := time.Now()
	up := exec.CommandContext(ctx, c.podmanCompose, "-p", proj, "-f", c.composeFile, "up", "-d")
	var upOut bytes.Buffer
	up.Stdout, up.Stderr = &upOut, &upOut
	if err := up.Start(); err != nil {
		return 0, 0, err
	}
	upDone := make(chan error, 1)
	var upRet time.Duration
	go func() {
		err := up.Wait()
		upRet = time.Since(t0)
		upDone <- err
	}()
	healthy, err := pollAllHealthy(ctx, c, app, proj, t0, upDone)
	if err != nil {
		cancel()
		<-upDone
		return 0, 0, fmt.Errorf("%w\npodman-compose output:\n%s", err, tail(upOut.String(), 40))
	}
	if err := <-upDone; err != nil {
		return 0, 0, fmt.Errorf("podman-compose up -d: %w\n%s", err, tail(upOut.String(), 40))
	}
	if c.trace {
		var starts []string
		for _, n := range app.Order {
			out, err := podmanOut(ctx, "inspect", "--format", "{{.State.StartedAt.UnixNano}}", pcContainer(proj, n))
			var ns int64
			if _, serr := fmt.Sscan(strings.TrimSpace(out), &ns); err == nil && serr == nil {
				starts = append(starts, fmt.Sprintf("%s %.2f", n, time.Unix(0, ns).Sub(t0).Seconds()))
			}
		}
		fmt.Printf("  trace %s started at: %s; `up -d` returned at %.2f\n", proj, strings.Join(starts, ", "), upRet.Seconds())
	}
	if err := pcDown(context.WithoutCancel(ctx), c, proj); err != nil {
		return 0, 0, err
	}
	return healthy, upRet, nil
}

// pollAllHealthy polls `podman healthcheck run` for every service's
// container in parallel and returns when all have passed, measured from t0.
// upDone, if not nil, reports podman-compose's exit; a failure ends the wait.
func pollAllHealthy(ctx context.Context, c *config, app *benchApp, proj string, t0 time.Time, upDone chan error) (time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Duration
	at := map[string]time.Duration{}
	for _, n := range app.Order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := waitHealthy(ctx, c, pcContainer(proj, n)); err != nil {
				cancel(fmt.Errorf("waiting for %s: %w", n, err))
				return
			}
			mu.Lock()
			at[n] = time.Since(t0)
			last = max(last, at[n])
			mu.Unlock()
		}()
	}
	if c.trace {
		defer func() { traceHealthy(app, proj, at, "") }()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case err := <-upDone:
		// Re-deliver for the caller, and fail only if up failed.
		upDone <- err
		if err != nil {
			cancel(fmt.Errorf("podman-compose up -d failed: %w", err))
		}
		<-allDone
	}
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return last, nil
}

// waitHealthy polls `podman healthcheck run ctr` until it reports healthy.
// While the container does not exist yet it polls less often, so that the
// bench's own podman processes load the machine less.
func waitHealthy(ctx context.Context, c *config, ctr string) error {
	var lastOut string
	for {
		out, err := exec.CommandContext(ctx, "podman", "healthcheck", "run", ctr).CombinedOutput()
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last healthcheck output: %s)", context.Cause(ctx), strings.TrimSpace(lastOut))
		}
		s := strings.TrimSpace(string(out))
		if err == nil && (s == "" || strings.HasSuffix(s, "healthy") && !strings.HasSuffix(s, "unhealthy")) {
			return nil
		}
		lastOut = s
		pause := c.pollPC
		if strings.Contains(s, "no such container") {
			pause = max(pause, 500*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last healthcheck output: %s)", context.Cause(ctx), lastOut)
		case <-time.After(pause):
		}
	}
}

// pcContainer is podman-compose 1.0.3's container name for a service.
func pcContainer(proj, svc string) string { return proj + "_" + svc + "_1" }

func pcDown(ctx context.Context, c *config, proj string) error {
	out, err := exec.CommandContext(ctx, c.podmanCompose, "-p", proj, "-f", c.composeFile, "down", "-v").CombinedOutput()
	if err != nil {
		return fmt.Errorf("podman-compose down: %w\n%s", err, tail(string(out), 20))
	}
	return nil
}

// runGated times `podman-compose up --no-start` followed by starting each
// container once all its dependencies are healthy (independent branches in
// parallel), until all are healthy. It returns that and the create phase.
func runGated(ctx context.Context, c *config, app *benchApp, proj string) (time.Duration, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, c.podmanCompose, "-p", proj, "-f", c.composeFile, "up", "--no-start").CombinedOutput()
	created := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("podman-compose up --no-start: %w\n%s", err, tail(string(out), 40))
	}
	gctx, gcancel := context.WithCancelCause(ctx)
	defer gcancel(nil)
	healthy := map[string]chan struct{}{}
	for _, n := range app.Order {
		healthy[n] = make(chan struct{})
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Duration
	at, startAt := map[string]time.Duration{}, map[string]time.Duration{}
	for _, n := range app.Order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, d := range app.Services[n].Deps {
				select {
				case <-healthy[d]:
				case <-gctx.Done():
					return
				}
			}
			ctr := pcContainer(proj, n)
			mu.Lock()
			startAt[n] = time.Since(t0)
			mu.Unlock()
			if out, err := exec.CommandContext(gctx, "podman", "start", ctr).CombinedOutput(); err != nil {
				gcancel(fmt.Errorf("podman start %s: %w\n%s", ctr, err, out))
				return
			}
			if err := waitHealthy(gctx, c, ctr); err != nil {
				gcancel(fmt.Errorf("waiting for %s: %w", n, err))
				return
			}
			close(healthy[n])
			mu.Lock()
			at[n] = time.Since(t0)
			last = max(last, at[n])
			mu.Unlock()
		}()
	}
	wg.Wait()
	if c.trace {
		var starts []string
		for _, n := range app.Order {
			starts = append(starts, fmt.Sprintf("%s %.2f", n, startAt[n].Seconds()))
		}
		traceHealthy(app, proj, at, "started at: "+strings.Join(starts, ", "))
	}
	if err := context.Cause(gctx); err != nil {
		return 0, 0, err
	}
	if err := pcDown(context.WithoutCancel(ctx), c, proj); err != nil {
		return 0, 0, err
	}
	return last, created, nil
}

// runLimit runs every service alone (`podman run -d`, same image, env,
// volumes and a network alias on a pre-created network) and times it to
// its first passing healthcheck; the limit is the largest sum along a
// dependency chain.
func runLimit(ctx context.Context, c *config, app *benchApp, prefix string) (time.Duration, []string, map[string]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	network := prefix + "_default"
	if _, err := podmanOut(ctx, "network", "create", network); err != nil {
		return 0, nil, nil, err
	}
	single := map[string]time.Duration{}
	for _, n := range app.Order {
		s := app.Services[n]
		ctr := prefix + "-" + n
		args := []string{"run", "-d", "--name", ctr, "--network", network, "--network-alias", n}
		for _, e := range s.Env {
			args = append(args, "-e", e)
		}
		for _, v := range s.Volumes {
			if !strings.HasPrefix(v, "/") && !strings.HasPrefix(v, ".") {
				v = prefix + "_" + v // a named volume, named as Compose does
			}
			args = append(args, "-v", v)
		}
		args = append(args, s.Image)
		args = append(args, s.Command...)
		t0 := time.Now()
		if _, err := podmanOut(ctx, args...); err != nil {
			return 0, nil, nil, err
		}
		var lastOut string
		for {
			out, err := exec.CommandContext(ctx, "podman", append([]string{"exec", ctr}, s.Probe...)...).CombinedOutput()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return 0, nil, nil, fmt.Errorf("%s alone never became healthy: %s", n, strings.TrimSpace(lastOut))
			}
			lastOut = string(out)
			select {
			case <-ctx.Done():
			case <-time.After(c.pollLimit):
			}
		}
		single[n] = time.Since(t0)
		if _, err := podmanOut(ctx, "rm", "-f", "-t", "0", ctr); err != nil {
			return 0, nil, nil, err
		}
	}
	path, sum := app.criticalPath(single)
	return sum, path, single, nil
}

// ---- podman helpers and cleanup ----

func podmanOut(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "podman", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// benchName matches everything the bench creates.
var benchName = regexp.MustCompile(`^(bnout|bnpc|bngate|bnlim)[0-9]+[-_]`)

// cleanAll removes every container, network and volume the bench may have
// left behind (e.g. by an interrupted run).
func cleanAll(ctx context.Context) error { return clean(ctx, benchName) }

// cleanPrefix removes what one round of one variant created.
func cleanPrefix(ctx context.Context, name string) error {
	return clean(ctx, regexp.MustCompile("^"+regexp.QuoteMeta(name)+"[-_]"))
}

func clean(ctx context.Context, re *regexp.Regexp) error {
	list := func(args ...string) ([]string, error) {
		out, err := podmanOut(ctx, args...)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, n := range strings.Fields(out) {
			if re.MatchString(n) {
				names = append(names, n)
			}
		}
		return names, nil
	}
	ctrs, err := list("ps", "-a", "--format", "{{.Names}}")
	if err != nil {
		return err
	}
	if len(ctrs) > 0 {
		if _, err := podmanOut(ctx, append([]string{"rm", "-f", "-t", "0"}, ctrs...)...); err != nil {
			return err
		}
	}
	nets, err := list("network", "ls", "--format", "{{.Name}}")
	if err != nil {
		return err
	}
	if len(nets) > 0 {
		if _, err := podmanOut(ctx, append([]string{"network", "rm", "-f"}, nets...)...); err != nil {
			return err
		}
	}
	vols, err := list("volume", "ls", "--format", "{{.Name}}")
	if err != nil {
		return err
	}
	if len(vols) > 0 {
		if _, err := podmanOut(ctx, append([]string{"volume", "rm", "-f"}, vols...)...); err != nil {
			return err
		}
	}
	return nil
}

// ensureImage builds c.image from c.baseImage plus busybox as /bin/sh,
// unless it exists and was built from the current base image.
func ensureImage(ctx context.Context, c *config, tmp string) error {
	baseID, err := podmanOut(ctx, "image", "inspect", "--format", "{{.Id}}", c.baseImage)
	if err != nil {
		return fmt.Errorf("the demo image is missing; run `outpost demo-image` first: %w", err)
	}
	baseID = strings.TrimSpace(baseID)
	const label = "io.outpost.bench.base"
	if have, err := podmanOut(ctx, "image", "inspect", "--format", "{{index .Labels \""+label+"\"}}", c.image); err == nil && strings.TrimSpace(have) == baseID {
		return nil
	}
	dir := filepath.Join(tmp, "image")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := copyFile(c.busybox, filepath.Join(dir, "sh")); err != nil {
		return fmt.Errorf("copying busybox (apt-get install busybox-static): %w", err)
	}
	cf := fmt.Sprintf("FROM %s\nCOPY sh /bin/sh\nLABEL %s=%s\n", c.baseImage, label, baseID)
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte(cf), 0o644); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "podman", "build", "--pull=never", "-t", c.image, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("building %s: %w\n%s", c.image, err, tail(string(out), 20))
	}
	fmt.Printf("built %s from %s + busybox /bin/sh\n", c.image, c.baseImage)
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ---- report ----

func report(c *config, results, extra map[string][]time.Duration, limitPaths []string) {
	labels := map[string]string{
		vOutpost: "outpost up (returns when all healthy)",
		vPC:      "podman-compose up -d + poll healthchecks",
		vGated:   "podman-compose create + scripted gated start",
		vLimit:   "critical-path limit (sum of singles)",
	}
	fmt.Printf("\n== Time to all healthy, %d rounds (seconds) ==\n", c.rounds)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "variant\tmedian\tmin\tmax\trounds")
	for _, v := range []string{vOutpost, vPC, vGated, vLimit} {
		if len(results[v]) == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%s\n", labels[v], median(results[v]).Seconds(),
			minOf(results[v]).Seconds(), maxOf(results[v]).Seconds(), fmtAll(results[v]))
	}
	tw.Flush()

	if len(extra) > 0 {
		fmt.Println("\ndetails (median / min, seconds):")
		keys := make([]string, 0, len(extra))
		for k := range extra {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "  %s\t%.2f\t%.2f\n", k, median(extra[k]).Seconds(), minOf(extra[k]).Seconds())
		}
		tw.Flush()
	}
	if len(limitPaths) > 0 {
		fmt.Printf("critical path (per round): %s\n", strings.Join(limitPaths, " | "))
	}

	fmt.Println("\n== Ratios ==")
	ratio := func(a, b string, target string) {
		if len(results[a]) == 0 || len(results[b]) == 0 {
			return
		}
		med := median(results[a]).Seconds() / median(results[b]).Seconds()
		mn := minOf(results[a]).Seconds() / minOf(results[b]).Seconds()
		fmt.Printf("%-28s median %.2f×   min %.2f×%s\n", a+" / "+b, med, mn, target)
	}
	target := ""
	if len(results[vOutpost]) > 0 && len(results[vLimit]) > 0 {
		if median(results[vOutpost]).Seconds() <= 1.15*median(results[vLimit]).Seconds() {
			target = "   (target ≤ 1.15×: met)"
		} else {
			target = "   (target ≤ 1.15×: MISSED)"
		}
	}
	ratio(vOutpost, vLimit, target)
	ratio(vPC, vOutpost, "")
	ratio(vGated, vOutpost, "")
	ratio(vPC, vLimit, "")
	ratio(vGated, vLimit, "")
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func maxOf(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func fmtAll(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	return strings.Join(parts, " ")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
