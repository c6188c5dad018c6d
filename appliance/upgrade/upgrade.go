package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/outpostdev/outpost/appliance/backup"
	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/health"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/store"
	"github.com/outpostdev/outpost/appliance/volumes"
)

// Operation kinds in the store's journal.
const (
	KindUpgrade  = "upgrade"
	KindRollback = "rollback"
)

// LockName is the writer lock upgrades and rollbacks of an appliance hold.
func LockName(appliance string) string { return "upgrade:" + appliance }

// lock takes the appliance's upgrade lock and its volumes lock
// (volumes.LockName), so that `volumes prune` cannot remove a legacy volume
// between its checks and an upgrade, rollback or recovery that might mount
// it again. Both are taken or neither.
func (u *Upgrader) lock(ctx context.Context, appliance, owner string) (release func(), err error) {
	relUpgrade, err := u.st.AcquireLock(ctx, LockName(appliance), owner)
	if err != nil {
		return nil, err
	}
	relVolumes, err := u.st.AcquireLock(ctx, volumes.LockName(appliance), owner)
	if err != nil {
		_ = relUpgrade()
		return nil, err
	}
	return func() {
		_ = relVolumes()
		_ = relUpgrade()
	}, nil
}

// BesideName is the Podman name of the copy of a rotatable service that
// upgrade operation op starts beside the running one.
func BesideName(appliance, service string, op int64) string {
	return fmt.Sprintf("%s-%s-up%d", appliance, service, op)
}

// besideService is the port-allocation key of a service's beside copy.
func besideService(service string) string { return service + "~beside" }

// Traffic moves the embedded proxy's traffic of one service. The daemon
// implements it over its proxy; without a proxy in the process it is nil.
type Traffic interface {
	// Divert sends the proxy's requests for service to the given loopback
	// host ports (container port → host port), whatever the runtime
	// reports about the service's own container; nil ports end the
	// diversion, so traffic follows the service's container again.
	Divert(appliance, service string, ports map[uint16]uint16)
}

// Crash ends the process the way kill -9 does: no deferred function runs,
// the writer lock stays recorded, containers keep running. The executor
// calls it right after journaling step Options.CrashAt, before the step
// acts; the crash-injection tests set that step (OUTPOST_UPGRADE_CRASH_AT).
var Crash = func() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is delivered asynchronously
}

// Upgrader plans and applies upgrades and rollbacks of appliances.
type Upgrader struct {
	eng engine.Engine
	st  *store.Store
	rt  *runtime.Runtime
	log *slog.Logger
}

// New returns an Upgrader. log may be nil.
func New(eng engine.Engine, st *store.Store, rt *runtime.Runtime, log *slog.Logger) *Upgrader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Upgrader{eng: eng, st: st, rt: rt, log: log}
}

// Options configure Upgrade.
type Options struct {
	// App is the new definition with its secrets applied. Required.
	App *model.Appliance
	// StateDir is Outpost's state directory; the pre-upgrade snapshot goes
	// to its backups/. Required when the plan changes data.
	StateDir string
	// DryRun computes and returns the plan and changes nothing.
	DryRun bool
	// SkipBackup applies a plan that changes data without the snapshot
	// it would otherwise take first (the operator's explicit choice; the
	// journal records it).
	SkipBackup bool
	// Timeout bounds the upgrade (not the rollback after a failure);
	// 0: each service's own health rules.
	Timeout time.Duration
	// Progress receives one line per step; nil discards them.
	Progress runtime.ProgressFunc
	// Traffic switches the embedded proxy; nil when no proxy runs here.
	Traffic Traffic
	// CrashAt, when positive, ends the process with Crash right after
	// step CrashAt is journaled (crash-injection tests). The numbering
	// goes on into the undo steps of the rollback that follows a failed
	// step, so those can be killed too.
	CrashAt int
	// PendingImages are image IDs that a verified bundle carries but that
	// a dry run did not load: planned as if present. Ignored unless DryRun.
	PendingImages []string
	// OutpostVersion is recorded in the pre-upgrade snapshot.
	OutpostVersion string
	// Owner describes the lock holder, e.g. "outpost upgrade"; default
	// "outpost <kind>".
	Owner string

	kind string // KindUpgrade (default) or KindRollback
}

