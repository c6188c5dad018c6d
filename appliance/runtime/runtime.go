// Package runtime executes an appliance definition on a container engine:
// the health-gated start in dependency order (independent branches in
// parallel), the graceful stop in reverse order, and supervision (restarts
// with backoff, restarts of services that stay unhealthy). It records what
// it creates and what happens in the store. It never removes a volume.
package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/health"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/plan"
	"github.com/outpostdev/outpost/appliance/secrets"
	"github.com/outpostdev/outpost/appliance/store"
)

// Runtime runs appliances on one engine with one state store.
type Runtime struct {
	eng    engine.Engine
	st     *store.Store
	log    *slog.Logger
	limits HostLimits

	mu         sync.Mutex
	status     map[string]map[string]*ServiceState // appliance -> service -> state
	listeners  []ServingListener
	proxyNeeds ProxyNeedsFunc
	// secretsDir locates an appliance's secret files (see SetSecretsDir).
	secretsDir func(appliance string) string
}

// SetSecretsDir tells the runtime where an appliance's x-outpost secret
// files live (secrets.Dir below the state directory). Up then injects their
// values itself — into definitions read back from a revision or a snapshot
// too, which hold only markers (secrets.Redact) — and Deployed returns the
// definition with them. Without it, the definitions given must carry the
// values already.
func (r *Runtime) SetSecretsDir(dir func(appliance string) string) {
	r.secretsDir = dir
}

// WithSecrets returns app with its secrets' values injected into the
// services that list them, generating a value that has none yet (once; see
// package secrets). app is not modified. Without SetSecretsDir it returns
// app unchanged.
func (r *Runtime) WithSecrets(app *model.Appliance) (*model.Appliance, error) {
	if r.secretsDir == nil || len(app.Secrets) == 0 {
		return app, nil
	}
	return secrets.Apply(r.secretsDir(app.Name), app)
}

// New returns a Runtime. log may be nil.
func New(eng engine.Engine, st *store.Store, log *slog.Logger) *Runtime {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{eng: eng, st: st, log: log, limits: DetectHostLimits(), status: map[string]map[string]*ServiceState{}}
}

// ProgressFunc receives one line of human-readable progress per step.
type ProgressFunc func(service, message string)

// UpOptions configure Up.
type UpOptions struct {
	// Timeout bounds the whole start; 0 means no bound beyond each
	// service's own health rules (a 300 s start period is honoured).
	Timeout time.Duration
	// Progress receives progress lines; nil discards them.
	Progress ProgressFunc
	// Operation selects which jobs run: "install" (first start), "upgrade",
	// or "" (plain start: only jobs with when: always).
	Operation model.JobWhen
}

// UpResult reports a successful Up.
type UpResult struct {
	Revision int64          `json:"revision"`
	Services []ServiceState `json:"services"`
	Duration time.Duration  `json:"duration"`
}

// ServiceState is what Outpost knows about one service right now.
type ServiceState struct {
	Service     string         `json:"service"`
	Container   string         `json:"container"`
	ContainerID string         `json:"container_id,omitempty"`
	Image       string         `json:"image"`
	State       string         `json:"state"`
	Health      health.Status  `json:"health"`
	LastProbe   *health.Result `json:"last_probe,omitempty"`
	StartedAt   time.Time      `json:"started_at,omitzero"`
	HealthyAt   time.Time      `json:"healthy_at,omitzero"`
	Restarts    int            `json:"restarts"`
	Ports       []string       `json:"ports,omitempty"`
}

// ServiceError says which service failed to start and why, with its last
// probe output and log lines.
type ServiceError struct {
	Service   string
	Reason    string
	LastProbe string
	Logs      string
}

func (e *ServiceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "service %q %s", e.Service, e.Reason)
	if e.LastProbe != "" {
		fmt.Fprintf(&b, "\n  last health check: %s", e.LastProbe)
	}
	if e.Logs != "" {
		fmt.Fprintf(&b, "\n  last log lines:\n    %s", strings.ReplaceAll(e.Logs, "\n", "\n    "))
	}
	fmt.Fprintf(&b, "\n  see `outpost logs %s` and `outpost status`", e.Service)
	return b.String()
}

// PreflightError lists every problem found before anything was created.
type PreflightError struct {
	Problems []string
}

