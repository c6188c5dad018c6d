package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/health"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/plan"
	"github.com/outpostdev/outpost/appliance/secrets"
	"github.com/outpostdev/outpost/appliance/store"
)

// Deployed returns the definition of the appliance's active revision or,
// when none is active (its first start failed), of its newest revision, so
// that what a failed start created can still be inspected and taken down.
func (r *Runtime) Deployed(ctx context.Context, name string) (*model.Appliance, store.Revision, error) {
	rev, err := r.st.ActiveRevision(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		revs, lerr := r.st.Revisions(ctx, name)
		if lerr != nil {
			return nil, rev, fmt.Errorf("reading revisions of %s: %w", name, lerr)
		}
		if len(revs) == 0 {
			return nil, rev, fmt.Errorf("appliance %q: %w", name, ErrNoDefinition)
		}
		rev, err = revs[0], nil
	}
	if err != nil {
		return nil, rev, fmt.Errorf("reading active revision of %s: %w", name, err)
	}
	app, err := r.DecodeRevision(rev)
	return app, rev, err
}

// DecodeRevision returns the definition a revision records. Its secrets
// hold markers in the store; when the runtime knows where the values live
// (SetSecretsDir) and they can be read, they are put back, so the result
// compares equal to the definition that was applied. An unreadable value
// leaves the marker (a start reports it; status and stop need no value).
func (r *Runtime) DecodeRevision(rev store.Revision) (*model.Appliance, error) {
	var app model.Appliance
	if err := json.Unmarshal(rev.Spec, &app); err != nil {
		return nil, fmt.Errorf("decoding revision %d of %s: %w", rev.ID, rev.Appliance, err)
	}
	if r.secretsDir == nil || len(app.Secrets) == 0 {
		return &app, nil
	}
	values, err := secrets.Load(r.secretsDir(app.Name), &app)
	if err != nil {
		r.log.Warn("secret values unavailable; the definition keeps their markers", "appliance", app.Name, "revision", rev.ID, "err", err)
		return &app, nil
	}
	out, err := secrets.Inject(&app, values)
	if err != nil {
		return &app, nil
	}
	return out, nil
}

// Status reports every service of the appliance. Health comes from this
// process's supervision when it has it; otherwise one probe runs now.
func (r *Runtime) Status(ctx context.Context, app *model.Appliance) ([]ServiceState, error) {
	recs, err := r.st.Containers(ctx, app.Name)
	if err != nil {
		return nil, fmt.Errorf("reading container inventory: %w", err)
	}
	restarts := map[string]int{}
	for _, c := range recs {
		restarts[c.Service] = c.Restarts
	}
	names := app.ServiceNames()
	out := make([]ServiceState, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := app.Services[name]
			st := ServiceState{Service: name, Container: ContainerName(app.Name, name), Image: svc.Image, State: "missing", Health: health.None}
			if known, ok := r.getState(app.Name, name); ok {
				st.Health, st.LastProbe, st.HealthyAt = known.Health, known.LastProbe, known.HealthyAt
			}
			st.Restarts = restarts[name]
			c, err := r.eng.InspectContainer(ctx, st.Container)
			if err == nil {
				st.ContainerID, st.State, st.StartedAt = c.ID, c.State, c.StartedAt
				for _, p := range c.Ports {
					st.Ports = append(st.Ports, fmt.Sprintf("%s:%d->%d/%s", p.HostIP, p.HostPort, p.ContainerPort, p.Protocol))
				}
				if _, ok := r.getState(app.Name, name); !ok && c.Running {
					if sp := health.FromService(svc); sp != nil {
						res := health.Probe(ctx, r.eng, c.ID, sp)
						st.LastProbe = &res
						st.Health = health.Unhealthy
						if res.OK {
							st.Health = health.Healthy
						}
					}
				}
				if !c.Running {
					st.Health = health.None
				}
			}
			out[i] = st
		}()
	}
	wg.Wait()
	return out, nil
}

// Logs writes a service's (or job's) container logs to w.
func (r *Runtime) Logs(ctx context.Context, app *model.Appliance, service string, opts engine.LogOptions, w io.Writer) error {
	name := ContainerName(app.Name, service)
	if _, ok := app.Services[service]; !ok {
		found := false
		for _, j := range app.Jobs {
			if j.Name == service {
				name, found = JobContainerName(app.Name, service), true
			}
		}
		if !found {
			return fmt.Errorf("appliance %s has no service %q (services: %v)", app.Name, service, app.ServiceNames())
		}
	}
	if err := r.eng.Logs(ctx, name, opts, w); err != nil {
		return fmt.Errorf("reading logs of %s: %w", name, err)
	}
	return nil
}