// Result reports an applied (or, with DryRun, planned) upgrade.
type Result struct {
	Plan *Plan `json:"plan"`
	// Op is the journal's operation ID; 0 for a dry run.
	Op int64 `json:"op,omitempty"`
	// Revision is the revision now active; PreviousRevision the one before.
	Revision         int64 `json:"revision,omitempty"`
	PreviousRevision int64 `json:"previous_revision"`
	// Snapshot names the snapshot taken before the upgrade, if any.
	Snapshot string `json:"snapshot,omitempty"`
	// Legacy are the volumes marked legacy.
	Legacy   []string      `json:"legacy,omitempty"`
	DryRun   bool          `json:"dry_run,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Error is a failed upgrade: which step failed, and how the rollback went.
type Error struct {
	// Op is the journal's operation.
	Op int64
	// Step names the step that failed.
	Step string
	// Err is why.
	Err error
	// RollbackErr is set when the rollback failed too.
	RollbackErr error
	// Revision is the revision the appliance was rolled back to.
	Revision int64
}

func (e *Error) Error() string {
	if e.RollbackErr != nil {
		return fmt.Sprintf("%s failed: %v\nrolling back to revision %d failed as well: %v\nthe operation stays open in the journal; fix the cause and run `outpost upgrade --resume` (or `outpost up`) to finish the rollback",
			e.Step, e.Err, e.Revision, e.RollbackErr)
	}
	return fmt.Sprintf("%s failed: %v\nthe whole appliance was rolled back to revision %d (see `outpost history`); volumes were kept", e.Step, e.Err, e.Revision)
}

// Unwrap returns the step's error.
func (e *Error) Unwrap() error { return e.Err }

// ErrNothingDeployed is returned when an upgrade finds no active revision.
var ErrNothingDeployed = errors.New("no healthy revision is deployed to upgrade from; run `outpost up` first")

// beginData is the journal data of an operation's first step: what
// recovery needs to roll it back.
type beginData struct {
	From int64 `json:"from"`
	// Added are services the new definition adds (removed on rollback).
	Added []string `json:"added,omitempty"`
	// Rotated are the services started beside their old copy.
	Rotated []string `json:"rotated,omitempty"`
	// Steps is how many steps the operation has, the first included.
	Steps int `json:"steps"`
	// Known is the highest revision ID recorded when the operation
	// began: a rollback marks only revisions above it rolled_back, and
	// puts one it applied again (a rollback's target) back to superseded.
	Known int64 `json:"known,omitempty"`
}

// plan computes what upgrading to app would do, changing nothing: the
// plan, the active revision and its definition, and the new image IDs.
// Images named by an ID in pending count as present.
func (u *Upgrader) plan(ctx context.Context, app *model.Appliance, pending ...string) (*Plan, store.Revision, *model.Appliance, map[string]string, error) {
	prev, prevRev, err := u.rt.Deployed(ctx, app.Name)
	if err != nil {
		return nil, prevRev, nil, nil, err
	}
	if prevRev.Status != store.RevisionActive {
		return nil, prevRev, nil, nil, fmt.Errorf("appliance %s: revision %d is %s: %w", app.Name, prevRev.ID, prevRev.Status, ErrNothingDeployed)
	}
	images, err := u.images(ctx, app, pending)
	if err != nil {
		return nil, prevRev, nil, nil, err
	}
	p, err := Compute(prev, app, prevRev.Images, images)
	if err != nil {
		return nil, prevRev, nil, nil, err
	}
	p.FromRevision = prevRev.ID
	return p, prevRev, prev, images, nil
}

// images inspects every service's image and reports all missing ones at
// once, before anything is touched.
func (u *Upgrader) images(ctx context.Context, app *model.Appliance, pending []string) (map[string]string, error) {
	out := map[string]string{}
	var problems []string
	for _, name := range app.ServiceNames() {
		img, err := u.eng.ImageInspect(ctx, app.Services[name].Image)
		switch {
		case errors.Is(err, engine.ErrNotFound) && slices.Contains(pending, app.Services[name].Image):
			out[name] = app.Services[name].Image
		case errors.Is(err, engine.ErrNotFound):
			problems = append(problems, fmt.Sprintf("services.%s.image: image %s is not in local storage; load it first (`outpost bundle load`, `podman load`) — Outpost never pulls", name, app.Services[name].Image))
		case err != nil:
			problems = append(problems, fmt.Sprintf("services.%s.image: inspecting %s: %v", name, app.Services[name].Image, err))
		default:
			out[name] = img.ID
		}
	}
	for _, j := range app.Jobs {
		if _, ok := app.Services[j.Service]; !ok {
			problems = append(problems, fmt.Sprintf("x-outpost.jobs.%s.service: unknown service %q", j.Name, j.Service))
		}
	}
	if len(problems) > 0 {
		return nil, &runtime.PreflightError{Problems: problems}
	}
	return out, nil
}

// Upgrade applies opts.App to the deployed appliance (see the package
// comment). On failure it rolls the whole appliance back to the revision
// it started from and returns an *Error.
func (u *Upgrader) Upgrade(ctx context.Context, opts Options) (*Result, error) {
	begin := time.Now()
	if opts.App == nil {
		return nil, errors.New("upgrade: no definition given")
	}
	if opts.kind == "" {
		opts.kind = KindUpgrade
	}
	if opts.Owner == "" {
		opts.Owner = "outpost " + opts.kind
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, string) {}
	}
	app := opts.App
	if opts.DryRun {
		p, prevRev, _, _, err := u.plan(ctx, app, opts.PendingImages...)
		if err != nil {
			return nil, err
		}
		return &Result{Plan: p, PreviousRevision: prevRev.ID, DryRun: true}, nil
	}
	release, err := u.lock(ctx, app.Name, opts.Owner)
	if err != nil {
		return nil, fmt.Errorf("another upgrade or rollback of %s is running: %w", app.Name, err)
	}
	defer release()
	// An operation a killed process left open is settled first.
	if _, err := u.recoverLocked(ctx, app.Name, opts.Traffic, progress); err != nil {
		return nil, err
	}
	p, prevRev, prev, _, err := u.plan(ctx, app)
	if err != nil {
		return nil, err
	}
	res := &Result{Plan: p, PreviousRevision: prevRev.ID, Revision: prevRev.ID}
	if p.Unchanged {
		progress("", "nothing changes")
		return res, nil
	}
	op, err := u.st.BeginOp(ctx, app.Name, opts.kind)
	if err != nil {
		return nil, err
	}
	res.Op = op
	x := &execution{u: u, op: op, crashAt: opts.CrashAt, progress: progress}
	bd := beginData{From: prevRev.ID}
	revs, err := u.st.Revisions(ctx, app.Name)
	if err != nil {
		return nil, err
	}
	for _, r := range revs {
		bd.Known = max(bd.Known, r.ID)
	}
	for _, c := range p.Services {
		switch c.Action {
		case ActionAdd:
			bd.Added = append(bd.Added, c.Service)
		case ActionRotate:
			bd.Rotated = append(bd.Rotated, c.Service)
		}
	}
	steps := x.steps(opts, p, prev, app, res)
	bd.Steps = len(steps) + 1
	data, _ := json.Marshal(bd)
	runCtx := ctx
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	err = x.do(runCtx, "begin", string(data), func(context.Context) (string, error) { return "", nil })
	for _, s := range steps {
		if err != nil {
			break
		}
		err = x.do(runCtx, s.name, s.data, s.run)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && opts.Timeout > 0 {
			err = fmt.Errorf("not done within --timeout %s: %w", opts.Timeout, err)
		}
		// The rollback is not bounded by the upgrade's timeout and must
		// not be cut short by a cancelled caller.
		rctx := context.WithoutCancel(ctx)
		u.event(rctx, app.Name, opts.kind+"-failed", err.Error())
		uerr := &Error{Op: op, Step: x.current, Err: err, Revision: prevRev.ID}
		if rerr := u.rollback(rctx, x, prevRev, bd, opts.Traffic, progress); rerr != nil {
			uerr.RollbackErr = rerr
		}
		return nil, uerr
	}
	if err := u.st.FinishOp(context.WithoutCancel(ctx), op, "done"); err != nil {
		return nil, err
	}
	res.Duration = time.Since(begin)
	u.event(ctx, app.Name, opts.kind, fmt.Sprintf("revision %d → %d in %s", prevRev.ID, res.Revision, res.Duration.Round(time.Millisecond)))
	return res, nil
}

// step is one journaled step of a plan.
type step struct {
	name, data string
	run        func(ctx context.Context) (string, error)
}

// execution journals and runs the steps of one operation.
type execution struct {
	u       *Upgrader
	op      int64
	n       int
	crashAt int
	current string
	// applied is the revision the "apply" step made active, 0 before.
	applied  int64
	progress runtime.ProgressFunc
}

// do journals step name as started, runs it, and journals how it ended.
// The result string of run is journaled with done.
func (x *execution) do(ctx context.Context, name, data string, run func(context.Context) (string, error)) error {
	x.n++
	x.current = fmt.Sprintf("step %d (%s)", x.n, name)
	if err := x.u.st.JournalStep(ctx, x.op, x.n, name, store.StepStarted, data); err != nil {
		return err
	}
	if x.crashAt == x.n {
		x.u.log.Warn("crash injected", "op", x.op, "step", x.n, "name", name)
		Crash()
	}
	out, err := run(ctx)
	state := store.StepDone
	if err != nil {
		state, out = store.StepFailed, err.Error()
	}
	if jerr := x.u.st.JournalStep(context.WithoutCancel(ctx), x.op, x.n, name, state, out); jerr != nil && err == nil {
		return jerr
	}
	return err
}

// steps lists the plan's steps after "begin".
func (x *execution) steps(opts Options, p *Plan, prev, app *model.Appliance, res *Result) []step {
	u := x.u
	var out []step
	if len(p.DataChanges) > 0 && opts.SkipBackup {
		x.progress("", "not taking a snapshot (--skip-backup) although the plan changes data: "+strings.Join(p.DataChanges, "; "))
		u.log.Warn("upgrade without the pre-upgrade snapshot", "appliance", app.Name, "changes", strings.Join(p.DataChanges, "; "))
	}
	if len(p.DataChanges) > 0 && !opts.SkipBackup {
		out = append(out, step{name: "snapshot", data: strings.Join(p.DataChanges, "; "), run: func(ctx context.Context) (string, error) {
			x.progress("", "taking a snapshot first: "+strings.Join(p.DataChanges, "; "))
			b, err := backup.New(u.eng, u.st, u.rt, u.log).Backup(ctx, backup.Options{
				Appliance: app.Name, StateDir: opts.StateDir, Trigger: backup.TriggerUpgrade, OutpostVersion: opts.OutpostVersion,
			})
			if err != nil {
				return "", fmt.Errorf("taking the pre-upgrade snapshot (nothing was changed): %w", err)
			}
			res.Snapshot = b.Name
			x.progress("", "snapshot "+b.Name)
			return b.Name, nil
		}})
	}
	for _, m := range p.Migrations {
		out = append(out, step{name: "migrate " + m.From + " → " + m.To, run: func(ctx context.Context) (string, error) {
			if err := u.stopWriters(ctx, prev, m.From, x.progress); err != nil {
				return "", err
			}
			x.progress("", fmt.Sprintf("migrating volume %s into %s", m.From, m.To))
			r, err := volumes.Migrate(ctx, u.eng, u.st, app, m, u.log)
			if errors.Is(err, volumes.ErrNoSource) {
				// The deployed revision never had the source (e.g. it
				// predates the volume): there is no data to carry over.
				x.progress("", fmt.Sprintf("volume migration %s → %s: no source volume, nothing to copy", m.From, m.To))
				return `{"skipped":"no source volume"}`, nil
			}
			if err != nil {
				return "", err
			}
			b, _ := json.Marshal(r)
			return string(b), nil
		}})
	}
	for _, c := range p.Services {
		if c.Action != ActionRotate {
			continue
		}
		out = append(out, step{name: "start beside " + c.Service, data: BesideName(app.Name, c.Service, x.op), run: func(ctx context.Context) (string, error) {
			return u.startBeside(ctx, app, c.Service, x.op, opts.Traffic, x.progress)
		}})
	}
	operation := model.JobUpgrade
	if opts.kind == KindRollback {
		operation = ""
	}
	out = append(out, step{name: "apply", run: func(ctx context.Context) (string, error) {
		r, err := u.rt.Up(ctx, app, runtime.UpOptions{Progress: x.progress, Operation: operation})
		if err != nil {
			return "", err
		}
		res.Revision, x.applied = r.Revision, r.Revision
		return fmt.Sprint(r.Revision), nil
	}})
	for _, c := range p.Services {
		switch c.Action {
		case ActionRotate:
			out = append(out, step{name: "stop beside " + c.Service, data: BesideName(app.Name, c.Service, x.op), run: func(ctx context.Context) (string, error) {
				if opts.Traffic != nil {
					opts.Traffic.Divert(app.Name, c.Service, nil)
					x.progress(c.Service, "proxy back on the service's own container")
				}
				return "", u.removeContainer(ctx, BesideName(app.Name, c.Service, x.op), app.Services[c.Service].StopGracePeriod, x.progress)
			}})
		case ActionRemove:
			out = append(out, step{name: "remove " + c.Service, run: func(ctx context.Context) (string, error) {
				return "", u.removeContainer(ctx, runtime.ContainerName(app.Name, c.Service), prev.Services[c.Service].StopGracePeriod, x.progress)
			}})
		}
	}
	out = append(out, step{name: "mark legacy volumes", run: func(ctx context.Context) (string, error) {
		names, err := volumes.MarkLegacy(ctx, u.st, prev, app, res.Revision)
		if err != nil {
			return "", err
		}
		res.Legacy = names
		return strings.Join(names, ","), nil
	}})
	return out
}

// stopWriters stops the running services of app that write volume key,
// so a migration copies data nobody changes any more. The upgrade
// replaces them anyway.
func (u *Upgrader) stopWriters(ctx context.Context, app *model.Appliance, key string, progress runtime.ProgressFunc) error {
	for _, name := range app.ServiceNames() {
		svc := app.Services[name]
		if !slices.ContainsFunc(svc.Mounts, func(m model.Mount) bool { return m.Type == model.MountVolume && m.Source == key && !m.ReadOnly }) {
			continue
		}
		c, err := u.eng.InspectContainer(ctx, runtime.ContainerName(app.Name, name))
		if errors.Is(err, engine.ErrNotFound) || (err == nil && !c.Running) {
			continue
		}
		if err != nil {
			return fmt.Errorf("inspecting %s: %w", name, err)
		}
		progress(name, fmt.Sprintf("stopping (up to %s): it writes volume %s, which is migrated", svc.StopGracePeriod, key))
		if err := u.eng.StopContainer(ctx, c.ID, svc.StopGracePeriod); err != nil {
			return fmt.Errorf("stopping %s before migrating volume %s: %w", name, key, err)
		}
	}
	return nil
}

// startBeside starts the new copy of a rotatable service next to the
// running one, under BesideName and with its proxied ports published on
// their own loopback ports, waits until it is healthy, and diverts the
// proxy's traffic to it.
func (u *Upgrader) startBeside(ctx context.Context, app *model.Appliance, name string, op int64, traffic Traffic, progress runtime.ProgressFunc) (string, error) {
	svc := app.Services[name]
	img, err := u.eng.ImageInspect(ctx, svc.Image)
	if err != nil {
		return "", fmt.Errorf("inspecting image %s: %w", svc.Image, err)
	}
	spec, err := u.rt.ServiceSpec(ctx, app, svc, 0, img.ID)
	if err != nil {
		return "", err
	}
	spec.Name = BesideName(app.Name, name, op)
	spec.Labels[engine.LabelRevision] = fmt.Sprintf("upgrade-%d", op)
	proxyPorts, err := u.rt.ProxyPorts(ctx, app)
	if err != nil {
		return "", err
	}
	ports, err := u.besidePorts(ctx, app.Name, name, &spec, proxyPorts[name])
	if err != nil {
		return "", err
	}
	if old, err := u.eng.InspectContainer(ctx, spec.Name); err == nil {
		// A leftover of this very step (a resumed operation).
		if err := u.eng.RemoveContainer(ctx, old.ID); err != nil {
			return "", fmt.Errorf("removing leftover %s: %w", spec.Name, err)
		}
	}
	progress(name, "starting the new copy beside the running one as "+spec.Name)
	id, err := u.eng.CreateContainer(ctx, spec)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", spec.Name, err)
	}
	if err := u.eng.StartContainer(ctx, id); err != nil {
		return "", fmt.Errorf("starting %s: %w", spec.Name, err)
	}
	if err := u.waitHealthy(ctx, svc, id, spec.Name); err != nil {
		return "", err
	}
	progress(name, "new copy healthy")
	if traffic != nil && len(ports) > 0 {
		traffic.Divert(app.Name, name, ports)
		progress(name, "proxy switched to the new copy")
	}
	return spec.Name, nil
}

// besidePorts moves the host ports of the copy beside off the service's
// own: every container port the proxy routes to (proxied: container port
// → the host port the proxy dials now) is published on a loopback port
// allocated for the copy, and fixed host ports the proxy does not use
// are left out, since the running container holds them and keeps them
// until it is replaced. Ports published on a port Podman picks are kept.
// It returns the copy's proxied ports (container port → host port).
func (u *Upgrader) besidePorts(ctx context.Context, appliance, name string, spec *engine.ContainerSpec, proxied map[uint16]uint16) (map[uint16]uint16, error) {
	ports := map[uint16]uint16{}
	var kept []engine.PortSpec
	for _, p := range spec.Ports {
		switch _, routed := proxied[p.ContainerPort]; {
		case p.HostPort == 0:
			kept = append(kept, p)
		case !routed || (p.Protocol != "" && p.Protocol != "tcp"):
			// A fixed port of the service's own container.
		case ports[p.ContainerPort] != 0:
			// Published twice (fixed and for the proxy): one is enough.
		default:
			hp, err := u.st.AllocatePort(ctx, appliance, besideService(name), p.ContainerPort, "tcp", runtime.PickProxyPort)
			if err != nil {
				return nil, fmt.Errorf("publishing %s:%d for the copy beside: %w", name, p.ContainerPort, err)
			}
			ports[p.ContainerPort] = hp
			kept = append(kept, engine.PortSpec{HostIP: "127.0.0.1", HostPort: hp, ContainerPort: p.ContainerPort, Protocol: "tcp"})
		}
	}
	spec.Ports = kept
	return ports, nil
}

// waitHealthy probes a container until its service's health check passes
// (Compose semantics), it fails, or the container exits.
func (u *Upgrader) waitHealthy(ctx context.Context, svc *model.Service, id, name string) error {
	sp := health.FromService(svc)
	info, err := u.eng.InspectContainer(ctx, id)
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", name, err)
	}
	tr := health.NewTracker(sp, info.StartedAt)
	for i := 0; ; i++ {
		c, err := u.eng.InspectContainer(ctx, id)
		if err != nil {
			return fmt.Errorf("inspecting %s: %w", name, err)
		}
		if !c.Running {
			return &runtime.ServiceError{Service: svc.Name, Reason: fmt.Sprintf("new copy %s exited with code %d while starting", name, c.ExitCode)}
		}
		if sp == nil {
			return nil
		}
		res := health.Probe(ctx, u.eng, id, sp)
		switch tr.Observe(res) {
		case health.Healthy:
			return nil
		case health.Unhealthy:
			return &runtime.ServiceError{Service: svc.Name, Reason: fmt.Sprintf("new copy %s did not become healthy (%d consecutive failed checks after its %s start period)", name, tr.Failures(), sp.StartPeriod), LastProbe: res.Output}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to become healthy: %w", name, ctx.Err())
		case <-time.After(tr.NextDelay(i)):
		}
	}
}

// removeContainer stops a container within grace (its drain time) and
// removes it; a missing one is fine.
func (u *Upgrader) removeContainer(ctx context.Context, name string, grace time.Duration, progress runtime.ProgressFunc) error {
	c, err := u.eng.InspectContainer(ctx, name)
	if errors.Is(err, engine.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting %s: %w", name, err)
	}
	svc := c.Labels[engine.LabelService]
	if c.Running {
		progress(svc, fmt.Sprintf("stopping %s (up to %s)", name, grace))
		if err := u.eng.StopContainer(ctx, c.ID, grace); err != nil {
			return fmt.Errorf("stopping %s: %w", name, err)
		}
	}
	if err := u.eng.RemoveContainer(ctx, c.ID); err != nil && !errors.Is(err, engine.ErrNotFound) {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	if err := u.st.DeleteContainer(ctx, c.Labels[engine.LabelAppliance], name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("updating inventory for %s: %w", name, err)
	}
	progress(svc, "removed "+name)
	return nil
}

func (u *Upgrader) event(ctx context.Context, app, kind, msg string) {
	if err := u.st.AddEvent(context.WithoutCancel(ctx), store.Event{Appliance: app, Kind: kind, Message: msg}); err != nil {
		u.log.Warn("recording event failed", "appliance", app, "kind", kind, "err", err)
	}
}
