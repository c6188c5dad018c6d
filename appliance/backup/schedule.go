package backup

import (
	"time"

	"github.com/outpostdev/outpost/appliance/model"
)

// Scheduling: a scheduled snapshot is due one Schedule interval after the
// last complete snapshot of the appliance (whatever made it), so restarts
// of the daemon neither skip nor repeat one. With no snapshot yet, the
// first is due FirstDelay after the daemon started, once the appliance has
// settled. After a failure the next attempt waits RetryDelay (or the
// interval, when shorter).

// FirstDelay is how long after the daemon starts the first scheduled
// snapshot of an appliance that has none is taken.
const FirstDelay = 5 * time.Minute

// RetryDelay is how long a failed scheduled snapshot waits to be retried.
const RetryDelay = 15 * time.Minute

// NextDue returns when the next scheduled snapshot is due under policy p,
// given the finish time of the last complete snapshot (zero if none), of
// the last failed attempt (zero if none since), and the daemon's start. It
// returns the zero time when p schedules nothing.
func NextDue(p *model.BackupPolicy, lastComplete, lastFailed, started time.Time) time.Time {
	if p == nil || p.Schedule <= 0 {
		return time.Time{}
	}
	due := started.Add(FirstDelay)
	if !lastComplete.IsZero() {
		due = lastComplete.Add(p.Schedule)
	}
	if !lastFailed.IsZero() && lastFailed.After(lastComplete) {
		if retry := lastFailed.Add(min(RetryDelay, p.Schedule)); retry.After(due) {
			due = retry
		}
	}
	return due
}

// PolicyRetention is the retention rule of a policy.
func PolicyRetention(p *model.BackupPolicy) Retention {
	if p == nil {
		return Retention{}
	}
	return Retention{KeepLast: p.KeepLast, KeepWithin: p.KeepWithin}
}
