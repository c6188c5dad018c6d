package checks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/demo"
	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/health"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/store"
)

// VolumeRemover deletes a volume. It is deliberately not part of
// engine.Engine; Smoke asserts it on its engine and uses it only for
// volumes labelled as its own test project's.
type VolumeRemover interface {
	RemoveVolume(ctx context.Context, name string) error
}

// ProbeBinary is where the probe helper sits in the probe image (Outpost's
// demo image holds Outpost's own static binary there).
const ProbeBinary = demo.ImageBinary

// Smoke check names.
const (
	CheckIsolation = "isolation"
	CheckPreflight = "preflight"
	CheckHealthy   = "healthy"
	CheckMarkers   = "ready-markers"
	CheckHTTP      = "http"
	CheckConnect   = "connect"
	CheckProxy     = "proxy"
	CheckTeardown  = "teardown"
)

// SmokeOptions configure Smoke.
type SmokeOptions struct {
	// Appliance is the definition to test, usually loaded with a test
	// override (`-f compose.yml -f compose.test.yml`) that shifts host
	// ports. Its name is the production name; it is not touched. Required.
	Appliance *model.Appliance
	// Engine runs the test project. Required. When it also implements
	// VolumeRemover, the test project's volumes are removed at the end.
	Engine engine.Engine
	// Project is the test project's name. Default "<name>-smoke".
	Project string
	// PortOffset is added to every published host port (e.g. 10000 turns
	// 5432 into 15432). Default 0: ports as the definition says.
	PortOffset int
	// StateDir holds the test project's own state database. Default: a
	// temporary directory, removed afterwards. The production state is
	// never written.
	StateDir string
	// ProbeImage is the image holding the probe helper at ProbeBinary.
	// Default demo.DefaultImage, Outpost's demo image.
	ProbeImage string
	// EnsureProbeImage returns an image holding the probe helper at
	// ProbeBinary (`outpost demo-role probe`), used for connection checks
	// from services whose image has neither the helper nor a shell tool to
	// probe with. Called at most once, only when needed; nil means such
	// checks fail saying the helper is missing.
	EnsureProbeImage func(ctx context.Context) (string, error)
	// Timeout bounds bringing the test project up; 0 leaves it to each
	// service's health rules.
	Timeout time.Duration
	// Keep leaves the test project running afterwards (for debugging);
	// the next Smoke run of the same project removes it first.
	Keep bool
	// HTTPTimeout bounds each HTTP request. Default 10s.
	HTTPTimeout time.Duration
	// RootCAs verifies https endpoints; nil uses the system roots.
	RootCAs *x509.CertPool
	// LogLines is how many last log lines of a failing service are shown.
	// Default 30.
	LogLines int
	// Progress receives progress lines; nil discards.
	Progress runtime.ProgressFunc
	// Log receives debug logs; nil discards.
	Log *slog.Logger
}

// smoker carries one Smoke run.
type smoker struct {
	opts       SmokeOptions
	app        *model.Appliance // production definition
	test       *model.Appliance // the test project's definition
	eng        engine.Engine
	rt         *runtime.Runtime
	rep        *Report
	client     *http.Client
	probeImage string
	probeID    string
	probeErr   error
	probeTried bool
	helperSeq  int
}

