// Package daemon is Outpost's composition root: it opens the state store,
// connects to (or starts) the rootless Podman service, wires the runtime,
// and runs `outpost run`, the long-lived process that keeps an appliance as
// declared and answers the control API on a Unix socket. The CLI and the
// control API call the same runtime verbs.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/engine/podman"
	"github.com/outpostdev/outpost/appliance/runtime"
	"github.com/outpostdev/outpost/appliance/secrets"
	"github.com/outpostdev/outpost/appliance/store"
)

// Paths are where Outpost keeps its files.
type Paths struct {
	// StateDir holds the SQLite database and other durable state.
	// Default: /var/lib/outpost for root, $XDG_STATE_HOME/outpost
	// (~/.local/state/outpost) otherwise. Env: OUTPOST_STATE_DIR.
	StateDir string
	// RuntimeDir holds sockets and the generated containers.conf.
	// Default: /run/outpost for root, $XDG_RUNTIME_DIR/outpost otherwise.
	// Env: OUTPOST_RUNTIME_DIR.
	RuntimeDir string
}

// DefaultPaths resolves Paths from the environment.
func DefaultPaths() (Paths, error) {
	p := Paths{StateDir: os.Getenv("OUTPOST_STATE_DIR"), RuntimeDir: os.Getenv("OUTPOST_RUNTIME_DIR")}
	root := os.Geteuid() == 0
	if p.StateDir == "" {
		switch {
		case root:
			p.StateDir = "/var/lib/outpost"
		case os.Getenv("XDG_STATE_HOME") != "":
			p.StateDir = filepath.Join(os.Getenv("XDG_STATE_HOME"), "outpost")
		default:
			home, err := os.UserHomeDir()
			if err != nil {
				return p, fmt.Errorf("finding the state directory: %w; set OUTPOST_STATE_DIR", err)
			}
			p.StateDir = filepath.Join(home, ".local", "state", "outpost")
		}
	}
	if p.RuntimeDir == "" {
		switch {
		case root:
			p.RuntimeDir = "/run/outpost"
		case os.Getenv("XDG_RUNTIME_DIR") != "":
			p.RuntimeDir = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "outpost")
		default:
			p.RuntimeDir = filepath.Join(os.TempDir(), "outpost-"+strconv.Itoa(os.Geteuid()))
		}
	}
	return p, nil
}

// DBPath is the state database file.
func (p Paths) DBPath() string { return filepath.Join(p.StateDir, "outpost.db") }

// SocketPath is the control API socket.
func (p Paths) SocketPath() string { return filepath.Join(p.RuntimeDir, "outpost.sock") }

// Env is an opened set of Outpost's concrete pieces.
type Env struct {
	Paths   Paths
	Log     *slog.Logger
	Store   *store.Store
	Engine  engine.Engine
	Runtime *runtime.Runtime

	stopPodman func()
}

// Open opens the store and connects to Podman: CONTAINER_HOST when set,
// otherwise a private `podman system service` child with a containers.conf
// generated for this host.
func Open(ctx context.Context, paths Paths, log *slog.Logger) (*Env, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(paths.RuntimeDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating runtime directory %s: %w", paths.RuntimeDir, err)
	}
	st, err := store.Open(ctx, paths.DBPath(), store.WithLogger(log))
	if err != nil {
		return nil, err
	}
	// Each process gets its own podman service socket: a CLI call must not
	// replace (and on exit remove) the socket the daemon is using.
	podmanDir := filepath.Join(paths.RuntimeDir, "podman")
	removeStaleServiceDirs(podmanDir, log)
	uri, stop, err := podman.ResolveURI(ctx, podman.ServiceOptions{RuntimeDir: filepath.Join(podmanDir, strconv.Itoa(os.Getpid())), Logger: log})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("starting the podman service: %w (run `outpost doctor`)", err)
	}
	eng, err := podman.Connect(ctx, uri)
	if err != nil {
		stop()
		st.Close()
		return nil, fmt.Errorf("connecting to podman at %s: %w (run `outpost doctor`)", uri, err)
	}
	rt := runtime.New(eng, st, log)
	rt.SetProxyNeeds(proxyNeeds(paths.StateDir, log))
	rt.SetSecretsDir(func(appliance string) string { return secrets.Dir(paths.StateDir, appliance) })
	return &Env{Paths: paths, Log: log, Store: st, Engine: eng, Runtime: rt, stopPodman: stop}, nil
}

// removeStaleServiceDirs removes the per-process podman service directories
// of processes that no longer exist.
func removeStaleServiceDirs(dir string, log *slog.Logger) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		if syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			log.Warn("removing stale podman service directory failed", "dir", e.Name(), "err", err)
		}
	}
}

// OpenState opens only the state store, for commands that read what is
// recorded (events, history) without talking to Podman. Its Engine is nil and
// its Runtime may only be used for recorded state (Deployed).
func OpenState(ctx context.Context, paths Paths, log *slog.Logger) (*Env, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(ctx, paths.DBPath(), store.WithLogger(log))
	if err != nil {
		return nil, err
	}
	rt := runtime.New(nil, st, log)
	rt.SetSecretsDir(func(appliance string) string { return secrets.Dir(paths.StateDir, appliance) })
	return &Env{Paths: paths, Log: log, Store: st, Runtime: rt}, nil
}

// Close stops the private Podman service (containers keep running) and
// closes the store.
func (e *Env) Close() error {
	if e.stopPodman != nil {
		e.stopPodman()
	}
	return e.Store.Close()
}

// ErrNoAppliance means the store knows no appliance and none was named.
var ErrNoAppliance = errors.New("no appliance is deployed here; run `outpost up` (or pass -f / --name)")
