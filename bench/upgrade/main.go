// Command upgrade is Outpost's upgrade benchmark. Under constant load (a
// steady request rate with a bounded number of requests in flight, every
// answer checked for its status and for the version its body names) it
// upgrades a web service whose environment changes, so a new container
// is needed — the demo image's echo role answering its $NAME, v1 or v2 —
// and counts the failed requests (connection errors, non-2xx answers,
// wrong bodies) and the maximum and 99th-percentile latency around the
// upgrade, in the same run, for
//
//   - outpost: the service behind the embedded proxy of `outpost run`,
//     upgraded with `outpost upgrade -f v2.yml` (through the daemon);
//   - outpost-fixed: the same service also publishing a fixed host port:
//     the load goes through the proxy, and a lighter second load straight
//     to the fixed port measures how long that port is unavailable;
//   - podman-compose: `podman-compose up -d --force-recreate` with the
//     changed file, the load on the published port;
//   - pc-caddy: the same behind Debian's standalone caddy (reverse_proxy
//     to the published port), as Tale runs Caddy in front of Compose.
//
// Several rounds alternate v1 → v2 and v2 → v1, rotating the variants'
// order. It prints each variant's failed and total requests, the maximum
// latency, p99, the upgrade command's duration and the time until only
// the new version answered, and the ratios against Outpost. The target:
// no failed request for Outpost. It exits non-zero only when something
// fails to run, never for missing a target. It must run as the user that
// owns the rootless Podman storage, with the demo image loaded (`outpost
// demo-image`). See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type config struct {
	outpost, podmanCompose, caddy string
	dir                           string
	rounds                        int
	rate, conc                    int
	sideRate                      int
	method                        string
	pre, settle, maxTail          time.Duration
	caddyTry                      time.Duration
	variants                      []string
	markdown                      bool
}

var allVariants = []string{"outpost", "outpost-fixed", "podman-compose", "pc-caddy"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-upgrade:", err)
		os.Exit(1)
	}
}

