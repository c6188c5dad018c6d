package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/proxy"
	"github.com/outpostdev/outpost/appliance/runtime"
)

// RunOptions configure Run.
type RunOptions struct {
	// UpTimeout bounds the initial start; 0: no bound beyond health rules.
	UpTimeout time.Duration
	// Progress receives start progress lines (also sent to systemd as STATUS=).
	Progress runtime.ProgressFunc
}

// Daemon is a running `outpost run`: it owns the appliance's supervision and
// serves the control API.
type Daemon struct {
	env *Env
	// proxy is the embedded Caddy; it runs while an appliance with a
	// proxy is applied (see startProxy).
	proxy *proxy.Proxy

	mu      sync.Mutex // serialises apply/down and guards the supervision fields
	cancel  context.CancelFunc
	done    chan struct{}
	started time.Time

	// starting is closed when the daemon's own start of the appliance has
	// ended; startErr is its error. Upgrades wait for it (waitStarted).
	starting chan struct{}
	startErr error

	appMu sync.Mutex // guards app; never held across an operation
	// app is the definition being applied or supervised.
	app *model.Appliance
}

// current returns the definition being applied or supervised, or nil.
func (d *Daemon) current() *model.Appliance {
	d.appMu.Lock()
	defer d.appMu.Unlock()
	return d.app
}

func (d *Daemon) setApp(app *model.Appliance) {
	d.appMu.Lock()
	d.app = app
	d.appMu.Unlock()
}

// notify sends a state line to systemd when run under Type=notify; a no-op
// elsewhere.
func notify(state string) {
	_, _ = sddaemon.SdNotify(false, state)
}

// Run starts the appliance health-gated, tells systemd READY only once every
// service is healthy, supervises it, serves the control API on the runtime
// directory's socket, and on ctx end stops the appliance gracefully in
// reverse dependency order (containers are kept for the next start).
func Run(ctx context.Context, env *Env, app *model.Appliance, opts RunOptions) error {
	d := &Daemon{env: env, started: time.Now(), starting: make(chan struct{}), proxy: proxy.New(proxy.Options{StateDir: env.Paths.StateDir, Log: env.Log})}
	// The proxy stops last, after the appliance (below).
	defer func() {
		if err := d.proxy.Stop(); err != nil {
			env.Log.Warn("stopping the proxy failed", "err", err)
		}
	}()
	env.Runtime.OnServingChange(func(appliance string, st runtime.ServiceState) {
		d.proxy.SetServing(appliance, st.Service, st.Serving())
	})
	ln, err := listenControl(env.Paths.SocketPath())
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: d.handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(env.Paths.SocketPath())
	}()
	env.Log.Info("control API listening", "socket", env.Paths.SocketPath())

	board := newStatusBoard(nil)
	progress := func(svc, msg string) {
		board.observe(svc, msg)
		notify("STATUS=" + board.line())
		if opts.Progress != nil {
			opts.Progress(svc, msg)
		}
	}
	if app != nil {
		names := make([]string, 0, len(app.Services)+len(app.Jobs))
		for n := range app.Services {
			names = append(names, n)
		}
		// The jobs this start runs: `when: always` ones, and on the first
		// start of an installation its install jobs not yet completed.
		jobs, err := env.Runtime.Jobs(ctx, app, "")
		if err != nil {
			return err
		}
		names = append(names, jobs...)
		board.expect(names)
		// Refresh the elapsed times in systemd's view while the start runs.
		tickCtx, stopTick := context.WithCancel(ctx)
		go func() {
			t := time.NewTicker(statusRefresh)
			defer t.Stop()
			for {
				select {
				case <-tickCtx.Done():
					return
				case <-t.C:
					notify("STATUS=" + board.line())
				}
			}
		}()
		res, err := d.apply(ctx, app, runtime.UpOptions{Timeout: opts.UpTimeout, Progress: progress})
		stopTick()
		d.endStart(err)
		if err != nil {
			notify("STATUS=start failed: " + firstLine(err.Error()))
			return fmt.Errorf("starting appliance %s: %w", app.Name, err)
		}
		env.Log.Info("appliance healthy", "appliance", app.Name, "revision", res.Revision, "duration", res.Duration.Round(time.Millisecond))
		notify(fmt.Sprintf("STATUS=%s healthy (revision %d)", app.Name, res.Revision))
	} else {
		d.endStart(nil)
		notify("STATUS=no appliance deployed; waiting for `outpost up`")
	}
	notify("READY=1")
	go d.runBackupSchedule(ctx) // x-outpost.backup.schedule (backup.go)

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("control API: %w", err)
		}
	}
	notify("STOPPING=1")
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopSupervision()
	if app := d.current(); app != nil {
		// Stop within each service's own timeout, independent of ctx.
		if err := env.Runtime.Stop(context.Background(), app, runtime.StopOptions{Progress: progress}); err != nil {
			return fmt.Errorf("stopping appliance %s: %w", app.Name, err)
		}
	}
	return nil
}

