// Package health runs a service's health probes the way Compose defines them
// (test, interval, timeout, retries, start_period, start_interval) plus
// Outpost's ready markers, through the engine's exec and file-stat calls.
// Podman's own healthchecks need systemd timers, so Outpost runs them itself.
// The package decides health; it never restarts anything.
package health

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// Execer is what probing needs from the engine.
type Execer interface {
	Exec(ctx context.Context, id string, cmd []string) (engine.ExecResult, error)
	PathExists(ctx context.Context, id, path string) (bool, error)
}

var _ Execer = engine.Engine(nil)

// Status is a service's health state.
type Status string

// Health states.
const (
	// Starting: no probe has succeeded yet and the failure budget is not spent.
	Starting Status = "starting"
	Healthy  Status = "healthy"
	// Unhealthy: Retries consecutive probes failed after the start period.
	Unhealthy Status = "unhealthy"
	// None: the service has neither a healthcheck nor ready markers.
	None Status = "none"
)

// Spec is the probe configuration of one service.
type Spec struct {
	// Test is ["CMD", ...] or ["CMD-SHELL", script]; empty when only markers are checked.
	Test          []string
	Interval      time.Duration
	Timeout       time.Duration
	StartPeriod   time.Duration
	StartInterval time.Duration
	Retries       int
	// Markers are files that must exist in the container.
	Markers []string
}

// FromService derives the probe spec of a service; nil when it has nothing to probe.
func FromService(s *model.Service) *Spec {
	if s.Healthcheck == nil && len(s.ReadyMarkers) == 0 {
		return nil
	}
	sp := &Spec{
		Interval:      model.DefaultHealthInterval,
		Timeout:       model.DefaultHealthTimeout,
		Retries:       model.DefaultHealthRetries,
		StartInterval: 0,
		Markers:       s.ReadyMarkers,
	}
	if h := s.Healthcheck; h != nil {
		sp.Test = h.Test
		if h.Interval > 0 {
			sp.Interval = h.Interval
		}
		if h.Timeout > 0 {
			sp.Timeout = h.Timeout
		}
		if h.Retries > 0 {
			sp.Retries = h.Retries
		}
		sp.StartPeriod = h.StartPeriod
		sp.StartInterval = h.StartInterval
	}
	return sp
}

// Command turns the Compose test into the argv to exec.
func (s *Spec) Command() ([]string, error) {
	if len(s.Test) == 0 {
		return nil, nil
	}
	switch s.Test[0] {
	case "CMD":
		if len(s.Test) < 2 {
			return nil, errors.New("healthcheck test CMD has no command")
		}
		return s.Test[1:], nil
	case "CMD-SHELL":
		if len(s.Test) != 2 {
			return nil, errors.New("healthcheck test CMD-SHELL takes exactly one script")
		}
		return []string{"/bin/sh", "-c", s.Test[1]}, nil
	case "NONE":
		return nil, nil
	default:
		// A bare list is a command, as Docker treats it.
		return s.Test, nil
	}
}

// Result is the outcome of one probe.
type Result struct {
	At       time.Time     `json:"at"`
	OK       bool          `json:"ok"`
	ExitCode int           `json:"exit_code"`
	Output   string        `json:"output,omitempty"`
	Duration time.Duration `json:"duration"`
}

// Probe runs the test (bounded by the spec's timeout) and then checks every
// ready marker. It never returns an error: a probe that cannot run fails.
func Probe(ctx context.Context, ex Execer, id string, sp *Spec) Result {
	start := time.Now()
	res := Result{At: start, OK: true}
	defer func() { res.Duration = time.Since(start) }()
	cmd, err := sp.Command()
	if err != nil {
		return fail(res, -1, err.Error(), start)
	}
	if cmd != nil {
		pctx, cancel := context.WithTimeout(ctx, sp.Timeout)
		out, err := ex.Exec(pctx, id, cmd)
		cancel()
		switch {
		case err != nil && pctx.Err() == context.DeadlineExceeded:
			return fail(res, -1, fmt.Sprintf("health check timed out after %s", sp.Timeout), start)
		case err != nil:
			return fail(res, -1, fmt.Sprintf("running health check: %v", err), start)
		case out.ExitCode != 0:
			return fail(res, out.ExitCode, strings.TrimSpace(out.Output), start)
		}
		res.Output = strings.TrimSpace(out.Output)
	}
	for _, m := range sp.Markers {
		ok, err := ex.PathExists(ctx, id, m)
		if err != nil {
			return fail(res, -1, fmt.Sprintf("checking ready marker %s: %v", m, err), start)
		}
		if !ok {
			return fail(res, 1, fmt.Sprintf("ready marker %s does not exist yet", m), start)
		}
	}
	res.Duration = time.Since(start)
	return res
}