func run() error {
	var c config
	var variants string
	flag.StringVar(&c.outpost, "outpost", "./outpost", "outpost binary")
	flag.StringVar(&c.podmanCompose, "podman-compose", "podman-compose", "podman-compose binary")
	flag.StringVar(&c.caddy, "caddy", "/usr/bin/caddy", "standalone caddy binary (Debian's caddy package)")
	flag.StringVar(&c.dir, "dir", "", "working directory for state, files and logs (default: a new temporary directory)")
	flag.IntVar(&c.rounds, "rounds", 4, "upgrades of each variant (v1 → v2, v2 → v1, ...)")
	flag.IntVar(&c.rate, "rate", 200, "requests per second")
	flag.IntVar(&c.conc, "conc", 16, "requests in flight at most")
	flag.IntVar(&c.sideRate, "side-rate", 50, "requests per second of outpost-fixed's second load, straight to the fixed host port")
	flag.StringVar(&c.method, "method", "GET", "HTTP method of the requests (POST: clients never retry a request on a broken keep-alive connection)")
	flag.DurationVar(&c.pre, "pre", 2*time.Second, "load before each upgrade command starts")
	flag.DurationVar(&c.settle, "settle", 2*time.Second, "after the command returns, load until only the new version answered for this long")
	flag.DurationVar(&c.maxTail, "max-tail", time.Minute, "give up waiting for the new version this long after the command returned")
	flag.DurationVar(&c.caddyTry, "caddy-try", 0, "pc-caddy's reverse_proxy lb_try_duration (0: Caddy's default, no retries)")
	flag.StringVar(&variants, "variants", strings.Join(allVariants, ","), "comma-separated subset of "+strings.Join(allVariants, ","))
	flag.BoolVar(&c.markdown, "markdown", false, "also print the results as Markdown tables")
	flag.Parse()
	for _, v := range strings.Split(variants, ",") {
		v = strings.TrimSpace(v)
		if !contains(allVariants, v) {
			return fmt.Errorf("-variants: unknown variant %q (known: %s)", v, strings.Join(allVariants, ", "))
		}
		c.variants = append(c.variants, v)
	}
	if c.rounds < 1 || c.rate < 1 || c.conc < 1 || c.sideRate < 1 {
		return errors.New("-rounds, -rate, -conc and -side-rate must be positive")
	}
	if c.dir == "" {
		dir, err := os.MkdirTemp("", "outpost-bench-upgrade-")
		if err != nil {
			return err
		}
		c.dir = dir
		fmt.Fprintln(os.Stderr, "bench-upgrade: working in", dir)
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return err
	}
	c.dir = dir
	for _, bin := range []*string{&c.outpost, &c.podmanCompose, &c.caddy} {
		p, err := exec.LookPath(*bin)
		if err != nil {
			return fmt.Errorf("%s not found: %w (make bench-upgrade installs podman-compose and caddy)", *bin, err)
		}
		if *bin, err = filepath.Abs(p); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench(ctx, c)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// freePorts picks n distinct free TCP ports (the listeners stay open until
// all are picked), so the bench collides neither with the demo (18000,
// 18443) nor with tests running on the machine.
func freePorts(n int) ([]int, error) {
	var out []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// variant is one way of running and upgrading the service.
type variant struct {
	name string
	// url is where the load goes; side, when set, gets the second load.
	url, side string
	// upgrade runs the command that moves the service to version to.
	upgrade func(ctx context.Context, to string) error
	// note is printed with the results (e.g. the plan Outpost printed).
	note string
}

func bench(ctx context.Context, c config) error {
	loadBefore := loadavg()
	var vs []*variant
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	for _, name := range c.variants {
		v, cleanup, err := setup(ctx, c, name)
		if cleanup != nil {
			cleanups = append(cleanups, cleanup)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		vs = append(vs, v)
	}
	results := map[string][]stats{}
	for round := 1; round <= c.rounds; round++ {
		from, to := "v1", "v2"
		if round%2 == 0 {
			from, to = to, from
		}
		// The order rotates, so a slow moment of the machine does not
		// always hit the same variant.
		for i := range vs {
			v := vs[(i+round-1)%len(vs)]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			main, side, err := measure(ctx, c, v, from, to)
			if err != nil {
				return fmt.Errorf("round %d, %s (%s → %s): %w", round, v.name, from, to, err)
			}
			results[v.name] = append(results[v.name], main)
			fmt.Fprintf(os.Stderr, "round %d  %-15s %s → %s  %s\n", round, v.name, from, to, main.line())
			if side != nil {
				results[v.name+":port"] = append(results[v.name+":port"], *side)
				fmt.Fprintf(os.Stderr, "round %d  %-15s %s → %s  %s\n", round, v.name+":port", from, to, side.line())
			}
		}
	}
	report(os.Stdout, c, vs, results, loadBefore, loadavg())
	return nil
}

// measure runs the load on v, upgrades it from one version to the other
// and waits until only the new version answers.
func measure(ctx context.Context, c config, v *variant, from, to string) (stats, *stats, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loaders := []*loader{newLoader(v.url, c.method, c.rate, c.conc, from, to)}
	if v.side != "" {
		loaders = append(loaders, newLoader(v.side, c.method, c.sideRate, 2, from, to))
	}
	done := make(chan struct{})
	for _, l := range loaders {
		go func() { l.run(lctx); done <- struct{}{} }()
	}
	stopLoad := func() {
		cancel()
		for range loaders {
			<-done
		}
	}
	select {
	case <-ctx.Done():
		stopLoad()
		return stats{}, nil, ctx.Err()
	case <-time.After(c.pre):
	}
	start := time.Now()
	err := v.upgrade(ctx, to)
	cmd := time.Since(start)
	if err != nil {
		stopLoad()
		return stats{}, nil, err
	}
	end := time.Now()
	for {
		now := time.Now()
		settled := now.Sub(end) >= c.settle
		for _, l := range loaders {
			settled = settled && l.settledSince(now.Add(-c.settle))
		}
		if settled {
			break
		}
		if now.Sub(end) > c.maxTail {
			stopLoad()
			return stats{}, nil, fmt.Errorf("version %s did not answer alone within %s of the command's end", to, c.maxTail)
		}
		select {
		case <-ctx.Done():
			stopLoad()
			return stats{}, nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	stopLoad()
	main := loaders[0].stats(start, cmd)
	if len(loaders) > 1 {
		side := loaders[1].stats(start, cmd)
		return main, &side, nil
	}
	return main, nil, nil
}

// setup brings variant name up on v1 and returns it with its cleanup.
func setup(ctx context.Context, c config, name string) (*variant, func(), error) {
	dir := filepath.Join(c.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	switch name {
	case "outpost", "outpost-fixed":
		return setupOutpost(ctx, c, name, dir)
	default:
		return setupCompose(ctx, c, name, dir)
	}
}

// outpostCompose is the Outpost variants' definition: %[1]s appliance,
// %[2]s version, %[3]d proxy port, %[4]d health port, %[5]s extra keys of
// the service (the fixed port).
const outpostCompose = `# Written by bench/upgrade.
name: %[1]s
x-outpost:
  version: "%[2]s"
  services:
    app: {role: rotatable}
  proxy:
    tls: "off"
    sites: [":%[3]d"]
    health_listen: "127.0.0.1:%[4]d"
    routes:
      - {upstream: "app:8080"}
services:
  app:
    image: localhost/outpost-demo:latest
    command: ["echo"]
    environment:
      PORTS: "8080"
      NAME: "%[2]s"
%[5]s    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:8080/health"]
      interval: 10s
      start_period: 10s
      start_interval: 1s
      timeout: 3s
      retries: 3
    stop_grace_period: 5s
`

func setupOutpost(ctx context.Context, c config, name, dir string) (*variant, func(), error) {
	app := "bnup" + strings.ReplaceAll(strings.TrimPrefix(name, "outpost"), "-", "")
	if app == "bnup" {
		app = "bnupout"
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, nil, err
	}
	extra := ""
	if name == "outpost-fixed" {
		extra = fmt.Sprintf("    ports: [\"127.0.0.1:%d:8080\"]\n", ports[2])
	}
	for _, ver := range []string{"v1", "v2"} {
		def := fmt.Sprintf(outpostCompose, app, ver, ports[0], ports[1], extra)
		if err := os.WriteFile(filepath.Join(dir, ver+".yml"), []byte(def), 0o644); err != nil {
			return nil, nil, err
		}
	}
	env := append(os.Environ(), "OUTPOST_STATE_DIR="+filepath.Join(dir, "state"), "OUTPOST_RUNTIME_DIR="+filepath.Join(dir, "run"))
	removeLeftovers("io.outpost.appliance="+app, app+"_default")
	logf, err := os.Create(filepath.Join(dir, "outpost-run.log"))
	if err != nil {
		return nil, nil, err
	}
	daemon := exec.Command(c.outpost, "run", "--log-level", "info", "-f", "v1.yml")
	daemon.Env, daemon.Dir, daemon.Stdout, daemon.Stderr = env, dir, logf, logf
	if err := daemon.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("starting outpost run: %w", err)
	}
	cleanup := func() {
		_ = daemon.Process.Signal(syscall.SIGTERM)
		_ = daemon.Wait()
		logf.Close()
		down := exec.Command(c.outpost, "down", "--name", app)
		down.Env, down.Dir = env, dir
		_ = down.Run()
		removeLeftovers("io.outpost.appliance="+app, app+"_default")
	}
	v := &variant{name: name, url: fmt.Sprintf("http://127.0.0.1:%d/version", ports[0])}
	if name == "outpost-fixed" {
		v.side = fmt.Sprintf("http://127.0.0.1:%d/version", ports[2])
	}
	for _, u := range []string{v.url, v.side} {
		if u == "" {
			continue
		}
		if err := waitVersion(ctx, u, "v1", 5*time.Minute); err != nil {
			return nil, cleanup, fmt.Errorf("%s did not answer v1: %w (see %s)", u, err, logf.Name())
		}
	}
	log := filepath.Join(dir, "upgrades.log")
	v.upgrade = func(ctx context.Context, to string) error {
		return runLogged(ctx, log, dir, env, c.outpost, "upgrade", "-f", to+".yml")
	}
	// The plan, as the operator sees it before the first upgrade.
	plan := exec.CommandContext(ctx, c.outpost, "upgrade", "-f", "v2.yml", "--dry-run")
	plan.Env, plan.Dir = env, dir
	out, err := plan.CombinedOutput()
	if err != nil {
		return nil, cleanup, fmt.Errorf("outpost upgrade --dry-run: %w\n%s", err, out)
	}
	v.note = strings.TrimSpace(string(out))
	return v, cleanup, nil
}

// composeFile is the podman-compose variants' definition: %[1]s version,
// %[2]d the published port.
const composeFile = `# Written by bench/upgrade.
services:
  app:
    image: localhost/outpost-demo:latest
    command: ["echo"]
    environment:
      PORTS: "8080"
      NAME: "%[1]s"
    ports: ["127.0.0.1:%[2]d:8080"]
`

func setupCompose(ctx context.Context, c config, name, dir string) (*variant, func(), error) {
	project := "bnuppc"
	if name == "pc-caddy" {
		project = "bnuppcc"
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, nil, err
	}
	for _, ver := range []string{"v1", "v2"} {
		if err := os.WriteFile(filepath.Join(dir, ver+".yml"), fmt.Appendf(nil, composeFile, ver, ports[0]), 0o644); err != nil {
			return nil, nil, err
		}
	}
	removeLeftovers("io.podman.compose.project="+project, project+"_default")
	log := filepath.Join(dir, "podman-compose.log")
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	cleanups = append(cleanups, func() {
		_ = runLogged(context.Background(), log, dir, nil, c.podmanCompose, "-p", project, "-f", "v1.yml", "down")
		removeLeftovers("io.podman.compose.project="+project, project+"_default")
	})
	if err := runLogged(ctx, log, dir, nil, c.podmanCompose, "-p", project, "-f", "v1.yml", "up", "-d"); err != nil {
		return nil, cleanup, err
	}
	v := &variant{name: name, url: fmt.Sprintf("http://127.0.0.1:%d/version", ports[0])}
	// podman-compose 1.0.3 does not compare the definition with the
	// running containers ("TODO: implement check hash label"): plain
	// `up -d` keeps the old container. --force-recreate runs `down`
	// (podman stop -t 1, rm) and then `up`.
	v.upgrade = func(ctx context.Context, to string) error {
		return runLogged(ctx, log, dir, nil, c.podmanCompose, "-p", project, "-f", to+".yml", "up", "-d", "--force-recreate")
	}
	v.note = "podman-compose -p " + project + " -f v2.yml up -d --force-recreate"
	if name == "pc-caddy" {
		url, stop, err := startCaddy(c, dir, fmt.Sprintf("127.0.0.1:%d", ports[0]), ports[1])
		if stop != nil {
			cleanups = append(cleanups, stop)
		}
		if err != nil {
			return nil, cleanup, err
		}
		v.url = url
		v.note += "; standalone caddy reverse_proxy"
		if c.caddyTry > 0 {
			v.note += fmt.Sprintf(" with lb_try_duration %s", c.caddyTry)
		}
	}
	if err := waitVersion(ctx, v.url, "v1", 2*time.Minute); err != nil {
		return nil, cleanup, fmt.Errorf("%s did not answer v1: %w (see %s)", v.url, err, log)
	}
	return v, cleanup, nil
}

// startCaddy runs Debian's caddy on port with one reverse_proxy to dial.
func startCaddy(c config, dir, dial string, port int) (string, func(), error) {
	proxy := map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": dial}}}
	if c.caddyTry > 0 {
		proxy["load_balancing"] = map[string]any{"try_duration": c.caddyTry.String()}
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "caddy")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"bench": map[string]any{
			"listen":          []string{fmt.Sprintf("127.0.0.1:%d", port)},
			"automatic_https": map[string]any{"disable": true},
			"routes":          []any{map[string]any{"handle": []any{proxy}}},
		}}}},
	}
	cfgPath := filepath.Join(dir, "caddy.json")
	if err := writeJSON(cfgPath, cfg); err != nil {
		return "", nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "caddy.log"))
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(c.caddy, "run", "--config", cfgPath)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(dir, "caddy-data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "caddy-config"))
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", nil, fmt.Errorf("starting %s: %w", c.caddy, err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d/version", port), func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	}, nil
}

