package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/outpostdev/outpost/appliance/backup"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/store"
)

// Backups and restores go through the daemon when one runs, because it
// supervises the appliance: a service stopped for a copy, or the whole
// appliance stopped for a restore, would otherwise be restarted under the
// operation's feet.
//
//	POST /v1/backup   BackupRequest  → NDJSON stream of BackupLine, last one has Backup or Error
//	POST /v1/restore  RestoreRequest → NDJSON stream of BackupLine, last one has Restore or Error

// BackupRequest is the body of POST /v1/backup.
type BackupRequest struct {
	// Appliance defaults to the one the daemon runs.
	Appliance      string `json:"appliance,omitempty"`
	Dir            string `json:"dir,omitempty"`
	Quiesce        string `json:"quiesce,omitempty"`
	SkipVerify     bool   `json:"skip_verify,omitempty"`
	OutpostVersion string `json:"outpost_version,omitempty"`
}

// RestoreRequest is the body of POST /v1/restore.
type RestoreRequest struct {
	// Snapshot is the snapshot directory's absolute path.
	Snapshot string        `json:"snapshot"`
	Stop     bool          `json:"stop,omitempty"`
	Timeout  time.Duration `json:"timeout,omitempty"`
}

// BackupLine is one line of a streamed backup or restore.
type BackupLine struct {
	Event *backup.Event `json:"event,omitempty"`
	// Service and Message carry the start's progress during a restore.
	Service string                `json:"service,omitempty"`
	Message string                `json:"message,omitempty"`
	Backup  *backup.Result        `json:"backup,omitempty"`
	Restore *backup.RestoreResult `json:"restore,omitempty"`
	Error   string                `json:"error,omitempty"`
}

// backupRoutes registers the backup endpoints on the control API.
func (d *Daemon) backupRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/backup", d.handleBackup)
	mux.HandleFunc("POST /v1/restore", d.handleRestore)
}

func (d *Daemon) manager() *backup.Manager {
	return backup.New(d.env.Engine, d.env.Store, d.env.Runtime, d.env.Log)
}

// backup takes a snapshot while holding the daemon's operation lock;
// supervision pauses only while services are held for a copy.
func (d *Daemon) backup(ctx context.Context, opts backup.Options) (*backup.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	opts.StateDir = d.env.Paths.StateDir
	opts.Suspend = func() func() {
		d.stopSupervision()
		return func() {
			if cur := d.current(); cur != nil {
				d.startSupervision(cur)
			}
		}
	}
	return d.manager().Backup(ctx, opts)
}

// restore restores a snapshot and supervises the restored appliance.
func (d *Daemon) restore(ctx context.Context, opts backup.RestoreOptions) (*backup.RestoreResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	opts.StateDir = d.env.Paths.StateDir
	changed := false
	opts.BeforeChange = func() {
		changed = true
		d.stopSupervision()
	}
	res, err := d.manager().Restore(ctx, opts)
	if err != nil {
		if !changed {
			return nil, err
		}
		// The appliance was stopped and partly restored: supervising it
		// would restart services on half-restored data.
		return nil, fmt.Errorf("%w (the daemon stopped supervising it)", err)
	}
	d.setApp(res.Definition)
	d.startSupervision(res.Definition)
	return res, nil
}

func (d *Daemon) handleBackup(w http.ResponseWriter, r *http.Request) {
	var req BackupRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("decoding backup request: %v", err)})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	s := &streamer{w: w}
	name := req.Appliance
	if name == "" {
		if app := d.current(); app != nil {
			name = app.Name
		}
	}
	if name == "" {
		sendLine(s, BackupLine{Error: ErrNoAppliance.Error()})
		return
	}
	res, err := d.backup(context.WithoutCancel(r.Context()), backup.Options{
		Appliance: name, Dir: req.Dir, Quiesce: req.Quiesce, SkipVerify: req.SkipVerify, OutpostVersion: req.OutpostVersion,
		Progress: func(e backup.Event) { sendLine(s, BackupLine{Event: &e}) },
	})
	if err != nil {
		sendLine(s, BackupLine{Error: err.Error()})
		return
	}
	sendLine(s, BackupLine{Backup: res})
}

