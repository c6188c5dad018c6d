package daemon

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// statusBoard turns the runtime's per-service progress lines into the one
// line systemd shows as the unit's Status ("waiting for convex (42s); 3/6
// healthy"). It is refreshed on every progress line and every few seconds
// while a start runs, so the elapsed time keeps counting in
// `systemctl status` during a long start_period.
type statusBoard struct {
	mu       sync.Mutex
	services map[string]boardEntry
	now      func() time.Time
}

type boardEntry struct {
	msg   string
	since time.Time
}

func newStatusBoard(now func() time.Time) *statusBoard {
	if now == nil {
		now = time.Now
	}
	return &statusBoard{services: map[string]boardEntry{}, now: now}
}

// expect registers the services and jobs a start will report on, so the
// count of ready ones has the right total from the first line.
func (b *statusBoard) expect(names []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range names {
		if _, ok := b.services[n]; !ok {
			b.services[n] = boardEntry{msg: pending, since: b.now()}
		}
	}
}

// pending is the board's message for a service nothing was reported on yet.
const pending = "pending"

// observe records a progress line of svc.
func (b *statusBoard) observe(svc, msg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.services[svc]; ok && cur.msg == msg {
		return
	}
	b.services[svc] = boardEntry{msg: msg, since: b.now()}
}

// done reports whether a progress line ends a service's start.
func done(msg string) bool {
	for _, p := range []string{"healthy", "running", "job completed", "stopped", "removed"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// line renders the Status line: the services Outpost is actively waiting
// on (starting containers, health checks, jobs) with how long each has
// taken, longest first; else what the rest are waiting for; and how many
// are done.
func (b *statusBoard) line() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	type item struct {
		svc, msg string
		since    time.Time
	}
	var active, waiting []item
	finished := 0
	for svc, e := range b.services {
		switch {
		case done(e.msg):
			finished++
		case e.msg == pending:
		case strings.HasPrefix(e.msg, "waiting for "):
			waiting = append(waiting, item{svc, e.msg, e.since})
		default:
			active = append(active, item{svc, e.msg, e.since})
		}
	}
	byAge := func(xs []item) {
		sort.Slice(xs, func(i, j int) bool {
			if !xs[i].since.Equal(xs[j].since) {
				return xs[i].since.Before(xs[j].since)
			}
			return xs[i].svc < xs[j].svc
		})
	}
	byAge(active)
	byAge(waiting)
	now := b.now()
	var parts []string
	if len(active) > 0 {
		names := make([]string, 0, len(active))
		for _, it := range active {
			names = append(names, fmt.Sprintf("%s (%s)", it.svc, now.Sub(it.since).Round(time.Second)))
		}
		parts = append(parts, "waiting for "+strings.Join(names, ", "))
	} else if len(waiting) > 0 {
		parts = append(parts, fmt.Sprintf("%s: %s", waiting[0].svc, waiting[0].msg))
	}
	parts = append(parts, fmt.Sprintf("%d/%d ready", finished, len(b.services)))
	return strings.Join(parts, "; ")
}