// runLogged runs a command, appending its output to log; a failure
// carries the output's tail.
func runLogged(ctx context.Context, log, dir string, env []string, bin string, args ...string) error {
	f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "\n$ %s %s  # %s\n", filepath.Base(bin), strings.Join(args, " "), time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var tail strings.Builder
	cmd.Stdout = io.MultiWriter(f, &tail)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		out := tail.String()
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return nil
}

// removeLeftovers removes the containers with label and the networks of
// an earlier interrupted run (bench names only).
func removeLeftovers(label string, networks ...string) {
	out, _ := exec.Command("podman", "ps", "-aq", "--filter", "label="+label).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		_ = exec.Command("podman", append([]string{"rm", "-f", "-t", "1"}, ids...)...).Run()
	}
	for _, n := range networks {
		_ = exec.Command("podman", "network", "rm", "-f", n).Run()
	}
}

// waitVersion polls url until it answers 200 naming version.
func waitVersion(ctx context.Context, url, version string, timeout time.Duration) error {
	l := newLoader(url, "GET", 1, 1, version, version)
	defer l.client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		s := l.do(time.Now())
		if s.outcome == okTo {
			return nil
		}
		last = s.detail
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("not within %s: %s", timeout, last)
}

// loadavg returns the 1, 5 and 15 minute load averages.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