// Smoke brings the appliance up as a separate test project, checks it and
// tears the test project down, volumes included. It returns an error only
// when the check cannot run at all (bad options, a same-named non-test
// appliance, no state directory); everything about the appliance itself
// is in the report.
func Smoke(ctx context.Context, opts SmokeOptions) (*Report, error) {
	if opts.Appliance == nil || opts.Engine == nil {
		return nil, errors.New("smoke test: an appliance definition and an engine are required")
	}
	if opts.Project == "" {
		opts.Project = opts.Appliance.Name + "-smoke"
	}
	if opts.Project == opts.Appliance.Name {
		return nil, fmt.Errorf("smoke test: the test project must not be named like the appliance (%s); choose another --project", opts.Project)
	}
	if opts.HTTPTimeout <= 0 {
		opts.HTTPTimeout = 10 * time.Second
	}
	if opts.LogLines <= 0 {
		opts.LogLines = 30
	}
	if opts.Progress == nil {
		opts.Progress = func(string, string) {}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ProbeImage == "" {
		opts.ProbeImage = demo.DefaultImage
	}
	test, warnings, err := TestDefinition(opts.Appliance, opts.Project, opts.PortOffset)
	if err != nil {
		return nil, err
	}
	s := &smoker{
		opts: opts, app: opts.Appliance, test: test, eng: opts.Engine,
		probeImage: opts.ProbeImage,
		rep:        &Report{Kind: KindSmoke, Appliance: opts.Appliance.Name, Project: opts.Project, Started: time.Now()},
		client: &http.Client{
			Timeout: opts.HTTPTimeout,
			Transport: &http.Transport{
				Proxy:             nil,
				DisableKeepAlives: true,
				TLSClientConfig:   &tls.Config{RootCAs: opts.RootCAs},
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	for _, w := range warnings {
		s.rep.add(Result{Subject: opts.Project, Check: CheckIsolation, Status: Warn, Detail: w})
	}
	if err := s.ensureTestProject(ctx); err != nil {
		return nil, err
	}
	stateDir := opts.StateDir
	if stateDir == "" {
		d, err := os.MkdirTemp("", "outpost-smoke-")
		if err != nil {
			return nil, fmt.Errorf("smoke test: creating a state directory: %w (set TMPDIR)", err)
		}
		defer os.RemoveAll(d)
		stateDir = d
	}
	st, err := store.Open(ctx, filepath.Join(stateDir, "smoke.db"), store.WithLogger(opts.Log))
	if err != nil {
		return nil, fmt.Errorf("smoke test: opening its state database in %s: %w", stateDir, err)
	}
	defer st.Close()
	s.rt = runtime.New(opts.Engine, st, opts.Log)
	s.rt.SetProxyNeeds(proxyNeeds(stateDir, s))

	// A previous run kept (or interrupted) leaves its project behind.
	if err := s.teardown(ctx, false); err != nil {
		return nil, fmt.Errorf("smoke test: removing the leftovers of an earlier run of %s: %w", opts.Project, err)
	}
	stopProxy := s.run(ctx, stateDir)
	// With --keep the containers stay, but the proxy lives only as long
	// as this process.
	defer func() {
		if stopProxy != nil {
			stopProxy()
		}
	}()
	if opts.Keep {
		s.rep.add(Result{Subject: opts.Project, Check: CheckTeardown, Status: Skip,
			Detail: fmt.Sprintf("kept running (--keep); the next `outpost check smoke` removes it, or remove its containers, networks and volumes labelled io.outpost.appliance=%s", opts.Project)})
	} else {
		start := time.Now()
		if stopProxy != nil {
			stopProxy()
			stopProxy = nil
		}
		// Tear down even when ctx was cancelled (Ctrl-C) so nothing is left.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		err := s.teardown(tctx, true)
		cancel()
		res := Result{Subject: opts.Project, Check: CheckTeardown, Status: Pass, Duration: time.Since(start),
			Detail: "test containers, networks and volumes removed"}
		if err != nil {
			res.Status, res.Detail = Fail, fmt.Sprintf("tearing down %s: %v; remove what is labelled io.outpost.appliance=%s by hand", opts.Project, err, opts.Project)
		}
		s.rep.add(res)
	}
	s.rep.finish()
	return s.rep, nil
}

// TestDefinition derives the test project's definition from app: named
// project, every volume and network renamed into the project (external and
// explicitly named ones too, so production data is never mounted), every
// service, container and volume labelled engine.LabelTest=project, and
// host ports shifted by portOffset. warnings say what could still be shared
// with production (writable bind mounts).
func TestDefinition(app *model.Appliance, project string, portOffset int) (*model.Appliance, []string, error) {
	raw, err := json.Marshal(app)
	if err != nil {
		return nil, nil, fmt.Errorf("copying the definition: %w", err)
	}
	var t model.Appliance
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, nil, fmt.Errorf("copying the definition: %w", err)
	}
	t.Name = project
	var warnings []string
	for _, key := range sortedMapKeys(t.Volumes) {
		v := t.Volumes[key]
		want := project + "_" + key
		if v.External || v.Name != app.Name+"_"+key {
			warnings = append(warnings, fmt.Sprintf("volume %s (%s) is replaced by the empty test volume %s", key, v.Name, want))
		}
		v.Name, v.External = want, false
		if v.Labels == nil {
			v.Labels = map[string]string{}
		}
		v.Labels[engine.LabelTest] = project
	}
	if p := t.Proxy; p != nil && portOffset != 0 {
		if p.Caddyfile != "" {
			warnings = append(warnings, "--port-offset does not move the listeners of the proxy's Caddyfile; give the test ports in the test override (e.g. through {$VAR} placeholders)")
		}
		for i, site := range p.Sites {
			if p.Sites[i], err = shiftAddress(site, portOffset); err != nil {
				return nil, nil, fmt.Errorf("smoke test: x-outpost.proxy.sites: %w", err)
			}
		}
		hl := p.HealthListen
		if hl == "" {
			hl = "127.0.0.1:2020"
		}
		if p.HealthListen, err = shiftAddress(hl, portOffset); err != nil {
			return nil, nil, fmt.Errorf("smoke test: x-outpost.proxy.health_listen: %w", err)
		}
	}
	for _, key := range sortedMapKeys(t.Networks) {
		n := t.Networks[key]
		n.Name, n.External = project+"_"+key, false
	}
	for _, name := range t.ServiceNames() {
		svc := t.Services[name]
		if svc.Labels == nil {
			svc.Labels = map[string]string{}
		}
		svc.Labels[engine.LabelTest] = project
		for i := range svc.Ports {
			p := &svc.Ports[i]
			if p.HostPort == 0 || portOffset == 0 {
				continue
			}
			n := int(p.HostPort) + portOffset
			if n < 1 || n > 65535 {
				return nil, nil, fmt.Errorf("smoke test: --port-offset %d moves %s's host port %d outside 1-65535", portOffset, name, p.HostPort)
			}
			p.HostPort = uint16(n)
		}
		for _, m := range svc.Mounts {
			if m.Type == model.MountBind && !m.ReadOnly {
				warnings = append(warnings, fmt.Sprintf("service %s bind-mounts %s read-write: the test project shares it with production (mount it :ro or override it in the test file)", name, m.Source))
			}
		}
	}
	return &t, warnings, nil
}

func sortedMapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ensureTestProject refuses to run when something named like the test
// project exists that Smoke did not create (it would be torn down).
func (s *smoker) ensureTestProject(ctx context.Context) error {
	p := s.opts.Project
	cs, err := s.eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: p})
	if err != nil {
		return fmt.Errorf("smoke test: listing containers of %s: %w", p, err)
	}
	for _, c := range cs {
		if c.Labels[engine.LabelTest] != p {
			return fmt.Errorf("smoke test: container %s belongs to an appliance named %s that is not a smoke-test project; choose another --project", c.Name, p)
		}
	}
	vs, err := s.eng.ListVolumes(ctx, map[string]string{engine.LabelAppliance: p})
	if err != nil {
		return fmt.Errorf("smoke test: listing volumes of %s: %w", p, err)
	}
	for _, v := range vs {
		if v.Labels[engine.LabelTest] != p {
			return fmt.Errorf("smoke test: volume %s belongs to an appliance named %s that is not a smoke-test project; choose another --project", v.Name, p)
		}
	}
	return nil
}

// run brings the test project up and runs every check on it. It returns
// the function stopping the test project's proxy, nil when none runs.
func (s *smoker) run(ctx context.Context, stateDir string) (stopProxy func()) {
	start := time.Now()
	first := len(s.rep.Results)
	up, err := s.rt.Up(ctx, s.test, runtime.UpOptions{Timeout: s.opts.Timeout, Progress: s.opts.Progress, Operation: model.JobInstall})
	healthy := map[string]bool{}
	if err != nil {
		s.upFailed(ctx, err, time.Since(start), healthy)
	} else {
		for _, st := range up.Services {
			s.healthyResult(st)
			healthy[st.Service] = true
		}
	}
	s.markers(ctx, healthy)
	s.groupByService(first)
	if s.test.Proxy != nil {
		if err != nil {
			s.rep.add(Result{Subject: "proxy", Check: CheckProxy, Status: Skip, Detail: "not started: the appliance did not come up"})
		} else {
			stopProxy = s.startProxy(ctx, stateDir)
		}
	}
	var checks []model.SmokeCheck
	if s.test.Checks != nil {
		checks = s.test.Checks.Smoke
	}
	for _, c := range checks {
		if err := ctx.Err(); err != nil {
			s.rep.add(Result{Subject: c.Name, Check: checkKind(c), Status: Skip, Detail: "cancelled"})
			continue
		}
		if c.From != "" && !healthy[c.From] {
			s.rep.add(Result{Subject: c.Name, Check: checkKind(c), Status: Skip, Detail: fmt.Sprintf("service %s is not up", c.From)})
			continue
		}
		if err != nil && c.From == "" {
			s.rep.add(Result{Subject: c.Name, Check: checkKind(c), Status: Skip, Detail: "the appliance did not come up"})
			continue
		}
		s.smokeCheck(ctx, c)
	}
	return stopProxy
}

// groupByService orders the results from index first on by service, each
// service's checks together (healthy, then ready markers); results about
// the whole project stay first.
func (s *smoker) groupByService(first int) {
	order := map[string]int{}
	for i, n := range s.test.ServiceNames() {
		order[n] = i + 1
	}
	rs := s.rep.Results[first:]
	sort.SliceStable(rs, func(i, j int) bool { return order[rs[i].Subject] < order[rs[j].Subject] })
}

func checkKind(c model.SmokeCheck) string {
	if c.URL != "" {
		return CheckHTTP
	}
	return CheckConnect
}

// healthBudget is how long a service may take from start to healthy: its
// x-outpost.checks.health_budgets entry, else what its health rules allow.
func (s *smoker) healthBudget(name string) (time.Duration, string) {
	if c := s.test.Checks; c != nil {
		if b, ok := c.HealthBudgets[name]; ok {
			return b, "x-outpost.checks.health_budgets"
		}
	}
	sp := health.FromService(s.test.Services[name])
	if sp == nil {
		return 0, ""
	}
	return sp.StartPeriod + time.Duration(sp.Retries)*(sp.Interval+sp.Timeout), "start_period + retries × (interval + timeout)"
}

func (s *smoker) healthyResult(st runtime.ServiceState) {
	res := Result{Subject: st.Service, Check: CheckHealthy, Status: Pass}
	if st.Health == health.None {
		res.Status, res.Detail = Warn, "running, but it has no healthcheck or ready marker to prove it works; add a healthcheck"
		s.rep.add(res)
		return
	}
	took := st.HealthyAt.Sub(st.StartedAt)
	if st.HealthyAt.IsZero() || st.StartedAt.IsZero() || took < 0 {
		took = 0
	}
	res.Duration = took
	budget, from := s.healthBudget(st.Service)
	res.Detail = fmt.Sprintf("healthy %s after start (budget %s: %s)", took.Round(100*time.Millisecond), budget, from)
	if budget > 0 && took > budget {
		res.Status = Fail
		res.Detail = fmt.Sprintf("healthy only %s after start, over its budget %s (%s)", took.Round(100*time.Millisecond), budget, from)
	}
	s.rep.add(res)
}

// upFailed reports a failed start: the failing service with its probe
// output and logs, the services that did come up, and those never reached.
func (s *smoker) upFailed(ctx context.Context, err error, took time.Duration, healthy map[string]bool) {
	var pre *runtime.PreflightError
	if errors.As(err, &pre) {
		s.rep.add(Result{Subject: s.opts.Project, Check: CheckPreflight, Status: Fail, Duration: took,
			Detail: "the test project could not be created; if a port is in use, shift the test ports (-f compose.test.yml or --port-offset)", Notes: pre.Problems})
		for _, n := range s.test.ServiceNames() {
			s.rep.add(Result{Subject: n, Check: CheckHealthy, Status: Skip, Detail: "not started: preflight failed"})
		}
		return
	}
	var se *runtime.ServiceError
	failed := ""
	if errors.As(err, &se) {
		failed = se.Service
		var notes []string
		if se.LastProbe != "" {
			notes = append(notes, "last health check: "+se.LastProbe)
		}
		logs := s.lastLogs(ctx, se.Service)
		if logs == "" {
			logs = se.Logs
		}
		if logs != "" {
			notes = append(notes, "last log lines:\n"+indentLines(logs, "  "))
		}
		s.rep.add(Result{Subject: se.Service, Check: CheckHealthy, Status: Fail, Duration: took,
			Detail: fmt.Sprintf("%s %s", se.Service, se.Reason), Notes: notes})
	} else {
		detail := "bringing the test project up: " + err.Error()
		if ctx.Err() != nil {
			detail = "interrupted before the test project was healthy"
		}
		s.rep.add(Result{Subject: s.opts.Project, Check: CheckHealthy, Status: Fail, Duration: took, Detail: detail})
	}
	states, serr := s.rt.Status(context.WithoutCancel(ctx), s.test)
	if serr != nil {
		return
	}
	for _, st := range states {
		if st.Service == failed {
			continue
		}
		if st.State == "running" && (st.Health == health.Healthy || (st.Health == health.None && health.FromService(s.test.Services[st.Service]) == nil)) {
			s.healthyResult(st)
			healthy[st.Service] = true
			continue
		}
		detail := "not healthy: the start stopped"
		if failed != "" {
			detail = fmt.Sprintf("not reached (state %s, health %s): %s failed first", st.State, st.Health, failed)
		}
		s.rep.add(Result{Subject: st.Service, Check: CheckHealthy, Status: Skip, Detail: detail})
	}
}

// markers checks every ready marker of the healthy services.
func (s *smoker) markers(ctx context.Context, healthy map[string]bool) {
	for _, name := range s.test.ServiceNames() {
		svc := s.test.Services[name]
		if len(svc.ReadyMarkers) == 0 {
			continue
		}
		if !healthy[name] {
			s.rep.add(Result{Subject: name, Check: CheckMarkers, Status: Skip, Detail: "service is not up"})
			continue
		}
		var missing, errs []string
		for _, m := range svc.ReadyMarkers {
			ok, err := s.eng.PathExists(ctx, runtime.ContainerName(s.test.Name, name), m)
			switch {
			case err != nil:
				errs = append(errs, fmt.Sprintf("%s: %v", m, err))
			case !ok:
				missing = append(missing, m)
			}
		}
		res := Result{Subject: name, Check: CheckMarkers, Status: Pass, Detail: strings.Join(svc.ReadyMarkers, ", ") + " exist"}
		if len(missing)+len(errs) > 0 {
			res.Status = Fail
			res.Detail = fmt.Sprintf("ready marker(s) missing in %s: %s", name, strings.Join(append(missing, errs...), ", "))
			if logs := s.lastLogs(ctx, name); logs != "" {
				res.Notes = []string{"last log lines:\n" + indentLines(logs, "  ")}
			}
		}
		s.rep.add(res)
	}
}

// fromAttempts is how often a check from inside a service is tried, and
// fromRetryDelay the pause between tries (a variable for tests).
const fromAttempts = 4

var fromRetryDelay = 2 * time.Second

// smokeCheck runs one declared check.
func (s *smoker) smokeCheck(ctx context.Context, c model.SmokeCheck) {
	start := time.Now()
	res := Result{Subject: c.Name, Check: checkKind(c)}
	var ok bool
	var detail string
	var notes []string
	switch {
	case c.From != "":
		// Retry: a connection refused fails fast each time, while the
		// network's DNS may need a moment after containers start (seen
		// with aardvark-dns 1.4).
		for attempt := 1; ; attempt++ {
			ok, detail, notes = s.fromInside(ctx, c)
			if ok || attempt == fromAttempts || ctx.Err() != nil {
				if ok && attempt > 1 {
					notes = append(notes, fmt.Sprintf("succeeded on attempt %d of %d", attempt, fromAttempts))
				}
				if !ok && attempt > 1 {
					notes = append(notes, fmt.Sprintf("failed %d attempts over %s", attempt, time.Since(start).Round(100*time.Millisecond)))
				}
				break
			}
			s.opts.Log.Debug("smoke check failed; retrying", "check", c.Name, "attempt", attempt, "detail", detail)
			select {
			case <-ctx.Done():
			case <-time.After(fromRetryDelay):
			}
		}
	case c.URL != "":
		ok, detail = s.httpFromHost(ctx, c.URL, c.Status)
	default:
		ok, detail = tcpFromHost(ctx, c.Target)
	}
	res.Duration = time.Since(start)
	res.Detail, res.Notes = detail, notes
	res.Status = Pass
	if !ok {
		res.Status = Fail
		for _, svc := range s.servicesBehind(c) {
			if logs := s.lastLogs(ctx, svc); logs != "" {
				res.Notes = append(res.Notes, fmt.Sprintf("last log lines of %s:\n%s", svc, indentLines(logs, "  ")))
			}
		}
	}
	s.rep.add(res)
}

// servicesBehind names the services a failing check concerns: the target
// service (by name or alias, or by published port for host URLs), then
// the source.
func (s *smoker) servicesBehind(c model.SmokeCheck) []string {
	var host, port string
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err == nil {
			host, port = u.Hostname(), u.Port()
		}
	} else {
		host, port, _ = net.SplitHostPort(c.Target)
	}
	var out []string
	for _, name := range s.test.ServiceNames() {
		svc := s.test.Services[name]
		match := host == name
		for _, aliases := range svc.Networks {
			for _, a := range aliases {
				match = match || a == host
			}
		}
		if c.From == "" {
			for _, p := range svc.Ports {
				match = match || (port != "" && strconv.Itoa(int(p.HostPort)) == port)
			}
		}
		if match {
			out = append(out, name)
		}
	}
	if c.From != "" && !contains(out, c.From) {
		out = append(out, c.From)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// httpFromHost GETs rawURL from this host, retrying briefly (a service
// just turned healthy may still be warming a route).
func (s *smoker) httpFromHost(ctx context.Context, rawURL string, want int) (bool, string) {
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return false, last
			case <-time.After(time.Second):
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return false, fmt.Sprintf("GET %s: %v", rawURL, err)
		}
		resp, err := s.client.Do(req)
		if err != nil {
			last = fmt.Sprintf("GET %s: %v", rawURL, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if statusOK(resp.StatusCode, want) {
			return true, fmt.Sprintf("GET %s → %d", rawURL, resp.StatusCode)
		}
		last = fmt.Sprintf("GET %s → %d, want %s; body: %q", rawURL, resp.StatusCode, wantStatus(want), strings.TrimSpace(string(body)))
	}
	return false, last
}

func statusOK(got, want int) bool {
	if want == 0 {
		return got >= 200 && got < 300
	}
	return got == want
}

func wantStatus(want int) string {
	if want == 0 {
		return "2xx"
	}
	return strconv.Itoa(want)
}

// tcpFromHost connects to target from this host.
func tcpFromHost(ctx context.Context, target string) (bool, string) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return false, fmt.Sprintf("connecting to %s from the host: %v", target, err)
	}
	c.Close()
	return true, fmt.Sprintf("%s accepts connections from the host", target)
}

