package upgrade

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/store"
	"github.com/outpostdev/outpost/appliance/volumes"
)

// rollback returns the appliance to revision prev after a failed (or
// interrupted) operation, journaling each step so that a rollback killed
// half-way is simply run again: the proxy first goes back to the
// services' own containers, the copies started beside are drained and
// removed, services the new definition added are removed, the previous
// definition is applied (every touched service back on its previous spec
// and image, dependants included), and the new revision is marked
// rolled_back. Volumes are never touched.
func (u *Upgrader) rollback(ctx context.Context, x *execution, prevRev store.Revision, bd beginData, traffic Traffic, progress runtime.ProgressFunc) error {
	prevApp, err := u.rt.DecodeRevision(prevRev)
	if err != nil {
		return err
	}
	prev := *prevApp
	progress("", fmt.Sprintf("rolling back to revision %d", prevRev.ID))
	if traffic != nil {
		err := x.do(ctx, "undo proxy", "", func(context.Context) (string, error) {
			for _, s := range bd.Rotated {
				traffic.Divert(prev.Name, s, nil)
			}
			return "", nil
		})
		if err != nil {
			return err
		}
	}
	err = x.do(ctx, "undo start beside", strings.Join(bd.Rotated, ","), func(ctx context.Context) (string, error) {
		return "", u.removeBesides(ctx, &prev, x.op, progress)
	})
	if err != nil {
		return err
	}
	if len(bd.Added) > 0 {
		err := x.do(ctx, "undo added services", strings.Join(bd.Added, ","), func(ctx context.Context) (string, error) {
			for _, s := range bd.Added {
				if err := u.removeContainer(ctx, runtime.ContainerName(prev.Name, s), model.DefaultStopGrace, progress); err != nil {
					return "", err
				}
			}
			return "", nil
		})
		if err != nil {
			return err
		}
	}
	err = x.do(ctx, fmt.Sprintf("undo apply: revision %d", prevRev.ID), "", func(ctx context.Context) (string, error) {
		r, err := u.rt.Up(ctx, &prev, runtime.UpOptions{Progress: progress})
		if err != nil {
			return "", err
		}
		return fmt.Sprint(r.Revision), nil
	})
	if err != nil {
		return err
	}
	// The revisions this operation created are marked rolled_back; one
	// it applied again that existed before (a rollback's target) becomes
	// superseded again, so it stays a rollback target.
	revs, err := u.st.Revisions(ctx, prev.Name)
	if err != nil {
		return err
	}
	for _, r := range revs {
		if r.ID == prevRev.ID {
			continue
		}
		if r.Status != store.RevisionApplying && (r.Status != store.RevisionSuperseded || x.applied != r.ID) {
			continue
		}
		status := store.RevisionRolledBack
		if bd.Known > 0 && r.ID <= bd.Known && !r.AppliedAt.IsZero() {
			status = store.RevisionSuperseded
		}
		if err := u.st.SetRevisionStatus(ctx, r.ID, status); err != nil {
			u.log.Warn("recording the status of a revision the rollback undid failed", "revision", r.ID, "status", status, "err", err)
		}
	}
	if err := u.st.FinishOp(ctx, x.op, "rolled_back"); err != nil {
		return err
	}
	u.event(ctx, prev.Name, "rolled-back", fmt.Sprintf("operation %d rolled back to revision %d", x.op, prevRev.ID))
	progress("", fmt.Sprintf("rolled back to revision %d", prevRev.ID))
	return nil
}

// removeBesides drains and removes every copy operation op started beside
// a service of app.
func (u *Upgrader) removeBesides(ctx context.Context, app *model.Appliance, op int64, progress runtime.ProgressFunc) error {
	all, err := u.eng.ListContainers(ctx, map[string]string{"io.outpost.appliance": app.Name})
	if err != nil {
		return fmt.Errorf("listing containers of %s: %w", app.Name, err)
	}
	suffix := fmt.Sprintf("-up%d", op)
	for _, c := range all {
		if !strings.HasSuffix(c.Name, suffix) {
			continue
		}
		grace := model.DefaultStopGrace
		if s := app.Services[c.Labels["io.outpost.service"]]; s != nil {
			grace = s.StopGracePeriod
		}
		if err := u.removeContainer(ctx, c.Name, grace, progress); err != nil {
			return err
		}
	}
	return nil
}

// RecoverResult says what Recover did with each open operation.
type RecoverResult struct {
	// Finished are operations whose every step was done: recorded done.
	Finished []int64 `json:"finished,omitempty"`
	// RolledBack are operations rolled back to their starting revision.
	RolledBack []int64 `json:"rolled_back,omitempty"`
}

