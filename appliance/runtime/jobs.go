package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

// InstallJobKey is the meta key recording that an install job of an
// appliance completed: `when: install` jobs run once per installation, so
// a restarted daemon, a reboot or a reinstall over kept state never runs
// them again.
func InstallJobKey(appliance, job string) string {
	return "install-job/" + appliance + "/" + job
}

// InstallJobRecord is the value stored under InstallJobKey.
type InstallJobRecord struct {
	CompletedAt time.Time `json:"completed_at"`
	Revision    int64     `json:"revision"`
}

// InstallJobDone returns when an install job of the appliance completed,
// or ok=false when it never did.
func (r *Runtime) InstallJobDone(ctx context.Context, appliance, job string) (rec InstallJobRecord, ok bool, err error) {
	v, err := r.st.Get(ctx, InstallJobKey(appliance, job))
	if errors.Is(err, store.ErrNotFound) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, err
	}
	if err := json.Unmarshal([]byte(v), &rec); err != nil {
		return rec, false, fmt.Errorf("decoding %s: %w", InstallJobKey(appliance, job), err)
	}
	return rec, true, nil
}

func (r *Runtime) recordInstallJob(ctx context.Context, appliance, job string, rev int64) error {
	b, _ := json.Marshal(InstallJobRecord{CompletedAt: time.Now().UTC(), Revision: rev})
	if err := r.st.Set(context.WithoutCancel(ctx), InstallJobKey(appliance, job), string(b)); err != nil {
		return fmt.Errorf("recording that install job %s completed: %w", job, err)
	}
	r.event(ctx, appliance, job, "install-job-done", fmt.Sprintf("revision %d; it will not run again", rev))
	return nil
}

// Jobs returns the names of the jobs an Up with operation op would run
// now, in declaration order (see UpOptions.Operation).
func (r *Runtime) Jobs(ctx context.Context, app *model.Appliance, op model.JobWhen) ([]string, error) {
	_, err := r.st.ActiveRevision(ctx, app.Name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("reading active revision: %w", err)
	}
	runs, err := r.jobsToRun(ctx, app, op, err == nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, j := range app.Jobs {
		if runs[j.Name] {
			out = append(out, j.Name)
		}
	}
	return out, nil
}

// jobsToRun decides which jobs a start runs. A plain start of an appliance
// that never came up healthy is its install: `when: install` jobs run then,
// each until it has completed once (recorded in the store), so a first
// start that failed after its install job succeeded does not run the job
// again on the next attempt.
func (r *Runtime) jobsToRun(ctx context.Context, app *model.Appliance, op model.JobWhen, hasActive bool) (map[string]bool, error) {
	if op == "" && !hasActive {
		op = model.JobInstall
	}
	runs := map[string]bool{}
	for _, j := range app.Jobs {
		switch {
		case j.When == model.JobAlways:
			runs[j.Name] = true
		case j.When != op:
		case op == model.JobInstall:
			_, done, err := r.InstallJobDone(ctx, app.Name, j.Name)
			if err != nil {
				return nil, err
			}
			runs[j.Name] = !done
		default:
			runs[j.Name] = true
		}
	}
	return runs, nil
}
