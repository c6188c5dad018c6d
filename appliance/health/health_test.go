package health

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
)

// fakeExec is a unit-test stand-in for the engine's exec and stat calls.
type fakeExec struct {
	code    int
	out     string
	err     error
	block   bool
	markers map[string]bool
	cmds    [][]string
}

func (f *fakeExec) Exec(ctx context.Context, id string, cmd []string) (engine.ExecResult, error) {
	f.cmds = append(f.cmds, cmd)
	if f.block {
		<-ctx.Done()
		return engine.ExecResult{}, ctx.Err()
	}
	return engine.ExecResult{ExitCode: f.code, Output: f.out}, f.err
}

func (f *fakeExec) PathExists(ctx context.Context, id, path string) (bool, error) {
	return f.markers[path], nil
}

func TestCommand(t *testing.T) {
	cases := []struct {
		test []string
		want []string
		err  bool
	}{
		{[]string{"CMD", "pg_isready", "-U", "tale"}, []string{"pg_isready", "-U", "tale"}, false},
		{[]string{"CMD-SHELL", "curl -f http://localhost/ && [ -f /tmp/x ]"}, []string{"/bin/sh", "-c", "curl -f http://localhost/ && [ -f /tmp/x ]"}, false},
		{[]string{"CMD"}, nil, true},
		{nil, nil, false},
	}
	for _, c := range cases {
		got, err := (&Spec{Test: c.test}).Command()
		if (err != nil) != c.err || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Command(%q) = %q, %v; want %q, err=%v", c.test, got, err, c.want, c.err)
		}
	}
}

func TestProbe(t *testing.T) {
	sp := &Spec{Test: []string{"CMD", "check"}, Timeout: 50 * time.Millisecond, Markers: []string{"/tmp/ready"}}
	ctx := context.Background()

	if r := Probe(ctx, &fakeExec{markers: map[string]bool{"/tmp/ready": true}}, "c", sp); !r.OK {
		t.Fatalf("healthy probe failed: %+v", r)
	}
	r := Probe(ctx, &fakeExec{}, "c", sp)
	if r.OK || !strings.Contains(r.Output, "ready marker /tmp/ready does not exist") {
		t.Fatalf("missing marker: %+v", r)
	}
	r = Probe(ctx, &fakeExec{code: 2, out: "db down\n"}, "c", sp)
	if r.OK || r.ExitCode != 2 || r.Output != "db down" {
		t.Fatalf("failing test: %+v", r)
	}
	r = Probe(ctx, &fakeExec{block: true}, "c", sp)
	if r.OK || !strings.Contains(r.Output, "timed out after 50ms") {
		t.Fatalf("timeout: %+v", r)
	}
	r = Probe(ctx, &fakeExec{err: errors.New("no such container")}, "c", sp)
	if r.OK || !strings.Contains(r.Output, "no such container") {
		t.Fatalf("exec error: %+v", r)
	}
}

func TestTrackerStartPeriod(t *testing.T) {
	t0 := time.Unix(1000, 0)
	sp := &Spec{Retries: 3, StartPeriod: 300 * time.Second, Interval: 10 * time.Second}
	tr := NewTracker(sp, t0)
	bad := func(at time.Duration) Status { return tr.Observe(Result{At: t0.Add(at)}) }
	good := func(at time.Duration) Status { return tr.Observe(Result{At: t0.Add(at), OK: true}) }

	// 299 s of failures inside a 300 s start period never count.
	for s := time.Duration(0); s < 300*time.Second; s += 10 * time.Second {
		if st := bad(s); st != Starting {
			t.Fatalf("at %s: %s, want starting (start period must be honoured)", s, st)
		}
	}
	// After it, Retries consecutive failures make it unhealthy.
	if bad(301*time.Second) != Starting || bad(311*time.Second) != Starting {
		t.Fatal("became unhealthy before retries were spent")
	}
	if st := bad(321 * time.Second); st != Unhealthy {
		t.Fatalf("after 3 failures: %s", st)
	}
	if st := good(331 * time.Second); st != Healthy {
		t.Fatalf("after success: %s", st)
	}
}

// Probes faster than the interval (while starting) never make a service
// unhealthy sooner than Compose would: retries × interval after the start.
func TestTrackerExtraProbesDoNotSpendRetries(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tr := NewTracker(&Spec{Retries: 3, Interval: time.Second}, t0)
	for ms := 100; ms < 3000; ms += 100 {
		if st := tr.Observe(Result{At: t0.Add(time.Duration(ms) * time.Millisecond)}); st != Starting {
			t.Fatalf("unhealthy after %d ms; Compose needs 3 failures 1 s apart", ms)
		}
	}
	if st := tr.Observe(Result{At: t0.Add(3 * time.Second)}); st != Unhealthy {
		t.Fatalf("after 3 s of failures: %s", st)
	}
}

func TestTrackerSuccessEndsStartPeriod(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tr := NewTracker(&Spec{Retries: 2, StartPeriod: time.Hour}, t0)
	tr.Observe(Result{At: t0.Add(time.Second), OK: true})
	tr.Observe(Result{At: t0.Add(2 * time.Second)})
	if st := tr.Observe(Result{At: t0.Add(3 * time.Second)}); st != Unhealthy {
		t.Fatalf("failures after first success must count: %s", st)
	}
}

func TestNextDelay(t *testing.T) {
	tr := NewTracker(&Spec{Interval: 30 * time.Second, StartPeriod: time.Minute}, time.Now())
	if d := tr.NextDelay(0); d != 100*time.Millisecond {
		t.Fatalf("first delay %s", d)
	}
	if d := tr.NextDelay(10); d != maxStartingDelay {
		t.Fatalf("starting delay capped at %s, got %s", maxStartingDelay, d)
	}
	tr.Observe(Result{At: time.Now(), OK: true})
	if d := tr.NextDelay(11); d != 30*time.Second {
		t.Fatalf("healthy delay %s", d)
	}
}

func TestFromService(t *testing.T) {
	if FromService(&model.Service{}) != nil {
		t.Fatal("spec for a service without checks")
	}
	sp := FromService(&model.Service{ReadyMarkers: []string{"/tmp/x"}})
	if sp == nil || sp.Retries != model.DefaultHealthRetries || len(sp.Markers) != 1 {
		t.Fatalf("markers-only spec: %+v", sp)
	}
}
