// Command proxy is Outpost's proxy benchmark. In one run it sends the same
// request (GET /1k: a 1 KiB response from a Go backend, the demo image's
// echo role, in a rootless Podman container published on loopback) through
//
//   - embedded: Outpost's embedded Caddy, as `outpost run` serves it (one
//     route, tls off, health-gated upstream source);
//   - standalone: Debian's caddy package (`caddy run --config`) with the
//     equivalent JSON config: the Server header removed and one
//     reverse_proxy to the same published port;
//   - direct: straight to the published port, no proxy;
//
// with wrk at 1 and 32 connections, several rounds interleaving the
// variants, and prints the median requests/s, p50 and p99 latency, the
// proxy process's CPU time per request, and the ratios embedded/standalone
// (target: throughput ≥ 0.95×, p99 overhead ≤ 1 ms). It exits non-zero only when something fails to
// run, never for missing a target. It must run as the user that owns the
// rootless Podman storage; the demo image must be loaded (`outpost
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
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

type config struct {
	outpost        string
	caddy          string
	wrk            string
	dir            string
	duration       time.Duration
	warmup         time.Duration
	conns          []int
	rounds         int
	embeddedPort   int
	standalonePort int
	healthPort     int
	markdown       bool
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-proxy:", err)
		os.Exit(1)
	}
}

func run() error {
	var c config
	var conns string
	flag.StringVar(&c.outpost, "outpost", "./outpost", "outpost binary")
	flag.StringVar(&c.caddy, "caddy", "/usr/bin/caddy", "standalone caddy binary (Debian's caddy package)")
	flag.StringVar(&c.wrk, "wrk", "wrk", "wrk binary")
	flag.StringVar(&c.dir, "dir", "", "working directory for state, configs and logs (default: a new temporary directory)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "wrk duration of each measurement")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "wrk warm-up before each measurement")
	flag.StringVar(&conns, "conns", "1,32", "comma-separated wrk connection counts")
	flag.IntVar(&c.rounds, "rounds", 3, "measurements of each variant, interleaved; the median is reported")
	flag.IntVar(&c.embeddedPort, "embedded-port", 0, "port of the embedded proxy's site (0: a free port)")
	flag.IntVar(&c.standalonePort, "standalone-port", 0, "port of the standalone caddy (0: a free port)")
	flag.IntVar(&c.healthPort, "health-port", 0, "port of the embedded proxy's health listener (0: a free port)")
	flag.BoolVar(&c.markdown, "markdown", false, "also print the results as a Markdown table")
	flag.Parse()
	for _, f := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-conns: %q is not a positive number", f)
		}
		c.conns = append(c.conns, n)
	}
	// Free ports unless given, so that the bench does not collide with
	// the demo (18000, 18443) or tests others run on the machine.
	// The listeners stay open until all are picked, so the three differ.
	var picked []net.Listener
	for _, p := range []*int{&c.embeddedPort, &c.standalonePort, &c.healthPort} {
		if *p == 0 {
			l, err := net.Listen("tcp", ":0")
			if err != nil {
				return fmt.Errorf("picking a free port: %w", err)
			}
			picked = append(picked, l)
			*p = l.Addr().(*net.TCPAddr).Port
		}
	}
	for _, l := range picked {
		l.Close()
	}
	if c.dir == "" {
		dir, err := os.MkdirTemp("", "outpost-bench-proxy-")
		if err != nil {
			return err
		}
		c.dir = dir
		fmt.Fprintln(os.Stderr, "bench-proxy: working in", dir)
	}
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return err
	}
	c.dir = dir
	for _, bin := range []*string{&c.outpost, &c.caddy, &c.wrk} {
		p, err := exec.LookPath(*bin)
		if err != nil {
			return fmt.Errorf("%s not found: %w (make bench-proxy installs wrk and caddy)", *bin, err)
		}
		if *bin, err = filepath.Abs(p); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return bench(ctx, c)
}