// lastLogs returns the last log lines of a service's test container.
func (s *smoker) lastLogs(ctx context.Context, service string) string {
	var b strings.Builder
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.eng.Logs(lctx, runtime.ContainerName(s.test.Name, service), engine.LogOptions{Tail: s.opts.LogLines}, &b); err != nil {
		return ""
	}
	return strings.TrimRight(b.String(), "\n")
}

func indentLines(s, prefix string) string {
	return prefix + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+prefix)
}

// teardown removes the test project: containers (stopped in reverse
// dependency order first when graceful), networks, and the volumes that
// carry the project's test label — never anything else.
func (s *smoker) teardown(ctx context.Context, graceful bool) error {
	p := s.opts.Project
	if graceful {
		if err := s.rt.Stop(ctx, s.test, runtime.StopOptions{Progress: s.opts.Progress}); err != nil {
			s.opts.Log.Warn("stopping the test project in order failed; removing it anyway", "project", p, "err", err)
		}
	}
	var errs []error
	cs, err := s.eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: p, engine.LabelTest: p})
	if err != nil {
		return fmt.Errorf("listing test containers: %w", err)
	}
	for _, c := range cs {
		if c.Running {
			if err := s.eng.StopContainer(ctx, c.ID, 5*time.Second); err != nil && !errors.Is(err, engine.ErrNotFound) {
				errs = append(errs, fmt.Errorf("stopping %s: %w", c.Name, err))
			}
		}
		if err := s.eng.RemoveContainer(ctx, c.ID); err != nil && !errors.Is(err, engine.ErrNotFound) {
			errs = append(errs, fmt.Errorf("removing %s: %w", c.Name, err))
		}
	}
	nets, err := s.eng.ListNetworks(ctx, map[string]string{engine.LabelAppliance: p})
	if err != nil {
		return fmt.Errorf("listing test networks: %w", err)
	}
	for _, n := range nets {
		if err := s.eng.RemoveNetwork(ctx, n); err != nil && !errors.Is(err, engine.ErrNotFound) {
			errs = append(errs, fmt.Errorf("removing network %s: %w", n, err))
		}
	}
	vols, err := s.eng.ListVolumes(ctx, map[string]string{engine.LabelAppliance: p, engine.LabelTest: p})
	if err != nil {
		return fmt.Errorf("listing test volumes: %w", err)
	}
	if len(vols) > 0 {
		rm, ok := s.eng.(VolumeRemover)
		if !ok {
			return errors.Join(append(errs, fmt.Errorf("this engine cannot remove volumes; %d test volume(s) of %s are left", len(vols), p))...)
		}
		for _, v := range vols {
			// Belt and braces: only this project's test volumes.
			if v.Labels[engine.LabelTest] != p || v.Labels[engine.LabelAppliance] != p {
				continue
			}
			if err := rm.RemoveVolume(ctx, v.Name); err != nil && !errors.Is(err, engine.ErrNotFound) {
				errs = append(errs, fmt.Errorf("removing test volume %s: %w", v.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}