func (d *Daemon) handleRestore(w http.ResponseWriter, r *http.Request) {
	var req RestoreRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Snapshot == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("decoding restore request: %v", err)})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	s := &streamer{w: w}
	// Like up, a restore must not die with the client.
	res, err := d.restore(context.WithoutCancel(r.Context()), backup.RestoreOptions{
		Snapshot: req.Snapshot, StopRunning: req.Stop, Timeout: req.Timeout,
		Progress:   func(e backup.Event) { sendLine(s, BackupLine{Event: &e}) },
		UpProgress: func(svc, msg string) { sendLine(s, BackupLine{Service: svc, Message: msg}) },
	})
	if err != nil {
		sendLine(s, BackupLine{Error: err.Error()})
		return
	}
	sendLine(s, BackupLine{Restore: res})
}

func sendLine(s *streamer, l BackupLine) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = json.NewEncoder(s.w).Encode(l)
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Backup asks the daemon to take a snapshot, streaming its progress.
func (c *Client) Backup(ctx context.Context, req BackupRequest, progress backup.ProgressFunc) (*backup.Result, error) {
	var res *backup.Result
	err := c.streamBackup(ctx, "/v1/backup", req, progress, nil, func(l BackupLine) { res = l.Backup })
	if err == nil && res == nil {
		err = errors.New("the daemon ended the backup without a result; see its log")
	}
	return res, err
}

// Restore asks the daemon to restore a snapshot, streaming its progress.
func (c *Client) Restore(ctx context.Context, req RestoreRequest, progress backup.ProgressFunc, upProgress runtime.ProgressFunc) (*backup.RestoreResult, error) {
	var res *backup.RestoreResult
	err := c.streamBackup(ctx, "/v1/restore", req, progress, upProgress, func(l BackupLine) { res = l.Restore })
	if err == nil && res == nil {
		err = errors.New("the daemon ended the restore without a result; see its log")
	}
	return res, err
}

func (c *Client) streamBackup(ctx context.Context, path string, body any, progress backup.ProgressFunc, upProgress runtime.ProgressFunc, last func(BackupLine)) error {
	resp, err := c.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return errors.New("the running outpost daemon is older and cannot do this; restart it with this outpost")
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l BackupLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading the daemon's reply: %w", err)
		}
		switch {
		case l.Error != "":
			return errors.New(l.Error)
		case l.Backup != nil || l.Restore != nil:
			last(l)
		case l.Event != nil && progress != nil:
			progress(*l.Event)
		case l.Service != "" && upProgress != nil:
			upProgress(l.Service, l.Message)
		}
	}
}

// runBackupSchedule takes the scheduled snapshots of x-outpost.backup
// while the daemon runs, and applies the policy's retention after each.
// It checks once a minute; the schedule lives in the store (the last
// complete snapshot), so daemon restarts neither skip nor repeat one.
func (d *Daemon) runBackupSchedule(ctx context.Context) {
	started := time.Now()
	var lastFailed time.Time
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		app := d.current()
		if app == nil || app.Backup == nil || app.Backup.Schedule <= 0 {
			continue
		}
		var lastDone time.Time
		if b, err := d.env.Store.LastBackup(ctx, app.Name, store.BackupComplete); err == nil {
			lastDone = b.FinishedAt
		}
		if time.Now().Before(backup.NextDue(app.Backup, lastDone, lastFailed, started)) {
			continue
		}
		d.env.Log.Info("scheduled backup starting", "appliance", app.Name)
		res, err := d.backup(ctx, backup.Options{Appliance: app.Name, Dir: app.Backup.Dir, Quiesce: app.Backup.Quiesce, Trigger: backup.TriggerSchedule})
		if err != nil {
			lastFailed = time.Now()
			d.env.Log.Error("scheduled backup failed", "appliance", app.Name, "err", err)
			continue
		}
		lastFailed = time.Time{}
		d.env.Log.Info("scheduled backup complete", "appliance", app.Name, "path", res.Path, "size", res.Size, "duration", res.Duration.Round(time.Millisecond))
		if ret := backup.PolicyRetention(app.Backup); !ret.Empty() {
			var dirs []string
			if app.Backup.Dir != "" {
				dirs = []string{app.Backup.Dir}
			}
			pr, err := d.manager().Prune(ctx, backup.PruneOptions{Appliance: app.Name, StateDir: d.env.Paths.StateDir, Dirs: dirs, Retention: ret})
			if err != nil {
				d.env.Log.Error("pruning backups failed", "appliance", app.Name, "err", err)
				continue
			}
			d.env.Log.Info("backups pruned", "appliance", app.Name, "removed", len(pr.Removed), "kept", len(pr.Kept))
		}
	}
}
