// Package demo is Outpost's embedded demo appliance. It owns two things:
// the roles Outpost's own binary plays inside the demo containers (a
// stateful key-value store, an API, a worker, a web front end, and helpers
// such as the healthcheck probe), and the offline builder that turns that
// binary into a FROM-scratch image and loads it into the engine.
//
// It is the only importer of go-containerregistry. It never talks to a
// registry: the image is assembled from the binary on disk, so the demo
// runs on an air-gapped box.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ExitError is returned by a role that must end the process with a given
// exit code (probe, fail, job). Callers map it with errors.As; any other
// error means exit code 1.
type ExitError struct {
	// Code is the process exit code, never 0.
	Code int
	// Err says why.
	Err error
	// Reported is true when the role already printed the reason (probe
	// prints its failing checks), so the caller need not print Err again.
	Reported bool
}

// Error implements error.
func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit code %d", e.Code)
	}
	return e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ExitError) Unwrap() error { return e.Err }

// roleFunc runs one role until ctx is cancelled or the role ends.
type roleFunc func(ctx context.Context, env *roleEnv, args []string) error

// roles maps role names to their implementations.
var roles = map[string]roleFunc{
	"store":  runStore,
	"api":    runAPI,
	"worker": runWorker,
	"web":    runWeb,
	"probe":  runProbe,
	"fail":   runFail,
	"sleep":  runSleep,
	"job":    runJob,
}

// Roles returns the names RunRole accepts, sorted.
func Roles() []string {
	names := make([]string, 0, len(roles))
	for n := range roles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// RunRole runs one demo role in the current process: it is what the demo
// image's entrypoint (`/outpost demo-role ROLE [args]`) executes. Roles are
// configured by environment variables (see docs on each role and
// embed/demo/README.md), log to stdout, and return nil when ctx is
// cancelled (SIGTERM) after shutting down gracefully. probe, fail and job
// may return an *ExitError carrying the exit code to use.
func RunRole(ctx context.Context, role string, args []string, stdout, stderr io.Writer) error {
	return runRole(ctx, role, args, &roleEnv{
		lookup: os.LookupEnv,
		stdout: stdout,
		stderr: stderr,
	})
}

func runRole(ctx context.Context, role string, args []string, env *roleEnv) error {
	fn, ok := roles[role]
	if !ok {
		return fmt.Errorf("unknown demo role %q: use one of %v", role, Roles())
	}
	if env.stdout == nil {
		env.stdout = io.Discard
	}
	if env.stderr == nil {
		env.stderr = io.Discard
	}
	if env.listen == nil {
		env.listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	env.log = slog.New(slog.NewTextHandler(env.stdout, nil)).With("role", role)
	if err := fn(ctx, env, args); err != nil {
		var exit *ExitError
		if errors.As(err, &exit) {
			return err
		}
		return fmt.Errorf("demo role %s: %w", role, err)
	}
	return nil
}

// roleEnv is what a role gets from its process: environment, output and a
// way to listen. Tests replace lookup and listen.
type roleEnv struct {
	lookup func(key string) (string, bool)
	listen func(addr string) (net.Listener, error)
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// DefaultReadyFile is the generic readiness file every long-running role
// touches once it is ready, and that the image's HEALTHCHECK tests, so the
// image's own healthcheck holds whichever role a container runs. Override
// it with $READY_FILE (empty disables it).
const DefaultReadyFile = "/tmp/ready"

// str returns the variable, or def when it is unset or empty.
func (e *roleEnv) str(key, def string) string {
	if v, ok := e.lookup(key); ok && v != "" {
		return v
	}
	return def
}

// optional returns the variable, or def only when it is unset: an empty
// value disables the feature.
func (e *roleEnv) optional(key, def string) string {
	if v, ok := e.lookup(key); ok {
		return v
	}
	return def
}

func (e *roleEnv) duration(key string, def time.Duration) (time.Duration, error) {
	v := e.str(key, "")
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid %s=%q: want a duration such as 2s", key, v)
	}
	return d, nil
}

func (e *roleEnv) integer(key string, def int) (int, error) {
	v := e.str(key, "")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("invalid %s=%q: want an integer", key, v)
	}
	return n, nil
}

// readyFile is the generic readiness file, "" when disabled.
func (e *roleEnv) readyFile() string { return e.optional("READY_FILE", DefaultReadyFile) }

// touch creates or truncates a marker file, writing the time into it.
// An empty path is a no-op.
func touch(path string) error {
	if path == "" {
		return nil
	}
	stamp := time.Now().UTC().Format(time.RFC3339Nano) + "\n"
	if err := os.WriteFile(path, []byte(stamp), 0o644); err != nil {
		return fmt.Errorf("writing marker %s: %w", path, err)
	}
	return nil
}

// removeMarkers deletes stale markers left by a previous run of the same
// container, so they cannot count before this run is ready.
func removeMarkers(paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing stale marker %s: %w", p, err)
		}
	}
	return nil
}