const composeTmpl = `# Written by bench/proxy: one Go backend behind the embedded proxy.
name: benchproxy
x-outpost:
  proxy:
    tls: "off"
    sites: [":%d"]
    health_listen: "127.0.0.1:%d"
    routes:
      - {upstream: "backend:8080"}
services:
  backend:
    image: localhost/outpost-demo:latest
    command: ["echo"]
    environment:
      PORTS: "8080"
    healthcheck:
      test: ["CMD", "/outpost", "demo-role", "probe", "--http", "http://127.0.0.1:8080/health"]
      interval: 10s
      start_period: 10s
      start_interval: 1s
      timeout: 3s
      retries: 3
`

func bench(ctx context.Context, c config) error {
	env := append(os.Environ(),
		"OUTPOST_STATE_DIR="+filepath.Join(c.dir, "state"),
		"OUTPOST_RUNTIME_DIR="+filepath.Join(c.dir, "run"))
	compose := filepath.Join(c.dir, "compose.yml")
	if err := os.WriteFile(compose, fmt.Appendf(nil, composeTmpl, c.embeddedPort, c.healthPort), 0o644); err != nil {
		return err
	}
	outpost := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, c.outpost, args...)
		cmd.Env, cmd.Dir = env, c.dir
		return cmd
	}

	// (a) Outpost's daemon with the embedded proxy.
	logf, err := os.Create(filepath.Join(c.dir, "outpost-run.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	daemon := exec.Command(c.outpost, "run", "-f", compose)
	daemon.Env, daemon.Dir, daemon.Stdout, daemon.Stderr = env, c.dir, logf, logf
	if err := daemon.Start(); err != nil {
		return fmt.Errorf("starting outpost run: %w", err)
	}
	defer func() {
		_ = daemon.Process.Signal(syscall.SIGTERM)
		_ = daemon.Wait()
		down := outpost("down", "--name", "benchproxy")
		down.Stdout, down.Stderr = io.Discard, io.Discard
		_ = down.Run()
	}()
	embedded := fmt.Sprintf("http://127.0.0.1:%d/1k", c.embeddedPort)
	if err := waitOK(ctx, embedded, 5*time.Minute); err != nil {
		return fmt.Errorf("the embedded proxy did not serve %s: %w (see %s)", embedded, err, logf.Name())
	}

	// The backend's published port, from the route table.
	out, err := outpost("proxy", "routes", "--json").Output()
	if err != nil {
		return fmt.Errorf("outpost proxy routes: %w", err)
	}
	dial, err := backendDial(out)
	if err != nil {
		return err
	}
	direct := "http://" + dial + "/1k"

	// (b) Standalone Caddy with the equivalent config.
	cfgPath := filepath.Join(c.dir, "caddy-standalone.json")
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(c.dir, "caddy-standalone")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"bench": map[string]any{
			"listen":          []string{fmt.Sprintf(":%d", c.standalonePort)},
			"protocols":       []string{"h1", "h2"},
			"automatic_https": map[string]any{"disable": true},
			// What the embedded proxy's route does: remove the Server
			// header (x-outpost routes always do) and proxy.
			"routes": []any{map[string]any{"handle": []any{
				map[string]any{"handler": "headers", "response": map[string]any{"delete": []string{"Server"}, "deferred": true}},
				map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": dial}}},
			}}},
		}}}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		return err
	}
	caddyLog, err := os.Create(filepath.Join(c.dir, "caddy-standalone.log"))
	if err != nil {
		return err
	}
	defer caddyLog.Close()
	caddy := exec.Command(c.caddy, "run", "--config", cfgPath)
	caddy.Dir, caddy.Stdout, caddy.Stderr = c.dir, caddyLog, caddyLog
	caddy.Env = append(os.Environ(), "XDG_DATA_HOME="+filepath.Join(c.dir, "caddy-data"), "XDG_CONFIG_HOME="+filepath.Join(c.dir, "caddy-config"))
	if err := caddy.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.caddy, err)
	}
	defer func() {
		_ = caddy.Process.Signal(syscall.SIGTERM)
		_ = caddy.Wait()
	}()
	standalone := fmt.Sprintf("http://127.0.0.1:%d/1k", c.standalonePort)
	if err := waitOK(ctx, standalone, time.Minute); err != nil {
		return fmt.Errorf("standalone caddy did not serve %s: %w (see %s)", standalone, err, caddyLog.Name())
	}
	version, _ := exec.Command(c.caddy, "version").Output()

	// pid is the proxy process whose CPU time a variant is charged (the
	// whole Outpost daemon for embedded); 0 for direct.
	targets := []struct {
		name, url string
		pid       int
	}{
		{"direct", direct, 0}, {"standalone", standalone, caddy.Process.Pid}, {"embedded", embedded, daemon.Process.Pid},
	}
	// Rounds interleave the variants, so that load from elsewhere on the
	// machine hits them alike; each variant's median round is reported.
	all := map[string]map[int][]result{}
	for _, n := range c.conns {
		for _, t := range targets {
			if _, err := runWrk(ctx, c.wrk, t.url, n, c.warmup); err != nil {
				return err
			}
		}
		for round := 1; round <= c.rounds; round++ {
			for _, t := range targets {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				cpu0 := procCPU(t.pid)
				r, err := runWrk(ctx, c.wrk, t.url, n, c.duration)
				if err != nil {
					return err
				}
				if t.pid != 0 && r.requests > 0 {
					r.cpuPerReq = (procCPU(t.pid) - cpu0) / time.Duration(r.requests)
				}
				if all[t.name] == nil {
					all[t.name] = map[int][]result{}
				}
				all[t.name][n] = append(all[t.name][n], r)
				fmt.Fprintf(os.Stderr, "round %d  %-10s c=%-3d %10.0f req/s  p50 %-9s p99 %-9s cpu/req %s\n", round, t.name, n, r.rps, fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.cpuPerReq))
			}
		}
	}
	results := map[string]map[int]result{}
	for name, byConns := range all {
		results[name] = map[int]result{}
		for n, rs := range byConns {
			results[name][n] = median(rs)
		}
	}
	report(os.Stdout, c, results, strings.TrimSpace(string(version)))
	return nil
}

