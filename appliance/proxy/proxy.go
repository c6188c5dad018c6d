// Package proxy is Outpost's embedded Caddy and the only package that
// imports Caddy.
//
// Its pure part (Analyze, Build, Capture) turns an appliance's x-outpost
// proxy — a list of routes, or a Caddyfile adapted by Caddy's own adapter
// with {$VAR} placeholders resolved from the appliance's environment —
// into Caddy JSON. Upstreams written as Compose service addresses
// (platform:3000, an alias, http://convex:3210) become Outpost's
// health-gated upstream source on the loopback host ports Outpost
// publishes those container ports on; the vendor never writes a host
// port.
//
// Its runtime part (Proxy) runs that config in this process: admin
// endpoint disabled, config autosave off, storage under Outpost's state
// directory, Caddy's logs in Outpost's slog stream, the internal health
// listener on loopback, the local CA's root exported for containers and
// clients, and traffic moved to and from services as the runtime reports
// them serving — without reloading Caddy.
//
// Caddy's state is process-global: a process runs one Proxy at a time.
package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	_ "github.com/caddyserver/caddy/v2/modules/standard" // Caddy's standard modules

	"github.com/outpostdev/outpost/appliance/model"
)

// Options configure New.
type Options struct {
	// StateDir is Outpost's state directory: Caddy's storage is
	// StorageDir(StateDir), the CA root is exported to
	// CARootPath(StateDir). Required.
	StateDir string
	// Log receives Outpost's and Caddy's messages about the proxy; nil
	// discards them.
	Log *slog.Logger
}

// Proxy is the embedded Caddy of this process.
type Proxy struct {
	stateDir string
	log      *slog.Logger

	mu        sync.Mutex // guards the fields below
	cfg       *Config
	appliance string
}

var (
	// caddyMu serialises caddy.Load and caddy.Stop in the process.
	caddyMu sync.Mutex
	// active is the Proxy whose config Caddy runs; guarded by caddyMu.
	active *Proxy
)

// New returns a stopped Proxy.
func New(opts Options) *Proxy {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{stateDir: opts.StateDir, log: log}
}

// Apply builds app's proxy config (see Build) with the given host ports
// and runs it: the first call starts Caddy, later ones replace the config
// gracefully (an unchanged config is not reloaded). servingSeed says
// which services receive traffic when the proxy starts serving this
// appliance; SetServing keeps it current. With tls
// internal the local CA's root is exported to CARootPath. Listening on a
// privileged port without CAP_NET_BIND_SERVICE fails before Caddy starts,
// saying how to fix it.
func (p *Proxy) Apply(ctx context.Context, app *model.Appliance, ports map[string]map[uint16]uint16, servingSeed map[string]bool) (*Config, error) {
	if p.stateDir == "" {
		return nil, errors.New("starting the embedded proxy: no state directory")
	}
	cfg, err := Build(app, BuildOptions{StateDir: p.stateDir, Ports: ports, LogLevel: logLevel(ctx, p.log)})
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		p.log.Warn("proxy definition", "appliance", app.Name, "warning", w)
	}
	if err := checkBind(cfg.Listen); err != nil {
		return nil, err
	}
	if err := prepareDirs(p.stateDir); err != nil {
		return nil, err
	}
	caddyMu.Lock()
	defer caddyMu.Unlock()
	if active != nil && active != p {
		return nil, errors.New("starting the embedded proxy: another proxy already runs in this process")
	}
	p.mu.Lock()
	if p.appliance != app.Name {
		serving.reset(servingSeed)
	}
	p.mu.Unlock()
	if err := load(p.log, cfg.JSON, false); err != nil {
		return nil, explainLoadError(err)
	}
	active = p
	if cfg.TLS == model.TLSInternal {
		if err := exportCARoot(p.stateDir); err != nil {
			return nil, err
		}
		p.waitCertificates(ctx, cfg.CertHosts)
	}
	p.mu.Lock()
	p.cfg, p.appliance = cfg, app.Name
	p.mu.Unlock()
	p.log.Info("proxy serving", "appliance", app.Name, "listen", cfg.Listen, "tls", cfg.TLS, "health", cfg.HealthListen)
	return cfg, nil
}