// endStart records that the daemon's own start of the appliance ended,
// with err when it failed.
func (d *Daemon) endStart(err error) {
	d.startErr = err
	close(d.starting)
}

// waitStarted returns once the daemon's own start of the appliance has
// ended, telling progress that it waits; an error when that start failed
// (the daemon is then exiting) or ctx ended first. An upgrade asked for
// while the daemon still brings the appliance up (right after a restart,
// say) thus runs after it, rather than being refused as a concurrent
// operation.
func (d *Daemon) waitStarted(ctx context.Context, progress runtime.ProgressFunc) error {
	select {
	case <-d.starting:
	default:
		if progress != nil {
			progress("", "the outpost daemon is still starting the appliance; waiting for that to finish first")
		}
		select {
		case <-d.starting:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the outpost daemon to finish starting the appliance: %w", ctx.Err())
		}
	}
	if d.startErr != nil {
		return fmt.Errorf("the outpost daemon failed to start the appliance and is exiting (see its log): %w", d.startErr)
	}
	return nil
}

// apply reconciles to app and (re)starts supervision of it.
func (d *Daemon) apply(ctx context.Context, app *model.Appliance, opts runtime.UpOptions) (*runtime.UpResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopSupervision()
	prev := d.current()
	app, err := d.env.WithSecrets(app)
	if err != nil {
		if prev != nil {
			d.startSupervision(prev)
		}
		return nil, err
	}
	d.setApp(app)
	// The proxy first: it serves the maintenance page until services
	// turn healthy, then moves traffic to each as it does.
	if err := d.startProxy(ctx, app); err != nil {
		d.setApp(prev)
		if prev != nil {
			d.startSupervision(prev)
		}
		return nil, err
	}
	res, err := d.env.Runtime.Up(ctx, app, opts)
	if err != nil {
		// Keep supervising what was deployed before, so a service that
		// crashes later is still restarted.
		d.setApp(prev)
		// And serve its routes again (none when nothing was deployed).
		if perr := d.startProxy(ctx, prev); perr != nil {
			d.env.Log.Warn("restoring the previous proxy config failed", "err", perr)
		}
	}
	if cur := d.current(); cur != nil {
		d.startSupervision(cur)
	}
	return res, err
}

func (d *Daemon) down(ctx context.Context, app *model.Appliance, opts runtime.StopOptions) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopSupervision()
	if err := d.env.Runtime.Down(ctx, app, opts); err != nil {
		return err
	}
	d.setApp(nil)
	if err := d.proxy.Stop(); err != nil {
		return err
	}
	return nil
}

func (d *Daemon) startSupervision(app *model.Appliance) {
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d.cancel, d.done = cancel, done
	go func() {
		defer close(done)
		_ = d.env.Runtime.Supervise(sctx, app)
	}()
}

func (d *Daemon) stopSupervision() {
	if d.cancel != nil {
		d.cancel()
		<-d.done
		d.cancel, d.done = nil, nil
	}
}

// listenControl listens on the control socket, replacing a stale one left
// by a dead daemon and refusing to start beside a live one.
func listenControl(path string) (net.Listener, error) {
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another outpost daemon is already serving %s; stop it first (`outpost stop`)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale control socket %s: %w", path, err)
		}
	}
	old := umask(0o177)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("listening on control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restricting control socket %s: %w", path, err)
	}
	return ln, nil
}

// statusRefresh is how often the Status line is re-sent during a start.
const statusRefresh = 2 * time.Second

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