func (e *PreflightError) Error() string {
	return "nothing was created; fix these first:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// ErrNoDefinition is returned when an operation needs the deployed
// definition and none is recorded.
var ErrNoDefinition = errors.New("no appliance definition is recorded; run `outpost up` first")

// node tracks one graph node during a start.
type node struct {
	started   chan struct{} // closed once the container runs
	healthy   chan struct{} // closed once healthy (or started, without checks)
	completed chan struct{} // closed once a job exited 0
	failed    chan struct{} // closed on failure; err is set before
	err       error
}

func newNode() *node {
	return &node{started: make(chan struct{}), healthy: make(chan struct{}), completed: make(chan struct{}), failed: make(chan struct{})}
}

// Up brings the appliance to its definition and waits until every service
// is healthy: it creates networks and volumes, keeps containers whose
// configuration is unchanged (adopting ones a previous process started),
// recreates changed ones, and starts each node once its dependencies meet
// their conditions. Independent branches start in parallel.
func (r *Runtime) Up(ctx context.Context, app *model.Appliance, opts UpOptions) (*UpResult, error) {
	begin := time.Now()
	progress := opts.Progress
	if progress == nil {
		progress = func(string, string) {}
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	active, err := r.st.ActiveRevision(ctx, app.Name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("reading active revision: %w", err)
	}
	err = nil
	// Definitions read back from a revision or a snapshot carry markers
	// where the values were; a start needs the values.
	if app, err = r.WithSecrets(app); err != nil {
		return nil, err
	}
	runs, err := r.jobsToRun(ctx, app, opts.Operation, active.ID != 0)
	if err != nil {
		return nil, err
	}
	dag, err := plan.Graph(app, func(j *model.Job) bool { return runs[j.Name] })
	if err != nil {
		return nil, err
	}
	images, err := r.preflight(ctx, app)
	if err != nil {
		return nil, err
	}
	rev, err := r.recordRevision(ctx, app, images, active)
	newRev := rev != active.ID
	if err != nil {
		return nil, err
	}
	if err := r.ensureNetworksAndVolumes(ctx, app, rev); err != nil {
		return nil, err
	}

	nodes := map[string]*node{}
	for _, n := range dag.Order() {
		nodes[n] = newNode()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for _, name := range dag.Order() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[name]
			err := r.runNode(runCtx, app, dag, nodes, name, rev, images, progress)
			if err != nil {
				// Record the root cause before waking dependants, whose
				// own "dependency failed" errors must not win the race.
				n.err = err
				errOnce.Do(func() { firstErr = err; cancel() })
				close(n.failed)
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		if errors.Is(firstErr, context.DeadlineExceeded) && opts.Timeout > 0 {
			firstErr = fmt.Errorf("appliance %s was not healthy within --timeout %s: %w", app.Name, opts.Timeout, firstErr)
		}
		if newRev {
			_ = r.st.SetRevisionStatus(context.WithoutCancel(ctx), rev, store.RevisionFailed)
		}
		r.event(ctx, app.Name, "", "up-failed", firstErr.Error())
		return nil, firstErr
	}
	if err := r.st.SetRevisionStatus(ctx, rev, store.RevisionActive); err != nil {
		return nil, fmt.Errorf("recording revision %d as active: %w", rev, err)
	}
	r.event(ctx, app.Name, "", "up", fmt.Sprintf("revision %d healthy in %s", rev, time.Since(begin).Round(time.Millisecond)))
	states, err := r.Status(ctx, app)
	if err != nil {
		return nil, err
	}
	return &UpResult{Revision: rev, Services: states, Duration: time.Since(begin)}, nil
}

// preflight checks everything that can be checked before creating anything
// and returns the image ID of every service's image.
func (r *Runtime) preflight(ctx context.Context, app *model.Appliance) (map[string]string, error) {
	var problems []string
	images := map[string]string{}
	byRef := map[string]string{}
	existing, err := r.eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: app.Name})
	if err != nil {
		return nil, fmt.Errorf("listing containers of %s: %w", app.Name, err)
	}
	heldPorts := map[string]bool{}
	for _, c := range existing {
		if c.Running {
			for _, p := range c.Ports {
				heldPorts[portKey(p.HostIP, p.HostPort, p.Protocol)] = true
			}
		}
	}
	for _, name := range app.ServiceNames() {
		svc := app.Services[name]
		if id, ok := byRef[svc.Image]; ok {
			images[name] = id
		} else {
			img, err := r.eng.ImageInspect(ctx, svc.Image)
			switch {
			case errors.Is(err, engine.ErrNotFound):
				problems = append(problems, fmt.Sprintf("services.%s.image: image %s is not in local storage; load it (`podman load`, `outpost bundle load`) — Outpost never pulls", name, svc.Image))
			case err != nil:
				problems = append(problems, fmt.Sprintf("services.%s.image: inspecting %s: %v", name, svc.Image, err))
			default:
				byRef[svc.Image] = img.ID
				images[name] = img.ID
			}
		}
		problems = append(problems, checkUlimits(svc, r.limits)...)
		problems = append(problems, bindSourceProblems(svc)...)
		for _, p := range svc.Ports {
			if p.HostPort == 0 || heldPorts[portKey(p.HostIP, p.HostPort, p.Protocol)] {
				continue
			}
			if err := portFree(p); err != nil {
				problems = append(problems, fmt.Sprintf("services.%s.ports: host port %d/%s is in use (%v); stop what holds it or change the port", name, p.HostPort, p.Protocol, err))
			}
		}
	}
	for _, j := range app.Jobs {
		if _, ok := app.Services[j.Service]; !ok {
			problems = append(problems, fmt.Sprintf("x-outpost.jobs.%s.service: unknown service %q", j.Name, j.Service))
		}
	}
	if len(problems) > 0 {
		return nil, &PreflightError{Problems: problems}
	}
	return images, nil
}

func portKey(ip string, port uint16, proto string) string {
	if proto == "" {
		proto = "tcp"
	}
	return fmt.Sprintf("%s:%d/%s", ip, port, proto)
}

func portFree(p model.Port) error {
	addr := net.JoinHostPort(p.HostIP, strconv.Itoa(int(p.HostPort)))
	if p.Protocol == "udp" {
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

func (r *Runtime) recordRevision(ctx context.Context, app *model.Appliance, images map[string]string, active store.Revision) (int64, error) {
	hash, spec, err := SpecHash(app)
	if err != nil {
		return 0, err
	}
	if active.ID != 0 && active.SpecHash == hash && sameImages(active.Images, images) {
		return active.ID, nil
	}
	// A definition recorded before (a rollback, or a retry after a failed
	// upgrade) is applied again under its own revision, so history shows
	// one revision per definition.
	revs, err := r.st.Revisions(ctx, app.Name)
	if err != nil {
		return 0, fmt.Errorf("reading revisions: %w", err)
	}
	why := "no active revision"
	if active.ID != 0 {
		why = revisionChange(active, hash, images)
	}
	for _, old := range revs {
		if old.ID != active.ID && old.SpecHash == hash && sameImages(old.Images, images) {
			if err := r.st.SetRevisionStatus(ctx, old.ID, store.RevisionApplying); err != nil {
				r.log.Info("recording a new revision instead of reapplying one", "appliance", app.Name, "revision", old.ID, "status", old.Status, "err", err)
				break // e.g. an applying revision of a crashed run: record a new one
			}
			r.log.Info("reapplying a recorded revision", "appliance", app.Name, "revision", old.ID, "active", active.ID, "change", why)
			return old.ID, nil
		}
	}
	id, err := r.st.CreateRevision(ctx, store.Revision{
		Appliance: app.Name, Version: app.Version, Spec: spec, SpecHash: hash,
		Images: images, Status: store.RevisionApplying,
	})
	if err != nil {
		return 0, fmt.Errorf("recording revision: %w", err)
	}
	r.log.Info("recorded revision", "appliance", app.Name, "revision", id, "active", active.ID, "change", why)
	return id, nil
}

// revisionChange says what differs between the active revision and a
// definition about to be applied, for the log.
func revisionChange(active store.Revision, hash string, images map[string]string) string {
	var out []string
	if active.SpecHash != hash {
		out = append(out, "definition "+short(active.SpecHash)+" → "+short(hash))
	}
	for _, svc := range sortedKeys(images) {
		if old := active.Images[svc]; old != images[svc] {
			out = append(out, fmt.Sprintf("%s image %s → %s", svc, short(old), short(images[svc])))
		}
	}
	for _, svc := range sortedKeys(active.Images) {
		if _, ok := images[svc]; !ok {
			out = append(out, svc+" image dropped")
		}
	}
	if len(out) == 0 {
		return "none (status " + string(active.Status) + ")"
	}
	return strings.Join(out, "; ")
}

// short abbreviates a hash or image ID for the log.
func short(s string) string {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) > 12 {
		return s[:12]
	}
	if s == "" {
		return "none"
	}
	return s
}

func sameImages(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (r *Runtime) ensureNetworksAndVolumes(ctx context.Context, app *model.Appliance, rev int64) error {
	for _, key := range sortedKeys(app.Networks) {
		n := app.Networks[key]
		if n.External {
			continue
		}
		err := r.eng.EnsureNetwork(ctx, engine.NetworkSpec{Name: n.Name, Internal: n.Internal, Labels: map[string]string{engine.LabelAppliance: app.Name}})
		if err != nil {
			return fmt.Errorf("creating network %s: %w", n.Name, err)
		}
		if err := r.st.PutNetwork(ctx, app.Name, n.Name); err != nil {
			return fmt.Errorf("recording network %s: %w", n.Name, err)
		}
	}
	users := map[string][]string{}
	for _, name := range app.ServiceNames() {
		for _, m := range app.Services[name].Mounts {
			if m.Type == model.MountVolume {
				users[m.Source] = append(users[m.Source], name)
			}
		}
	}
	for _, key := range sortedKeys(app.Volumes) {
		v := app.Volumes[key]
		if v.Legacy && len(users[key]) == 0 {
			// A legacy volume is kept for rollback, never created anew.
			continue
		}
		rec := store.Volume{Appliance: app.Name, Key: key, Name: v.Name, Services: users[key], External: v.External, CreatedBy: "adopted"}
		if !v.External {
			labels := map[string]string{engine.LabelAppliance: app.Name, engine.LabelVolume: key}
			for k, val := range v.Labels {
				labels[k] = val
			}
			created, err := r.eng.EnsureVolume(ctx, engine.VolumeSpec{Name: v.Name, Labels: labels})
			if err != nil {
				return fmt.Errorf("creating volume %s: %w", v.Name, err)
			}
			if created {
				rec.CreatedBy = "outpost"
				r.event(ctx, app.Name, "", "volume-created", v.Name)
			}
		}
		if err := r.st.PutVolume(ctx, rec); err != nil {
			return fmt.Errorf("recording volume %s: %w", v.Name, err)
		}
	}
	return nil
}

// waitDeps blocks until every dependency of name meets its condition.
func waitDeps(ctx context.Context, dag *plan.DAG, nodes map[string]*node, name string, progress ProgressFunc) error {
	deps := dag.Node(name).Deps
	for _, dep := range sortedKeys(deps) {
		cond := deps[dep]
		dn := nodes[dep]
		var ch chan struct{}
		switch cond.Condition {
		case model.ConditionHealthy:
			ch = dn.healthy
		case model.ConditionCompleted:
			ch = dn.completed
		default:
			ch = dn.started
		}
		select {
		case <-ch:
			continue
		default:
		}
		progress(name, fmt.Sprintf("waiting for %s (%s)", dep, cond.Condition))
		select {
		case <-ch:
		case <-dn.failed:
			if cond.Required {
				return fmt.Errorf("%s: dependency %s failed", name, dep)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (r *Runtime) runNode(ctx context.Context, app *model.Appliance, dag *plan.DAG, nodes map[string]*node, name string, rev int64, images map[string]string, progress ProgressFunc) error {
	if err := waitDeps(ctx, dag, nodes, name, progress); err != nil {
		return err
	}
	n := nodes[name]
	if dag.Node(name).Kind == plan.KindJob {
		for _, j := range app.Jobs {
			if j.Name == name {
				if err := r.runJob(ctx, app, j, rev, images, progress); err != nil {
					return err
				}
			}
		}
		close(n.started)
		close(n.healthy)
		close(n.completed)
		return nil
	}
	svc := app.Services[name]
	begin := time.Now()
	info, err := r.ensureContainer(ctx, app, svc, rev, images[name], progress)
	if err != nil {
		return err
	}
	close(n.started)
	if svc.Healthcheck != nil {
		progress(svc.Name, "checking health")
	}
	err = r.waitHealthy(ctx, app, svc, info, progress)
	var se *ServiceError
	if err != nil && errors.As(err, &se) && info.StartedAt.Before(begin) {
		// An adopted container (left running by a previous process) that
		// is not healthy is restarted once, as the supervisor would,
		// rather than failing the whole start.
		progress(svc.Name, "adopted container is not healthy; restarting it")
		r.event(ctx, app.Name, svc.Name, "restart", "adopted container not healthy: "+se.LastProbe)
		if serr := r.eng.StopContainer(ctx, info.ID, svc.StopGracePeriod); serr != nil {
			return fmt.Errorf("stopping unhealthy %s: %w", info.Name, serr)
		}
		spec := ContainerSpec(app, svc, rev, nil)
		if info, err = r.start(ctx, app, svc, spec, info.ID, rev, info.Labels[engine.LabelConfigHash]); err != nil {
			return err
		}
		err = r.waitHealthy(ctx, app, svc, info, progress)
	}
	if err != nil {
		return err
	}
	close(n.healthy)
	// A long-running service that exits 0 also satisfies
	// service_completed_successfully once it does; most never do.
	go func() {
		for {
			c, err := r.eng.InspectContainer(ctx, info.ID)
			if err != nil || ctx.Err() != nil {
				return
			}
			if !c.Running {
				if c.ExitCode == 0 {
					close(n.completed)
				}
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return nil
}

// ensureContainer makes the service's container match its spec and run:
// an unchanged running container is adopted as it is.
func (r *Runtime) ensureContainer(ctx context.Context, app *model.Appliance, svc *model.Service, rev int64, imageID string, progress ProgressFunc) (engine.ContainerInfo, error) {
	spec := ContainerSpec(app, svc, rev, nil)
	if err := r.applyProxyNeeds(ctx, app, svc, &spec); err != nil {
		return engine.ContainerInfo{}, err
	}
	hash := ConfigHash(spec, imageID)
	spec.Labels[engine.LabelConfigHash] = hash
	cur, err := r.eng.InspectContainer(ctx, spec.Name)
	switch {
	case err == nil && cur.Labels[engine.LabelConfigHash] == hash:
		if cur.Running {
			progress(svc.Name, "running, unchanged")
			r.setState(app.Name, svc.Name, func(s *ServiceState) { s.ContainerID, s.StartedAt, s.State = cur.ID, cur.StartedAt, cur.State })
			return cur, r.recordContainer(ctx, app, svc, spec, cur, rev, hash)
		}
		progress(svc.Name, "starting existing container")
		return r.start(ctx, app, svc, spec, cur.ID, rev, hash)
	case err == nil:
		progress(svc.Name, "configuration changed, recreating")
		r.event(ctx, app.Name, svc.Name, "recreate", fmt.Sprintf("config hash %s → %s", cur.Labels[engine.LabelConfigHash], hash))
		if cur.Running {
			if err := r.eng.StopContainer(ctx, cur.ID, svc.StopGracePeriod); err != nil {
				return engine.ContainerInfo{}, fmt.Errorf("stopping %s: %w", spec.Name, err)
			}
		}
		if err := r.eng.RemoveContainer(ctx, cur.ID); err != nil {
			return engine.ContainerInfo{}, fmt.Errorf("removing %s: %w", spec.Name, err)
		}
	case !errors.Is(err, engine.ErrNotFound):
		return engine.ContainerInfo{}, fmt.Errorf("inspecting %s: %w", spec.Name, err)
	}
	id, err := r.eng.CreateContainer(ctx, spec)
	if err != nil {
		return engine.ContainerInfo{}, fmt.Errorf("creating container for service %s: %w", svc.Name, err)
	}
	r.event(ctx, app.Name, svc.Name, "created", spec.Name)
	return r.start(ctx, app, svc, spec, id, rev, hash)
}

func (r *Runtime) start(ctx context.Context, app *model.Appliance, svc *model.Service, spec engine.ContainerSpec, id string, rev int64, hash string) (engine.ContainerInfo, error) {
	if err := r.eng.StartContainer(ctx, id); err != nil {
		return engine.ContainerInfo{}, &ServiceError{Service: svc.Name, Reason: fmt.Sprintf("could not start: %v", err), Logs: r.lastLogs(ctx, id, 20)}
	}
	info, err := r.eng.InspectContainer(ctx, id)
	if err != nil {
		return engine.ContainerInfo{}, fmt.Errorf("inspecting %s after start: %w", spec.Name, err)
	}
	r.event(ctx, app.Name, svc.Name, "started", spec.Name)
	r.setState(app.Name, svc.Name, func(s *ServiceState) {
		s.ContainerID, s.StartedAt, s.State, s.Health, s.HealthyAt = id, info.StartedAt, info.State, health.Starting, time.Time{}
	})
	return info, r.recordContainer(ctx, app, svc, spec, info, rev, hash)
}

func (r *Runtime) recordContainer(ctx context.Context, app *model.Appliance, svc *model.Service, spec engine.ContainerSpec, info engine.ContainerInfo, rev int64, hash string) error {
	err := r.st.PutContainer(ctx, store.Container{
		Appliance: app.Name, Service: svc.Name, Name: spec.Name, ID: info.ID, ConfigHash: hash,
		Image: spec.Image, Revision: rev, CreatedAt: info.CreatedAt, StartedAt: info.StartedAt,
	})
	if err != nil {
		return fmt.Errorf("recording container %s: %w", spec.Name, err)
	}
	return nil
}

// waitHealthy probes a freshly started (or adopted) container until it is
// healthy, fails its checks, or exits.
func (r *Runtime) waitHealthy(ctx context.Context, app *model.Appliance, svc *model.Service, info engine.ContainerInfo, progress ProgressFunc) error {
	sp := health.FromService(svc)
	started := info.StartedAt
	if started.IsZero() {
		started = time.Now()
	}
	tr := health.NewTracker(sp, started)
	for i := 0; ; i++ {
		c, err := r.eng.InspectContainer(ctx, info.ID)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("inspecting %s: %w", info.Name, err)
		}
		if !c.Running {
			return &ServiceError{Service: svc.Name, Reason: fmt.Sprintf("exited with code %d while starting", c.ExitCode), LastProbe: describe(tr), Logs: r.lastLogs(ctx, info.ID, 20)}
		}
		if sp == nil {
			r.markHealthy(ctx, app.Name, svc.Name, tr, health.None)
			progress(svc.Name, "running (no health check)")
			return nil
		}
		res := health.Probe(ctx, r.eng, info.ID, sp)
		st := tr.Observe(res)
		r.setState(app.Name, svc.Name, func(s *ServiceState) { s.Health = st; s.LastProbe = &res })
		switch st {
		case health.Healthy:
			r.markHealthy(ctx, app.Name, svc.Name, tr, st)
			progress(svc.Name, fmt.Sprintf("healthy after %s", time.Since(started).Round(100*time.Millisecond)))
			return nil
		case health.Unhealthy:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &ServiceError{Service: svc.Name, Reason: fmt.Sprintf("did not become healthy (%d consecutive failed checks after its %s start period)", tr.Failures(), sp.StartPeriod), LastProbe: describe(tr), Logs: r.lastLogs(ctx, info.ID, 20)}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(tr.NextDelay(i)):
		}
	}
}

func (r *Runtime) markHealthy(ctx context.Context, app, svc string, tr *health.Tracker, st health.Status) {
	now := time.Now()
	r.setState(app, svc, func(s *ServiceState) { s.Health = st; s.HealthyAt = now })
	r.event(ctx, app, svc, "healthy", string(st))
}

func describe(tr *health.Tracker) string {
	last := tr.Last()
	if last.At.IsZero() {
		return ""
	}
	out := last.Output
	if out == "" {
		out = "(no output)"
	}
	return fmt.Sprintf("exit %d at %s: %s", last.ExitCode, last.At.Format(time.TimeOnly), out)
}

func (r *Runtime) lastLogs(ctx context.Context, id string, n int) string {
	var buf bytes.Buffer
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.eng.Logs(lctx, id, engine.LogOptions{Tail: n}, &buf); err != nil {
		return fmt.Sprintf("(logs unavailable: %v)", err)
	}
	return tailLines(buf.String(), n)
}

// runJob runs a one-shot job to completion in a fresh container of its
// service's image and configuration.
func (r *Runtime) runJob(ctx context.Context, app *model.Appliance, j *model.Job, rev int64, images map[string]string, progress ProgressFunc) error {
	svc := app.Services[j.Service]
	spec := ContainerSpec(app, svc, rev, nil)
	spec.Name = JobContainerName(app.Name, j.Name)
	spec.Command = j.Command
	spec.Ports = nil
	spec.Labels[engine.LabelJob] = j.Name
	delete(spec.Labels, engine.LabelService)
	if old, err := r.eng.InspectContainer(ctx, spec.Name); err == nil {
		if err := r.eng.RemoveContainer(ctx, old.ID); err != nil {
			return fmt.Errorf("removing previous run of job %s: %w", j.Name, err)
		}
	}
	progress(j.Name, "running job")
	id, err := r.eng.CreateContainer(ctx, spec)
	if err != nil {
		return fmt.Errorf("creating container for job %s: %w", j.Name, err)
	}
	if err := r.eng.StartContainer(ctx, id); err != nil {
		return &ServiceError{Service: j.Name, Reason: fmt.Sprintf("job could not start: %v", err), Logs: r.lastLogs(ctx, id, 20)}
	}
	jctx := ctx
	if j.Timeout > 0 {
		var cancel context.CancelFunc
		jctx, cancel = context.WithTimeout(ctx, j.Timeout)
		defer cancel()
	}
	for {
		c, err := r.eng.InspectContainer(jctx, id)
		if err != nil {
			if jctx.Err() != nil {
				_ = r.eng.StopContainer(context.WithoutCancel(ctx), id, svc.StopGracePeriod)
				return &ServiceError{Service: j.Name, Reason: fmt.Sprintf("job did not finish within %s", j.Timeout), Logs: r.lastLogs(ctx, id, 20)}
			}
			return fmt.Errorf("inspecting job %s: %w", j.Name, err)
		}
		if !c.Running && c.State != "created" {
			logs := r.lastLogs(ctx, id, 50)
			r.event(ctx, app.Name, j.Name, "job-exited", fmt.Sprintf("exit %d\n%s", c.ExitCode, logs))
			if c.ExitCode != 0 {
				return &ServiceError{Service: j.Name, Reason: fmt.Sprintf("job exited with code %d", c.ExitCode), Logs: tailLines(logs, 20)}
			}
			if j.When == model.JobInstall {
				if err := r.recordInstallJob(ctx, app.Name, j.Name, rev); err != nil {
					return err
				}
			}
			progress(j.Name, "job completed")
			return nil
		}
		select {
		case <-jctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Runtime) event(ctx context.Context, app, svc, kind, msg string) {
	err := r.st.AddEvent(context.WithoutCancel(ctx), store.Event{Appliance: app, Service: svc, Kind: kind, Message: msg})
	if err != nil {
		r.log.Warn("recording event failed", "appliance", app, "service", svc, "kind", kind, "err", err)
	}
	r.log.Debug("event", "appliance", app, "service", svc, "kind", kind, "message", msg)
}

func (r *Runtime) setState(app, svc string, f func(*ServiceState)) {
	r.mu.Lock()
	m := r.status[app]
	if m == nil {
		m = map[string]*ServiceState{}
		r.status[app] = m
	}
	s := m[svc]
	if s == nil {
		s = &ServiceState{Service: svc}
		m[svc] = s
	}
	before := s.Serving()
	f(s)
	changed := s.Serving() != before
	snapshot := *s
	listeners := r.listeners
	r.mu.Unlock()
	if changed {
		for _, l := range listeners {
			l(app, snapshot)
		}
	}
}

// Serving reports whether the service may receive traffic: its container
// runs and it is healthy (or running without any health check).
func (s ServiceState) Serving() bool {
	if s.State != "running" {
		return false
	}
	return s.Health == health.Healthy || s.Health == health.None
}

// ServingListener is told, synchronously, whenever a service starts or
// stops being Serving. It must not block or call back into the Runtime.
type ServingListener func(appliance string, state ServiceState)

// OnServingChange registers a listener (the embedded proxy uses it to move
// traffic only to healthy upstreams).
func (r *Runtime) OnServingChange(l ServingListener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listeners = append(r.listeners, l)
}

func (r *Runtime) getState(app, svc string) (ServiceState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.status[app][svc]
	if !ok {
		return ServiceState{}, false
	}
	return *s, true
}