// Recover settles the upgrades and rollbacks of the appliance that a
// killed process left open in the journal. The policy: an operation
// whose every step was journaled done is finished (recorded done); any
// other is rolled back to the revision it started from, which is still
// the recorded active one for every step but the last. Either way one
// copy of each service serves afterwards and volumes are kept. It fails
// with a *store.LockedError (wrapped) while another process upgrades.
func (u *Upgrader) Recover(ctx context.Context, appliance string, traffic Traffic, progress runtime.ProgressFunc) (*RecoverResult, error) {
	ops, err := u.st.OpenOps(ctx, appliance)
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(ops, isUpgradeOp) {
		return &RecoverResult{}, nil
	}
	release, err := u.lock(ctx, appliance, "outpost upgrade recovery")
	if err != nil {
		return nil, fmt.Errorf("an upgrade or rollback of %s is running; wait for it: %w", appliance, err)
	}
	defer release()
	if progress == nil {
		progress = func(string, string) {}
	}
	return u.recoverLocked(ctx, appliance, traffic, progress)
}

func isUpgradeOp(o store.Op) bool { return o.Kind == KindUpgrade || o.Kind == KindRollback }

// recoverLocked is Recover with the lock held.
func (u *Upgrader) recoverLocked(ctx context.Context, appliance string, traffic Traffic, progress runtime.ProgressFunc) (*RecoverResult, error) {
	ops, err := u.st.OpenOps(ctx, appliance)
	if err != nil {
		return nil, err
	}
	res := &RecoverResult{}
	for _, o := range ops {
		if !isUpgradeOp(o) {
			continue
		}
		v := judge(o.Entries)
		bd := v.begin
		x := &execution{u: u, op: o.ID, progress: progress, n: v.last, applied: v.applied}
		switch v.verdict {
		case verdictUntouched:
			// Killed before its first step: nothing was touched.
			if err := u.st.FinishOp(ctx, o.ID, "rolled_back"); err != nil {
				return res, err
			}
			res.RolledBack = append(res.RolledBack, o.ID)
			continue
		case verdictFinish:
			progress("", fmt.Sprintf("%s %d was killed after its last step; recording it done", o.Kind, o.ID))
			if err := u.st.FinishOp(ctx, o.ID, "done"); err != nil {
				return res, err
			}
			res.Finished = append(res.Finished, o.ID)
			continue
		}
		prevRev, err := u.st.Revision(ctx, bd.From)
		if err != nil {
			return res, fmt.Errorf("recovering %s %d: %w", o.Kind, o.ID, err)
		}
		progress("", fmt.Sprintf("%s %d was interrupted at step %d (%s); rolling back to revision %d", o.Kind, o.ID, v.last, v.lastName, bd.From))
		if err := u.rollback(ctx, x, prevRev, bd, traffic, progress); err != nil {
			return res, fmt.Errorf("rolling back interrupted %s %d: %w", o.Kind, o.ID, err)
		}
		res.RolledBack = append(res.RolledBack, o.ID)
	}
	return res, nil
}

// Verdicts of judge on an open operation.
const (
	verdictUntouched = "untouched" // no step began: nothing to undo
	verdictFinish    = "finish"    // every step was done: record it done
	verdictRollback  = "rollback"  // anything else: roll back
)

// judgement is what an open operation's journal says.
type judgement struct {
	verdict  string
	begin    beginData
	last     int    // the last step journaled
	lastName string // its name
	applied  int64  // the revision the apply step made active, 0 if none
}

// judge reads an open operation's journal entries (oldest first) and
// decides how to settle it (see Recover for the policy).
func judge(entries []store.JournalEntry) judgement {
	var j judgement
	latest := map[int]string{}
	haveBegin, undoing := false, false
	for _, e := range entries {
		latest[e.Step] = e.State
		if e.Step >= j.last {
			j.last, j.lastName = e.Step, e.Name
		}
		switch {
		case e.Step == 1 && e.Name == "begin" && e.State == store.StepStarted:
			haveBegin = json.Unmarshal([]byte(e.Data), &j.begin) == nil
		case strings.HasPrefix(e.Name, "undo"):
			undoing = true
		case e.Name == "apply" && e.State == store.StepDone:
			j.applied, _ = strconv.ParseInt(e.Data, 10, 64)
		}
	}
	if !haveBegin {
		j.verdict = verdictUntouched
		return j
	}
	complete := !undoing && j.begin.Steps > 0
	for i := 1; complete && i <= j.begin.Steps; i++ {
		complete = latest[i] == store.StepDone
	}
	j.verdict = verdictRollback
	if complete {
		j.verdict = verdictFinish
	}
	return j
}

// RollbackOptions configure Rollback.
type RollbackOptions struct {
	// Appliance is the deployed appliance. Required.
	Appliance string
	// Revision is the revision to return to; 0 means the one active before
	// the current.
	Revision int64
	// StateDir, Timeout, Progress, Traffic, CrashAt and DryRun are as in
	// Options.
	StateDir string
	Timeout  time.Duration
	Progress runtime.ProgressFunc
	Traffic  Traffic
	CrashAt  int
	DryRun   bool
}

// ErrMigrated is returned (wrapped) by Rollback when the target revision
// predates a volume migration that completed: its services would read
// the migration's source, without what was written since.
var ErrMigrated = errors.New("rollback crosses a completed volume migration")

