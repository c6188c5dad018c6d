package podman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/errorhandling"

	"github.com/outpostdev/outpost/appliance/engine"
)

var _ engine.Engine = (*Engine)(nil)

// Engine is engine.Engine over one Podman service connection. It is safe for
// concurrent use.
type Engine struct {
	// conn carries the bindings' connection as context values. It never
	// ends: each call merges it with the caller's context (see callCtx).
	conn   context.Context
	uri    string
	logger *slog.Logger

	// rootless and cgroupsV2 are the service's host facts, read once at
	// Connect; they decide whether resource limits can be applied.
	rootless  bool
	cgroupsV2 bool
	// networkBackend is the service's ("netavark" or "cni"); with
	// netavark the engine looks after stale aardvark-dns entries.
	networkBackend string
	// bridgePin is set when bridges' MAC addresses must be pinned after
	// container starts (netavark before 1.9; see bridgemac.go).
	bridgePin bool

	// hostGateway resolves the "host-gateway" extra-host token; a field so
	// tests can replace it.
	hostGateway func() (string, error)
	// hardLimit reads a hard rlimit of this process; a field for tests.
	hardLimit func(resource int) (uint64, error)
}

// Option configures Connect.
type Option func(*Engine)

// WithLogger sets the logger for warnings such as dropped resource limits.
// The default discards.
func WithLogger(l *slog.Logger) Option {
	return func(e *Engine) {
		if l != nil {
			e.logger = l
		}
	}
}

// Connect opens a connection to the Podman service at uri (unix://, tcp:// or
// ssh://) and checks it answers. ctx bounds only the connecting; the Engine
// stays usable after ctx ends.
func Connect(ctx context.Context, uri string, opts ...Option) (*Engine, error) {
	if uri == "" {
		return nil, errors.New("connecting to podman: empty service URI (set CONTAINER_HOST or start a service)")
	}
	connCtx, err := bindings.NewConnection(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("connecting to podman at %s: %w", uri, err)
	}
	e := &Engine{
		// WithoutCancel keeps the bindings' values but not ctx's deadline:
		// the connection outlives the call that made it.
		conn:        context.WithoutCancel(connCtx),
		uri:         uri,
		logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		hostGateway: hostGatewayIP,
		hardLimit:   hardRlimit,
	}
	for _, o := range opts {
		o(e)
	}
	info, err := system.Info(e.callCtx(ctx), nil)
	if err != nil {
		return nil, fmt.Errorf("reading podman info at %s: %w", uri, err)
	}
	if info.Host != nil {
		e.rootless = info.Host.Security.Rootless
		e.cgroupsV2 = info.Host.CgroupsVersion == "v2"
		e.networkBackend = info.Host.NetworkBackend
		e.bridgePin = needsBridgePin(uri, info.Host.NetworkBackend, info.Host.NetworkBackendInfo.Version, netavarkVersion)
	}
	return e, nil
}

// URI returns the service URI the Engine is connected to.
func (e *Engine) URI() string { return e.uri }

// ResourceLimitsSupported reports whether memory and pids limits can be
// applied. Rootless Podman on cgroups v1 cannot apply them: CreateContainer
// then drops them and logs a warning. Callers holding only engine.Engine can
// derive the same from Info: Rootless && !CgroupsV2 means unsupported.
func (e *Engine) ResourceLimitsSupported() bool {
	return !e.rootless || e.cgroupsV2
}

// callCtx merges the caller's cancellation and deadline with the
// connection's values. The bindings find their client through ctx.Value, so
// every bindings call must get a context carrying them; the caller's context
// must still be able to cancel the request.
func (e *Engine) callCtx(ctx context.Context) context.Context {
	return mergedCtx{Context: ctx, values: e.conn}
}

// mergedCtx takes Done, Err and Deadline from the embedded context and looks
// values up in the connection's context first.
type mergedCtx struct {
	context.Context
	values context.Context
}

func (m mergedCtx) Value(key any) any {
	if v := m.values.Value(key); v != nil {
		return v
	}
	return m.Context.Value(key)
}

// Info reports the service's version and host facts.
func (e *Engine) Info(ctx context.Context) (engine.Info, error) {
	info, err := system.Info(e.callCtx(ctx), nil)
	if err != nil {
		return engine.Info{}, fmt.Errorf("reading podman info: %w", err)
	}
	out := engine.Info{
		Version:    info.Version.Version,
		APIVersion: info.Version.APIVersion,
	}
	if info.Host != nil {
		out.Rootless = info.Host.Security.Rootless
		out.CgroupsV2 = info.Host.CgroupsVersion == "v2"
		if info.Host.OCIRuntime != nil {
			out.OCIRuntime = info.Host.OCIRuntime.Name
		}
	}
	if info.Store != nil {
		out.GraphDriver = info.Store.GraphDriverName
	}
	return out, nil
}

// serviceAtLeast reports whether the connected service's version is at least
// major.minor.
func (e *Engine) serviceAtLeast(major, minor uint64) bool {
	v := bindings.ServiceVersion(e.conn)
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// notFoundError marks an API error as engine.ErrNotFound while keeping
// Podman's message.
type notFoundError struct{ err error }

func (n *notFoundError) Error() string        { return n.err.Error() }
func (n *notFoundError) Unwrap() error        { return n.err }
func (n *notFoundError) Is(target error) bool { return target == engine.ErrNotFound }

// apiErr wraps err with step, marking Podman's "no such ..." answers as
// engine.ErrNotFound.
func apiErr(step string, err error) error {
	if err == nil {
		return nil
	}
	if isNotFound(err) {
		err = &notFoundError{err: err}
	}
	return fmt.Errorf("%s: %w", step, err)
}

func isNotFound(err error) bool {
	var em *errorhandling.ErrorModel
	if errors.As(err, &em) && em.ResponseCode == http.StatusNotFound {
		return true
	}
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "no such container") ||
		strings.Contains(msg, "no such image") ||
		strings.Contains(msg, "no such volume") ||
		strings.Contains(msg, "no such network") ||
		strings.Contains(msg, "image not known") ||
		strings.Contains(msg, "network not found")
}

// labelFilters turns labels into Podman "label" filters; matchLabels
// re-checks them on the client so results never depend on how a given
// Podman version combines several label filters.
func labelFilters(labels map[string]string) map[string][]string {
	if len(labels) == 0 {
		return nil
	}
	f := make([]string, 0, len(labels))
	for k, v := range labels {
		f = append(f, k+"="+v)
	}
	return map[string][]string{"label": f}
}

func matchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}