func fail(r Result, code int, out string, start time.Time) Result {
	r.OK, r.ExitCode, r.Output, r.Duration = false, code, out, time.Since(start)
	return r
}

// Tracker applies Compose's rules to a sequence of probe results for one
// container run: failures inside the start period do not count until the
// first success; Retries consecutive failures after it make the container
// unhealthy; one success makes it healthy again.
type Tracker struct {
	spec      *Spec
	startedAt time.Time
	status    Status
	failures  int
	succeeded bool
	last      Result
	// lastCounted is when the last failure that counted happened.
	lastCounted time.Time
}

// NewTracker starts tracking a container that started at startedAt.
func NewTracker(sp *Spec, startedAt time.Time) *Tracker {
	t := &Tracker{spec: sp, startedAt: startedAt, status: Starting, lastCounted: startedAt}
	if sp == nil {
		t.status = None
	}
	return t
}

// Observe records a probe result and returns the new status.
func (t *Tracker) Observe(r Result) Status {
	t.last = r
	if t.spec == nil {
		return t.status
	}
	if r.OK {
		t.status, t.failures, t.succeeded = Healthy, 0, true
		return t.status
	}
	inStart := !t.succeeded && r.At.Sub(t.startedAt) < t.spec.StartPeriod
	if inStart {
		return t.status
	}
	// Outpost probes a starting service more often than its interval (see
	// NextDelay) to notice readiness sooner; those extra failures must not
	// spend the retries faster than Compose would, so a failure counts only
	// once an interval has passed since the last counted one (or the start).
	if r.At.Sub(t.lastCounted) < t.spec.Interval {
		return t.status
	}
	t.lastCounted = r.At
	t.failures++
	if t.failures >= t.spec.Retries {
		t.status = Unhealthy
	}
	return t.status
}

// Status returns the current status.
func (t *Tracker) Status() Status { return t.status }

// Failures returns the count of consecutive failures that counted.
func (t *Tracker) Failures() int { return t.failures }

// Last returns the last observed result.
func (t *Tracker) Last() Result { return t.last }

// maxStartingDelay caps the probe interval while a service is still starting
// (until its first success). Each level of the start graph waits for this
// detection delay, so it adds up along the critical path; the start-up
// benchmark (bench/startup) measured 1 s here costing ~1.1 s over the
// critical-path limit across four levels.
// Probing sooner only shortens the start; it never changes which failures
// count, so Outpost does not wait a full interval for the first success.
const maxStartingDelay = 250 * time.Millisecond

// NextDelay returns how long to wait before the next probe. n is the number
// of probes run so far in this container run.
func (t *Tracker) NextDelay(n int) time.Duration {
	if t.spec == nil {
		return t.spec.interval()
	}
	if !t.succeeded {
		d := t.spec.Interval
		if t.spec.StartInterval > 0 && time.Since(t.startedAt) < t.spec.StartPeriod {
			d = t.spec.StartInterval
		}
		// Ramp up 100ms, 200ms, then every maxStartingDelay while starting.
		ramp := 100 * time.Millisecond << min(n, 4)
		return min(d, ramp, maxStartingDelay)
	}
	return t.spec.Interval
}

func (s *Spec) interval() time.Duration {
	if s == nil {
		return model.DefaultHealthInterval
	}
	return s.Interval
}