// median returns the per-field median of rs (each of req/s, p50 and p99
// separately).
func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return result{
		rps:       pick(func(r result) float64 { return r.rps }),
		p50:       time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99:       time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
		cpuPerReq: time.Duration(pick(func(r result) float64 { return float64(r.cpuPerReq) })),
	}
}

// waitOK polls url until it answers 200.
func waitOK(ctx context.Context, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: 3 * time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("not within %s: %w", timeout, last)
}

// backendDial finds the backend's loopback address in `proxy routes --json`.
func backendDial(routesJSON []byte) (string, error) {
	var st struct {
		Routes []struct {
			Upstreams []struct {
				Service string `json:"service"`
				Dial    string `json:"dial"`
			} `json:"upstreams"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(routesJSON, &st); err != nil {
		return "", fmt.Errorf("decoding proxy routes: %w", err)
	}
	for _, r := range st.Routes {
		for _, u := range r.Upstreams {
			if u.Service == "backend" {
				return u.Dial, nil
			}
		}
	}
	return "", errors.New("the route table has no upstream for the backend")
}

// result is one wrk measurement.
type result struct {
	rps      float64
	requests int64
	p50, p99 time.Duration
	// cpuPerReq is the proxy process's CPU time (user+system) per request:
	// what the proxy costs, independent of how much CPU other processes
	// on the machine leave it.
	cpuPerReq time.Duration
}

// procCPU returns a process's user+system CPU time so far (0 for pid 0 or
// when unreadable).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime and stime are fields 14 and 15, in clock ticks.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks
}

// runWrk runs wrk with n connections (one thread per 16 connections, at
// least one, at most two: the machine has two cores) for d.
func runWrk(ctx context.Context, wrk, url string, n int, d time.Duration) (result, error) {
	threads := min(max(1, n/16), 2)
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(n), "-d", fmt.Sprintf("%ds", secs), "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return result{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return r, nil
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reReqs    = regexp.MustCompile(`(\d+) requests in`)
	rePct     = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	reSockErr = regexp.MustCompile(`Socket errors:.*`)
)

// parseWrk reads requests/s and the 50th and 99th latency percentiles
// from wrk --latency output; errors or non-2xx answers fail the run.
func parseWrk(out string) (result, error) {
	var r result
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no Requests/sec in wrk output")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reReqs.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, p := range rePct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]
		d := time.Duration(v * float64(unit))
		if p[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		return r, errors.New("no 50%/99% latency in wrk output (run with --latency)")
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		return r, fmt.Errorf("%s non-2xx responses", m[1])
	}
	if m := reSockErr.FindString(out); m != "" {
		return r, fmt.Errorf("wrk reported %s", m)
	}
	return r, nil
}

func report(w io.Writer, c config, res map[string]map[int]result, caddyVersion string) {
	fmt.Fprintf(w, "\nproxy benchmark: GET /1k (1024-byte body), wrk %s per measurement, median of %d interleaved rounds after a %s warm-up; standalone caddy %s\n\n", c.duration, c.rounds, c.warmup, caddyVersion)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "conns\tvariant\treq/s\tp50\tp99\tproxy CPU/req")
	for _, n := range c.conns {
		for _, v := range []string{"direct", "standalone", "embedded"} {
			r := res[v][n]
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%s\n", n, v, r.rps, fmtDur(r.p50), fmtDur(r.p99), cpuCol(r))
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "conns\tembedded/standalone req/s\tp50 ratio\tp99 ratio\tp99 overhead vs standalone\tp99 overhead vs direct\tCPU/req ratio\ttargets (≥0.95×, ≤1ms)")
	for _, n := range c.conns {
		e, s, d := res["embedded"][n], res["standalone"][n], res["direct"][n]
		tput := e.rps / s.rps
		over := e.p99 - s.p99
		verdict := "met"
		if tput < 0.95 || over > time.Millisecond {
			verdict = "missed"
		}
		fmt.Fprintf(tw, "%d\t%.3f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\n", n, tput,
			float64(e.p50)/float64(s.p50), float64(e.p99)/float64(s.p99), fmtDur(over), fmtDur(e.p99-d.p99), cpuRatio(e, s), verdict)
	}
	tw.Flush()
	if c.markdown {
		fmt.Fprintln(w, "\n| conns | variant | req/s | p50 | p99 | proxy CPU/req |\n|---|---|---:|---:|---:|---:|")
		for _, n := range c.conns {
			for _, v := range []string{"direct", "standalone", "embedded"} {
				r := res[v][n]
				fmt.Fprintf(w, "| %d | %s | %.0f | %s | %s | %s |\n", n, v, r.rps, fmtDur(r.p50), fmtDur(r.p99), cpuCol(r))
			}
		}
		fmt.Fprintln(w, "\n| conns | embedded / standalone req/s | p50 ratio | p99 ratio | p99 overhead vs standalone | p99 overhead vs direct | CPU/req ratio |\n|---|---:|---:|---:|---:|---:|---:|")
		for _, n := range c.conns {
			e, s, d := res["embedded"][n], res["standalone"][n], res["direct"][n]
			fmt.Fprintf(w, "| %d | %.3f | %.2f | %.2f | %s | %s | %s |\n", n, e.rps/s.rps,
				float64(e.p50)/float64(s.p50), float64(e.p99)/float64(s.p99), fmtDur(e.p99-s.p99), fmtDur(e.p99-d.p99), cpuRatio(e, s))
		}
	}
}

func cpuCol(r result) string {
	if r.cpuPerReq == 0 {
		return "-"
	}
	return fmtDur(r.cpuPerReq)
}

func cpuRatio(e, s result) string {
	if e.cpuPerReq == 0 || s.cpuPerReq == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(e.cpuPerReq)/float64(s.cpuPerReq))
}

func fmtDur(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	if d < time.Millisecond {
		return fmt.Sprintf("%s%dµs", sign, d.Microseconds())
	}
	return fmt.Sprintf("%s%.2fms", sign, float64(d)/float64(time.Millisecond))
}