// StopOptions configure Stop and Down.
type StopOptions struct {
	Progress ProgressFunc
}

// Stop stops every container of the appliance in reverse dependency order,
// each within its stop timeout, dependants first; a level of independent
// services stops in parallel. Containers are kept.
func (r *Runtime) Stop(ctx context.Context, app *model.Appliance, opts StopOptions) error {
	progress := opts.Progress
	if progress == nil {
		progress = func(string, string) {}
	}
	dag, err := plan.Graph(app, nil)
	if err != nil {
		return err
	}
	levels := dag.Levels()
	var errs []error
	for i := len(levels) - 1; i >= 0; i-- {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, name := range levels[i] {
			svc, ok := app.Services[name]
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := r.eng.InspectContainer(ctx, ContainerName(app.Name, name))
				if errors.Is(err, engine.ErrNotFound) || (err == nil && !c.Running) {
					return
				}
				if err == nil {
					progress(name, fmt.Sprintf("stopping (up to %s)", svc.StopGracePeriod))
					err = r.eng.StopContainer(ctx, c.ID, svc.StopGracePeriod)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("stopping %s: %w", name, err))
					mu.Unlock()
					return
				}
				r.setState(app.Name, name, func(s *ServiceState) { s.State, s.Health = "exited", health.None })
				r.event(ctx, app.Name, name, "stopped", "")
				progress(name, "stopped")
			}()
		}
		wg.Wait()
	}
	return errors.Join(errs...)
}

// Down stops the appliance (see Stop) and removes its containers and
// networks. Volumes are never removed: there is no option for it.
func (r *Runtime) Down(ctx context.Context, app *model.Appliance, opts StopOptions) error {
	if err := r.Stop(ctx, app, opts); err != nil {
		return err
	}
	progress := opts.Progress
	if progress == nil {
		progress = func(string, string) {}
	}
	all, err := r.eng.ListContainers(ctx, map[string]string{engine.LabelAppliance: app.Name})
	if err != nil {
		return fmt.Errorf("listing containers of %s: %w", app.Name, err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	for _, c := range all {
		if c.Running {
			// An orphan (service no longer defined) still running.
			if err := r.eng.StopContainer(ctx, c.ID, model.DefaultStopGrace); err != nil {
				return fmt.Errorf("stopping %s: %w", c.Name, err)
			}
		}
		if err := r.eng.RemoveContainer(ctx, c.ID); err != nil && !errors.Is(err, engine.ErrNotFound) {
			return fmt.Errorf("removing %s: %w", c.Name, err)
		}
		// Job containers (and helpers) are never inventoried.
		if err := r.st.DeleteContainer(ctx, app.Name, c.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("updating inventory for %s: %w", c.Name, err)
		}
		progress(c.Labels[engine.LabelService], "removed "+c.Name)
	}
	nets, err := r.eng.ListNetworks(ctx, map[string]string{engine.LabelAppliance: app.Name})
	if err != nil {
		return fmt.Errorf("listing networks of %s: %w", app.Name, err)
	}
	for _, n := range nets {
		if err := r.eng.RemoveNetwork(ctx, n); err != nil && !errors.Is(err, engine.ErrNotFound) {
			return fmt.Errorf("removing network %s: %w", n, err)
		}
		if err := r.st.DeleteNetwork(ctx, app.Name, n); err != nil {
			return fmt.Errorf("updating inventory for network %s: %w", n, err)
		}
	}
	for _, name := range app.ServiceNames() {
		r.setState(app.Name, name, func(s *ServiceState) { s.State, s.Health = "missing", health.None })
	}
	r.mu.Lock()
	delete(r.status, app.Name)
	r.mu.Unlock()
	r.event(ctx, app.Name, "", "down", "containers and networks removed; volumes kept")
	return nil
}

// Backoff bounds for restarting a crashed or unhealthy service.
const (
	minBackoff = time.Second
	maxBackoff = time.Minute
	// A run longer than this resets the backoff.
	stableRun = 2 * time.Minute
)

// Supervise keeps a started appliance as declared until ctx ends: it probes
// each service at its interval, restarts containers that exit (per their
// restart policy) and services that turn unhealthy, with exponential backoff,
// and records every restart.
func (r *Runtime) Supervise(ctx context.Context, app *model.Appliance) error {
	var wg sync.WaitGroup
	for _, name := range app.ServiceNames() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.superviseService(ctx, app, app.Services[name])
		}()
	}
	wg.Wait()
	return nil
}

