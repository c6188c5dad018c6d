package daemon

import (
	"testing"
	"time"
)

func TestStatusBoardShowsWhatItWaitsForWithElapsedTime(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := newStatusBoard(func() time.Time { return now })
	b.expect([]string{"db", "convex", "platform", "migrate"})
	if got, want := b.line(), "0/4 ready"; got != want {
		t.Fatalf("before any progress: %q, want %q", got, want)
	}
	b.observe("db", "checking health")
	now = now.Add(3 * time.Second)
	b.observe("db", "healthy after 3s")
	b.observe("convex", "checking health")
	b.observe("platform", "waiting for convex (service_healthy)")
	now = now.Add(42 * time.Second)
	if got, want := b.line(), "waiting for convex (42s); 1/4 ready"; got != want {
		t.Fatalf("during convex's start period: %q, want %q", got, want)
	}
	// The same line again does not reset the clock.
	b.observe("convex", "checking health")
	now = now.Add(time.Second)
	if got, want := b.line(), "waiting for convex (43s); 1/4 ready"; got != want {
		t.Fatalf("after a repeated line: %q, want %q", got, want)
	}
	b.observe("convex", "healthy after 43s")
	if got, want := b.line(), "platform: waiting for convex (service_healthy); 2/4 ready"; got != want {
		t.Fatalf("between steps: %q, want %q", got, want)
	}
	b.observe("platform", "running, unchanged")
	b.observe("migrate", "running job")
	now = now.Add(5 * time.Second)
	b.observe("migrate", "job completed")
	if got, want := b.line(), "4/4 ready"; got != want {
		t.Fatalf("at the end: %q, want %q", got, want)
	}
}