// logLevel is the lowest level log enables.
func logLevel(ctx context.Context, log *slog.Logger) slog.Level {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if log.Enabled(ctx, l) {
			return l
		}
	}
	return slog.LevelError
}

// certWait bounds how long Apply waits for the local CA's certificates.
const certWait = 10 * time.Second

// waitCertificates waits until Caddy holds a certificate for every host
// (the local CA issues them in the background within milliseconds), so a
// client connecting right after Apply does not fail its handshake.
func (p *Proxy) waitCertificates(ctx context.Context, hosts []string) {
	if len(hosts) == 0 {
		return
	}
	deadline := time.Now().Add(certWait)
	for {
		app, err := caddy.ActiveContext().AppIfConfigured("tls")
		tlsApp, _ := app.(*caddytls.TLS)
		missing := ""
		if err != nil || tlsApp == nil {
			missing = hosts[0]
		} else {
			for _, h := range hosts {
				if !tlsApp.HasCertificateForSubject(h) {
					missing = h
					break
				}
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.log.Warn("proxy certificate not ready yet", "host", missing, "waited", certWait)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// load runs a config with Caddy's logs going to log. Until the config's
// own logging is set up, Caddy's default logger buffers (as Caddy's own
// command does), so even its first lines reach slog rather than stderr.
func load(log *slog.Logger, cfg []byte, force bool) error {
	caddyLog.Store(log)
	_, orig, _ := caddy.BufferedLog()
	defer caddy.UnbufferDefaultLogger(orig)
	return caddy.Load(cfg, force)
}

// Stop stops Caddy, waiting up to GracePeriod for open requests. Stopping
// a stopped Proxy does nothing.
func (p *Proxy) Stop() error {
	caddyMu.Lock()
	defer caddyMu.Unlock()
	if active != p {
		return nil
	}
	err := caddy.Stop()
	active = nil
	p.mu.Lock()
	p.cfg, p.appliance = nil, ""
	p.mu.Unlock()
	serving.reset(nil)
	if err != nil {
		return fmt.Errorf("stopping the embedded proxy: %w", err)
	}
	p.log.Info("proxy stopped")
	return nil
}

// SetServing records whether a service of the appliance may receive
// traffic (the runtime's ServiceState.Serving). It takes effect with the
// next request; services of another appliance are ignored once the proxy
// serves one.
func (p *Proxy) SetServing(appliance, service string, ok bool) {
	p.mu.Lock()
	cur := p.appliance
	p.mu.Unlock()
	if cur != "" && cur != appliance {
		return
	}
	serving.put(service, ok)
	p.log.Debug("proxy upstream", "appliance", appliance, "service", service, "serving", ok)
}

// Status is the proxy's state and effective route table.
type Status struct {
	// Running says whether Caddy runs this proxy's config.
	Running   bool   `json:"running"`
	Appliance string `json:"appliance,omitempty"`
	// TLS is the TLS mode.
	TLS model.TLSMode `json:"tls,omitempty"`
	// Listen are the addresses Caddy listens on.
	Listen []string `json:"listen,omitempty"`
	// HealthListen is the internal health listener (GET /health).
	HealthListen string `json:"health_listen,omitempty"`
	// CARoot is the exported local CA root, with tls internal.
	CARoot string `json:"ca_root,omitempty"`
	// Routes is the effective route table with each upstream's serving
	// state.
	Routes []Route `json:"routes"`
	// Warnings are findings about the definition.
	Warnings []string `json:"warnings,omitempty"`
}

// Status returns the running config's route table with live upstream
// health; Running is false when the proxy is stopped.
func (p *Proxy) Status() Status {
	p.mu.Lock()
	cfg, app := p.cfg, p.appliance
	p.mu.Unlock()
	if cfg == nil {
		return Status{Routes: []Route{}}
	}
	return StatusOf(cfg, app, p.stateDir, true, serving.get)
}

// StatusOf describes a built config; isServing reports each service's
// serving state (nil leaves it unknown).
func StatusOf(cfg *Config, appliance, stateDir string, running bool, isServing func(service string) bool) Status {
	st := Status{
		Running: running, Appliance: appliance, TLS: cfg.TLS, Listen: cfg.Listen,
		HealthListen: cfg.HealthListen, Warnings: cfg.Warnings, Routes: make([]Route, len(cfg.Routes)),
	}
	if cfg.TLS == model.TLSInternal {
		st.CARoot = CARootPath(stateDir)
	}
	for i, r := range cfg.Routes {
		r.Upstreams = append([]Upstream(nil), r.Upstreams...)
		for j := range r.Upstreams {
			if isServing != nil && r.Upstreams[j].Service != "" {
				ok := isServing(r.Upstreams[j].Service)
				r.Upstreams[j].Serving = &ok
			}
		}
		st.Routes[i] = r
	}
	return st
}

// prepareDirs creates the proxy's directories: StateDir/proxy readable
// (it holds the exported CA root), Caddy's storage private (it holds the
// CA's keys).
func prepareDirs(stateDir string) error {
	dir := filepath.Join(stateDir, "proxy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the proxy's state directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(StorageDir(stateDir), 0o700); err != nil {
		return fmt.Errorf("creating Caddy's storage %s: %w", StorageDir(stateDir), err)
	}
	return nil
}

// caRootInStorage is where Caddy's PKI app keeps the local CA's root.
func caRootInStorage(stateDir string) string {
	return filepath.Join(StorageDir(stateDir), "pki", "authorities", "local", "root.crt")
}

// exportCARoot copies the local CA's root certificate from Caddy's
// storage to CARootPath (0644), replacing it atomically when it changed.
func exportCARoot(stateDir string) error {
	src := caRootInStorage(stateDir)
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("exporting the local CA root: %w", err)
	}
	dst := CARootPath(stateDir)
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("exporting the local CA root: %w", err)
	}
	if err := os.Chmod(tmp, 0o644); err != nil { // despite the umask
		return fmt.Errorf("exporting the local CA root: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("exporting the local CA root: %w", err)
	}
	return nil
}

// EnsureCA makes sure the local CA exists and its root is exported, and
// returns CARootPath(stateDir). Services mount the root before the proxy
// may ever have run (a foreground `outpost up`), so when it is missing
// Caddy's PKI app is started just long enough to create the CA in
// storage; the proxy later uses the same CA.
func EnsureCA(stateDir string, log *slog.Logger) (string, error) {
	path := CARootPath(stateDir)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := prepareDirs(stateDir); err != nil {
		return "", err
	}
	caddyMu.Lock()
	defer caddyMu.Unlock()
	if active != nil {
		// The running proxy's config created the CA if it uses one.
		if err := exportCARoot(stateDir); err != nil {
			return "", fmt.Errorf("%w (the running proxy has no local CA: is tls internal?)", err)
		}
		return path, nil
	}
	cfg := obj{
		"admin":   obj{"disabled": true, "config": obj{"persist": false}},
		"storage": obj{"module": "file_system", "root": StorageDir(stateDir)},
		"logging": obj{"logs": obj{"default": obj{"writer": obj{"output": logWriterName}, "encoder": obj{"format": logEncoderName}, "level": "WARN"}}},
		"apps":    obj{"pki": obj{"certificate_authorities": obj{"local": obj{"install_trust": false}}}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("creating the local CA: %w", err)
	}
	if err := load(log, b, true); err != nil {
		return "", fmt.Errorf("creating the local CA: %w", err)
	}
	exportErr := exportCARoot(stateDir)
	if err := caddy.Stop(); err != nil {
		log.Warn("stopping Caddy after creating the local CA failed", "err", err)
	}
	if exportErr != nil {
		return "", exportErr
	}
	return path, nil
}