func restartAllowed(p model.RestartPolicy, exitCode int) bool {
	switch p {
	case model.RestartAlways, model.RestartUnlessStopped:
		return true
	case model.RestartOnFailure:
		return exitCode != 0
	default:
		return false
	}
}

func (r *Runtime) superviseService(ctx context.Context, app *model.Appliance, svc *model.Service) {
	name := ContainerName(app.Name, svc.Name)
	sp := health.FromService(svc)
	var tr *health.Tracker
	var runStart time.Time
	backoff := minBackoff
	probes := 0
	nextProbe := time.Now()
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	restart := func(reason string, exitCode int) bool {
		if !runStart.IsZero() && time.Since(runStart) > stableRun {
			backoff = minBackoff
		}
		r.log.Warn("restarting service", "appliance", app.Name, "service", svc.Name, "reason", reason, "backoff", backoff)
		if !sleep(backoff) {
			return false
		}
		backoff = min(backoff*2, maxBackoff)
		c, err := r.eng.InspectContainer(ctx, name)
		if err == nil && c.Running {
			if err := r.eng.StopContainer(ctx, c.ID, svc.StopGracePeriod); err != nil {
				r.log.Error("stopping unhealthy service failed", "service", svc.Name, "err", err)
			}
		}
		if err := r.eng.StartContainer(ctx, name); err != nil {
			r.event(ctx, app.Name, svc.Name, "restart-failed", err.Error())
			return true
		}
		if err := r.st.RecordRestart(ctx, app.Name, name, time.Now(), exitCode); err != nil {
			r.log.Warn("recording restart failed", "service", svc.Name, "err", err)
		}
		r.event(ctx, app.Name, svc.Name, "restarted", reason)
		tr, probes = nil, 0
		return true
	}
	for ctx.Err() == nil {
		c, err := r.eng.InspectContainer(ctx, name)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, engine.ErrNotFound):
			// Removed behind our back: recreate through the gated path
			// on the next Up; report it.
			r.setState(app.Name, svc.Name, func(s *ServiceState) { s.State, s.Health = "missing", health.None })
			if !sleep(2 * time.Second) {
				return
			}
			continue
		case err != nil:
			r.log.Warn("inspecting container failed", "container", name, "err", err)
			if !sleep(time.Second) {
				return
			}
			continue
		}
		if !c.Running {
			r.setState(app.Name, svc.Name, func(s *ServiceState) { s.State, s.Health = c.State, health.None })
			// Whatever starts it again (a restart here, or an operator)
			// starts a new run whose health is unknown until probed.
			tr = nil
			if !restartAllowed(svc.Restart, c.ExitCode) {
				if !sleep(time.Second) {
					return
				}
				continue
			}
			r.event(ctx, app.Name, svc.Name, "exited", fmt.Sprintf("exit code %d", c.ExitCode))
			if !restart(fmt.Sprintf("container exited with code %d", c.ExitCode), c.ExitCode) {
				return
			}
			continue
		}
		if tr == nil {
			tr = health.NewTracker(sp, c.StartedAt)
			runStart = c.StartedAt
			nextProbe = time.Now()
			r.setState(app.Name, svc.Name, func(s *ServiceState) {
				s.State, s.ContainerID, s.StartedAt = c.State, c.ID, c.StartedAt
				if sp != nil && s.Health != health.Healthy {
					// A new run (after an exit or a restart) is not
					// serving until its health check passes; the health
					// of a run adopted while healthy is kept.
					s.Health = health.Starting
				}
			})
		}
		if sp == nil {
			r.setState(app.Name, svc.Name, func(s *ServiceState) { s.State, s.Health = c.State, health.None })
			if !sleep(time.Second) {
				return
			}
			continue
		}
		if !time.Now().Before(nextProbe) {
			was := tr.Status()
			res := health.Probe(ctx, r.eng, c.ID, sp)
			st := tr.Observe(res)
			probes++
			nextProbe = time.Now().Add(tr.NextDelay(probes))
			r.setState(app.Name, svc.Name, func(s *ServiceState) {
				s.State, s.Health, s.LastProbe = c.State, st, &res
				if st == health.Healthy && was != health.Healthy {
					s.HealthyAt = time.Now()
				}
			})
			if st != was {
				r.event(ctx, app.Name, svc.Name, string(st), res.Output)
			}
			if st == health.Unhealthy {
				if !restart("unhealthy: "+res.Output, 0) {
					return
				}
				continue
			}
		}
		if !sleep(min(time.Until(nextProbe), time.Second)) {
			return
		}
	}
}
