package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/proxy"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/upgrade"
)

// Upgrades and rollbacks go through the daemon when one runs: it holds
// supervision (which would restart what the upgrade stops) and the
// embedded proxy, whose traffic moves to a rotatable service's new copy
// in-process.
//
//	POST /v1/upgrade   UpgradeRequest → NDJSON stream of UpgradeLine, last one has Result or Error
//	POST /v1/rollback  UpgradeRequest → the same

// UpgradeRequest is the body of POST /v1/upgrade and /v1/rollback.
type UpgradeRequest struct {
	// Appliance is the new definition (upgrade only).
	Appliance *model.Appliance `json:"appliance,omitempty"`
	// Name is the appliance to roll back; default the daemon's.
	Name string `json:"name,omitempty"`
	// Revision is the rollback's target; 0: the previous one.
	Revision       int64         `json:"revision,omitempty"`
	DryRun         bool          `json:"dry_run,omitempty"`
	SkipBackup     bool          `json:"skip_backup,omitempty"`
	Timeout        time.Duration `json:"timeout,omitempty"`
	CrashAt        int           `json:"crash_at,omitempty"`
	OutpostVersion string        `json:"outpost_version,omitempty"`
	// PendingImages are image IDs of a verified bundle that a dry run
	// did not load (see upgrade.Options).
	PendingImages []string `json:"pending_images,omitempty"`
}

// UpgradeLine is one line of a streamed upgrade or rollback.
type UpgradeLine struct {
	Service string          `json:"service,omitempty"`
	Message string          `json:"message,omitempty"`
	Result  *upgrade.Result `json:"result,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// The embedded proxy is what switches a rotatable service's traffic.
var _ upgrade.Traffic = (*proxy.Proxy)(nil)

func (d *Daemon) upgradeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/upgrade", d.handleUpgrade)
	mux.HandleFunc("POST /v1/rollback", d.handleUpgrade)
}

func (d *Daemon) upgrader() *upgrade.Upgrader {
	return upgrade.New(d.env.Engine, d.env.Store, d.env.Runtime, d.env.Log)
}

// RecoverUpgrades settles the upgrades and rollbacks of appliance name
// that a killed process left open (see upgrade.Upgrader.Recover); `run`
// and a foreground `up` call it before starting the appliance.
func RecoverUpgrades(ctx context.Context, env *Env, name string, progress runtime.ProgressFunc) error {
	_, err := upgrade.New(env.Engine, env.Store, env.Runtime, env.Log).Recover(ctx, name, nil, progress)
	return err
}

// upgradeOrRollback runs one operation with supervision held, then
// serves and supervises whatever revision is active afterwards (the new
// one, or the previous one after a rollback).
func (d *Daemon) upgradeOrRollback(ctx context.Context, rollback bool, req UpgradeRequest, progress runtime.ProgressFunc) (*upgrade.Result, error) {
	// A second operation is refused rather than queued behind the first:
	// an operator who starts an upgrade twice must hear so.
	if !d.mu.TryLock() {
		return nil, errors.New("another upgrade or rollback (or an up, down or backup) is running in the outpost daemon; wait for it to finish (`outpost status`, `outpost events`)")
	}
	defer d.mu.Unlock()
	u := d.upgrader()
	name := req.Name
	if !rollback {
		if req.Appliance == nil {
			return nil, errors.New("upgrade: no definition given")
		}
		name = req.Appliance.Name
	}
	if name == "" {
		if cur := d.current(); cur != nil {
			name = cur.Name
		}
	}
	if name == "" {
		return nil, ErrNoAppliance
	}
	if !req.DryRun {
		d.stopSupervision()
		defer func() {
			if app, _, err := d.env.Runtime.Deployed(context.WithoutCancel(ctx), name); err == nil {
				if app, err := d.env.WithSecrets(app); err == nil {
					d.setApp(app)
				}
				if err := d.startProxy(context.WithoutCancel(ctx), d.current()); err != nil {
					d.env.Log.Warn("applying the proxy config after the upgrade failed", "err", err)
				}
			}
			if cur := d.current(); cur != nil {
				d.startSupervision(cur)
			}
		}()
	}
	if rollback {
		return u.Rollback(ctx, upgrade.RollbackOptions{Appliance: name, Revision: req.Revision, StateDir: d.env.Paths.StateDir,
			Timeout: req.Timeout, Progress: progress, Traffic: d.proxy, CrashAt: req.CrashAt, DryRun: req.DryRun})
	}
	app, err := d.env.WithSecrets(req.Appliance)
	if err != nil {
		return nil, err
	}
	return u.Upgrade(ctx, upgrade.Options{App: app, StateDir: d.env.Paths.StateDir, DryRun: req.DryRun, SkipBackup: req.SkipBackup, Timeout: req.Timeout,
		Progress: progress, Traffic: d.proxy, CrashAt: req.CrashAt, OutpostVersion: req.OutpostVersion, PendingImages: req.PendingImages})
}

func (d *Daemon) handleUpgrade(w http.ResponseWriter, r *http.Request) {
	var req UpgradeRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("decoding request: %v", err)})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	s := &streamer{w: w}
	send := func(l UpgradeLine) {
		s.mu.Lock()
		defer s.mu.Unlock()
		_ = json.NewEncoder(s.w).Encode(l)
		if f, ok := s.w.(http.Flusher); ok {
			f.Flush()
		}
	}
	progress := func(svc, msg string) { send(UpgradeLine{Service: svc, Message: msg}) }
	// Waiting for the daemon's start ends with the client: nothing has
	// been done yet.
	if err := d.waitStarted(r.Context(), progress); err != nil {
		send(UpgradeLine{Error: err.Error()})
		return
	}
	// The operation itself must not die with the client.
	ctx := context.WithoutCancel(r.Context())
	res, err := d.upgradeOrRollback(ctx, r.URL.Path == "/v1/rollback", req, progress)
	if err != nil {
		send(UpgradeLine{Error: err.Error()})
		return
	}
	send(UpgradeLine{Result: res})
}

// Upgrade asks the daemon to upgrade to req.Appliance, streaming progress.
func (c *Client) Upgrade(ctx context.Context, req UpgradeRequest, progress runtime.ProgressFunc) (*upgrade.Result, error) {
	return c.streamUpgrade(ctx, "/v1/upgrade", req, progress)
}

// Rollback asks the daemon to roll back, streaming progress.
func (c *Client) Rollback(ctx context.Context, req UpgradeRequest, progress runtime.ProgressFunc) (*upgrade.Result, error) {
	return c.streamUpgrade(ctx, "/v1/rollback", req, progress)
}

func (c *Client) streamUpgrade(ctx context.Context, path string, req UpgradeRequest, progress runtime.ProgressFunc) (*upgrade.Result, error) {
	resp, err := c.do(ctx, http.MethodPost, path, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, errors.New("the running outpost daemon is older and cannot upgrade; restart it with this outpost")
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var l UpgradeLine
		if err := dec.Decode(&l); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, errors.New("the daemon ended the operation without a result (did it exit? see its log, then `outpost upgrade --resume`)")
			}
			return nil, fmt.Errorf("reading the daemon's reply: %w", err)
		}
		switch {
		case l.Error != "":
			return nil, errors.New(l.Error)
		case l.Result != nil:
			return l.Result, nil
		case progress != nil:
			progress(l.Service, l.Message)
		}
	}
}