// sleepCtx sleeps for d, returning early with ctx's error if it is cancelled.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shutdownTimeout bounds the graceful HTTP shutdown after SIGTERM; it is
// below every stop_grace_period in the demo compose file.
const shutdownTimeout = 5 * time.Second

// server is a started HTTP server.
type server struct {
	srv  *http.Server
	addr string
	errc chan error
}

// startServer listens on addr and serves h in the background.
func startServer(env *roleEnv, addr string, h http.Handler) (*server, error) {
	ln, err := env.listen(addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	s := &server{
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second},
		addr: ln.Addr().String(),
		errc: make(chan error, 1),
	}
	go func() { s.errc <- s.srv.Serve(ln) }()
	env.log.Info("listening", "addr", s.addr)
	return s, nil
}

// wait blocks until ctx is cancelled, then shuts the server down
// gracefully; it returns early with an error if serving fails.
func (s *server) wait(ctx context.Context) error {
	select {
	case err := <-s.errc:
		return fmt.Errorf("serving on %s: %w", s.addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down server on %s: %w", s.addr, err)
	}
	return nil
}

// runSleep is the "sleep" role: it touches $READY_FILE and waits for
// SIGTERM. It is the image's default command.
func runSleep(ctx context.Context, env *roleEnv, _ []string) error {
	rf := env.readyFile()
	if err := removeMarkers(rf); err != nil {
		return err
	}
	if err := touch(rf); err != nil {
		return err
	}
	env.log.Info("sleeping until stopped")
	<-ctx.Done()
	return nil
}

// runFail is the "fail" role: after $DELAY (default 1s) it exits with
// $EXIT_CODE (default 1; 0 is taken as 1). Cancelled earlier, it exits 0.
func runFail(ctx context.Context, env *roleEnv, _ []string) error {
	delay, err := env.duration("DELAY", time.Second)
	if err != nil {
		return err
	}
	code, err := env.integer("EXIT_CODE", 1)
	if err != nil {
		return err
	}
	if code == 0 {
		code = 1
	}
	if sleepCtx(ctx, delay) != nil {
		return nil
	}
	env.log.Info("failing as configured", "exit_code", code)
	return &ExitError{Code: code, Err: fmt.Errorf("demo role fail: failing with exit code %d as configured", code)}
}

// runJob is the "job" role: after $DELAY (default 0) it prints its
// arguments, writes them to $MARKER when set, and exits with $EXIT_CODE
// (default 0).
func runJob(ctx context.Context, env *roleEnv, args []string) error {
	delay, err := env.duration("DELAY", 0)
	if err != nil {
		return err
	}
	code, err := env.integer("EXIT_CODE", 0)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, delay); err != nil {
		return fmt.Errorf("job interrupted: %w", err)
	}
	line := strings.Join(args, " ") + "\n"
	if _, err := io.WriteString(env.stdout, line); err != nil {
		return fmt.Errorf("printing job arguments: %w", err)
	}
	if marker := env.str("MARKER", ""); marker != "" {
		if err := os.WriteFile(marker, []byte(line), 0o644); err != nil {
			return fmt.Errorf("writing job marker %s: %w", marker, err)
		}
	}
	if code != 0 {
		return &ExitError{Code: code, Err: fmt.Errorf("demo role job: exiting with code %d as configured", code)}
	}
	return nil
}