// Rollback returns the appliance to a recorded revision as one journaled
// operation, like an upgrade (jobs with when: upgrade do not run). It
// refuses to cross a completed volume migration and names the snapshot to
// restore instead.
func (u *Upgrader) Rollback(ctx context.Context, opts RollbackOptions) (*Result, error) {
	active, err := u.st.ActiveRevision(ctx, opts.Appliance)
	if err != nil {
		return nil, fmt.Errorf("appliance %s: %w", opts.Appliance, ErrNothingDeployed)
	}
	target, err := u.target(ctx, opts.Appliance, active, opts.Revision)
	if err != nil {
		return nil, err
	}
	// Decoded with the secrets' values: the definitions must compare as
	// they were applied, and the copies started beside need the values.
	cur, err := u.rt.DecodeRevision(active)
	if err != nil {
		return nil, err
	}
	app, err := u.rt.DecodeRevision(target)
	if err != nil {
		return nil, err
	}
	if err := u.checkMigrations(ctx, cur, app, active, target); err != nil {
		return nil, err
	}
	return u.Upgrade(ctx, Options{App: app, StateDir: opts.StateDir, Timeout: opts.Timeout, Progress: opts.Progress,
		Traffic: opts.Traffic, CrashAt: opts.CrashAt, DryRun: opts.DryRun, kind: KindRollback})
}

// target resolves the revision to roll back to.
func (u *Upgrader) target(ctx context.Context, appliance string, active store.Revision, id int64) (store.Revision, error) {
	if id != 0 {
		r, err := u.st.Revision(ctx, id)
		if err != nil {
			return r, fmt.Errorf("revision %d: %w (see `outpost history`)", id, err)
		}
		if r.Appliance != appliance {
			return r, fmt.Errorf("revision %d belongs to appliance %s, not %s", id, r.Appliance, appliance)
		}
		if r.ID == active.ID {
			return r, fmt.Errorf("revision %d is already active", id)
		}
		if len(r.Spec) == 0 {
			return r, fmt.Errorf("revision %d has no recorded definition", id)
		}
		return r, nil
	}
	revs, err := u.st.Revisions(ctx, appliance)
	if err != nil {
		return store.Revision{}, err
	}
	var best store.Revision
	for _, r := range revs {
		if r.Status == store.RevisionSuperseded && len(r.Spec) > 0 && r.AppliedAt.After(best.AppliedAt) {
			best = r
		}
	}
	if best.ID == 0 {
		return best, fmt.Errorf("appliance %s has no earlier revision to roll back to (see `outpost history`)", appliance)
	}
	return best, nil
}

// checkMigrations refuses a rollback from cur to target when cur reads a
// volume that a completed migration filled and target does not declare
// that migration.
func (u *Upgrader) checkMigrations(ctx context.Context, cur, target *model.Appliance, active, targetRev store.Revision) error {
	for _, m := range cur.VolumeMigrations {
		if slices.Contains(target.VolumeMigrations, m) {
			continue
		}
		from, to := volumeName(cur, m.From), volumeName(cur, m.To)
		if _, err := u.st.Get(ctx, volumes.RecordKey(cur.Name, from, to)); err != nil {
			continue // never completed: the source is still the data
		}
		snap := "none is recorded"
		if b, ok := u.snapshotBefore(ctx, cur.Name, targetRev.ID); ok {
			snap = fmt.Sprintf("restore snapshot %s, taken before that upgrade, instead: `outpost restore %s --stop` brings back revision %d with its data", b.Name, b.Name, targetRev.ID)
		} else {
			snap = "no snapshot from before it is recorded (" + snap + "); restore one you have with `outpost restore`"
		}
		return fmt.Errorf("%w: revision %d reads volume %s, into which revision %d migrated %s; rolling back to revision %d would run on %s without what was written since. Refused: %s",
			ErrMigrated, active.ID, to, active.ID, from, targetRev.ID, from, snap)
	}
	return nil
}

// snapshotBefore returns the newest complete snapshot an upgrade took
// while rev was deployed.
func (u *Upgrader) snapshotBefore(ctx context.Context, appliance string, rev int64) (store.Backup, bool) {
	bs, err := u.st.Backups(ctx, appliance)
	if err != nil {
		return store.Backup{}, false
	}
	var best store.Backup
	for _, b := range bs {
		if b.Revision == rev && b.Status == store.BackupComplete && b.StartedAt.After(best.StartedAt) {
			best = b
		}
	}
	return best, best.ID != 0
}

func volumeName(app *model.Appliance, key string) string {
	if v, ok := app.Volumes[key]; ok {
		return v.Name
	}
	return app.Name + "_" + key
}

// History returns the appliance's revisions, newest first.
func (u *Upgrader) History(ctx context.Context, appliance string) ([]store.Revision, error) {
	return u.st.Revisions(ctx, appliance)
}
