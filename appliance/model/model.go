// Package model holds the plain types that describe an appliance after its
// Compose files and x-outpost extension have been loaded: services, volumes,
// networks, the proxy, jobs and secrets. It imports only the standard library;
// loaders produce these values and every other package consumes them.
package model

import (
	"path/filepath"
	"sort"
	"time"
)

// Appliance is a fully resolved appliance definition.
type Appliance struct {
	// Name is the appliance (and Podman project) name; it prefixes every
	// container, volume and network Outpost creates. Required.
	Name string `json:"name"`
	// Version is the vendor's version string of this definition, e.g. "1.2.0".
	Version string `json:"version,omitempty"`
	// Services by Compose service name. The proxy service, when one is named
	// in Proxy.Service, is not in this map: it never runs as a container.
	Services map[string]*Service `json:"services"`
	// Volumes by Compose volume key.
	Volumes map[string]*Volume `json:"volumes,omitempty"`
	// VolumeMigrations copy data between volumes during an upgrade
	// (x-outpost volumes.migrations), in declaration order.
	VolumeMigrations []VolumeMigration `json:"volume_migrations,omitempty"`
	// Networks by Compose network key. A "default" network is always present.
	Networks map[string]*Network `json:"networks,omitempty"`
	// Proxy configures the embedded Caddy; nil when the appliance has none.
	Proxy *Proxy `json:"proxy,omitempty"`
	// Jobs are one-shot commands run at declared points of the start order.
	Jobs []*Job `json:"jobs,omitempty"`
	// Secrets are generated once at install and injected into services.
	Secrets []*Secret `json:"secrets,omitempty"`
	// Checks configures `outpost check`.
	Checks *Checks `json:"checks,omitempty"`
	// Backup is the scheduled-snapshot policy (x-outpost backup); nil: none.
	Backup *BackupPolicy `json:"backup,omitempty"`
	// Sources lists the files the definition was loaded from, in merge order.
	Sources []string `json:"sources,omitempty"`
	// Profiles lists the active Compose profiles.
	Profiles []string `json:"profiles,omitempty"`
}

// ServiceNames returns the service names sorted alphabetically.
func (a *Appliance) ServiceNames() []string {
	names := make([]string, 0, len(a.Services))
	for n := range a.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ResolvePath resolves a path written in the definition (a Caddyfile, a
// maintenance page) against the directory of its first Compose file; an
// absolute path, or a definition not loaded from a file, keeps it as is.
func (a *Appliance) ResolvePath(name string) string {
	if filepath.IsAbs(name) || len(a.Sources) == 0 || !filepath.IsAbs(a.Sources[0]) {
		return name
	}
	return filepath.Join(filepath.Dir(a.Sources[0]), name)
}

// Role says how a service may be replaced during an upgrade.
type Role string

// Roles.
const (
	// RoleStateful services are stopped before their replacement starts. Default.
	RoleStateful Role = "stateful"
	// RoleRotatable services may run two copies side by side during an upgrade.
	RoleRotatable Role = "rotatable"
)

// RestartPolicy is a Compose restart policy; Outpost applies it itself
// (containers are created with Podman's policy "no").
type RestartPolicy string

// Restart policies.
const (
	RestartNo            RestartPolicy = "no"
	RestartAlways        RestartPolicy = "always"
	RestartOnFailure     RestartPolicy = "on-failure"
	RestartUnlessStopped RestartPolicy = "unless-stopped"
)

// DefaultStopGrace is the stop timeout when neither stop_grace_period nor
// x-outpost stop_timeout is given (Compose's default).
const DefaultStopGrace = 10 * time.Second

// Service is one Compose service.
type Service struct {
	Name  string `json:"name"`
	Image string `json:"image"`
	// Command and Entrypoint override the image's; nil keeps the image's.
	Command    []string `json:"command,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	// Environment after env_file and interpolation; env_file values are merged in.
	Environment map[string]string `json:"environment,omitempty"`
	User        string            `json:"user,omitempty"`
	WorkingDir  string            `json:"working_dir,omitempty"`
	Hostname    string            `json:"hostname,omitempty"`
	Mounts      []Mount           `json:"mounts,omitempty"`
	Ports       []Port            `json:"ports,omitempty"`
	// Networks maps network key to the aliases on it (the service name is
	// always an alias and need not be listed).
	Networks map[string][]string `json:"networks,omitempty"`
	// ExtraHosts are "host:ip" entries; ip may be the token "host-gateway".
	ExtraHosts []string          `json:"extra_hosts,omitempty"`
	ShmSize    int64             `json:"shm_size,omitempty"`
	Ulimits    map[string]Ulimit `json:"ulimits,omitempty"`
	MemLimit   int64             `json:"mem_limit,omitempty"`
	PidsLimit  int64             `json:"pids_limit,omitempty"`
	CapAdd     []string          `json:"cap_add,omitempty"`
	CapDrop    []string          `json:"cap_drop,omitempty"`
	Init       bool              `json:"init,omitempty"`
	ReadOnly   bool              `json:"read_only,omitempty"`
	Restart    RestartPolicy     `json:"restart"`
	// StopSignal is e.g. "SIGTERM"; empty keeps the image's.
	StopSignal string `json:"stop_signal,omitempty"`
	// StopGracePeriod is resolved: stop_grace_period, else x-outpost
	// stop_timeout, else DefaultStopGrace.
	StopGracePeriod time.Duration     `json:"stop_grace_period"`
	Labels          map[string]string `json:"labels,omitempty"`
	// Healthcheck is nil when the service has none (or it is disabled).
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// DependsOn maps a service (or job) name to the condition to wait for.
	DependsOn map[string]Dependency `json:"depends_on,omitempty"`
	Role      Role                  `json:"role"`
	// ReadyMarkers are files inside the container that must exist before the
	// service counts as healthy (x-outpost ready_markers).
	ReadyMarkers []string `json:"ready_markers,omitempty"`
	// Backup is the service's backup hook (x-outpost backup); nil when none.
	Backup *BackupHook `json:"backup,omitempty"`
	// Secrets names the appliance secrets injected into this service.
	Secrets []string `json:"secrets,omitempty"`
}

// MountType is the kind of a mount.
type MountType string

// Mount types.
const (
	MountVolume MountType = "volume"
	MountBind   MountType = "bind"
	MountTmpfs  MountType = "tmpfs"
)

// Mount is one filesystem mount of a service.
type Mount struct {
	Type MountType `json:"type"`
	// Source is the Compose volume key for volumes, an absolute host path for
	// binds, empty for tmpfs.
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// TmpfsSize in bytes, 0 for the default.
	TmpfsSize int64 `json:"tmpfs_size,omitempty"`
}

// Port is one published port.
type Port struct {
	HostIP        string `json:"host_ip,omitempty"`
	HostPort      uint16 `json:"host_port"` // 0: not published on a fixed port
	ContainerPort uint16 `json:"container_port"`
	Protocol      string `json:"protocol"` // tcp or udp
}

// Ulimit is one resource limit.
type Ulimit struct {
	Soft int64 `json:"soft"`
	Hard int64 `json:"hard"`
}

// Healthcheck is a Compose healthcheck.
type Healthcheck struct {
	// Test is the Compose test: ["CMD", args...] or ["CMD-SHELL", "script"].
	// Loaders normalise a plain string to CMD-SHELL.
	Test          []string      `json:"test"`
	Interval      time.Duration `json:"interval"`
	Timeout       time.Duration `json:"timeout"`
	StartPeriod   time.Duration `json:"start_period"`
	StartInterval time.Duration `json:"start_interval"`
	Retries       int           `json:"retries"`
}

// Compose healthcheck defaults.
const (
	DefaultHealthInterval      = 30 * time.Second
	DefaultHealthTimeout       = 30 * time.Second
	DefaultHealthRetries       = 3
	DefaultHealthStartInterval = 5 * time.Second
)

// Condition is a depends_on condition.
type Condition string

// Conditions.
const (
	ConditionStarted   Condition = "service_started"
	ConditionHealthy   Condition = "service_healthy"
	ConditionCompleted Condition = "service_completed_successfully"
)

// Dependency is one depends_on entry.
type Dependency struct {
	Condition Condition `json:"condition"`
	// Required false means a missing or failed dependency is ignored.
	Required bool `json:"required"`
	// Restart the dependant when the dependency is restarted.
	Restart bool `json:"restart,omitempty"`
}

// Volume is a named volume.
type Volume struct {
	// Key is the Compose key; the Podman name is Name.
	Key string `json:"key"`
	// Name is the Podman volume name: "<appliance>_<key>" unless set
	// explicitly with `name:` or external.
	Name     string            `json:"name"`
	External bool              `json:"external,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Legacy marks a volume kept only for rollback (x-outpost volumes.legacy).
	Legacy bool `json:"legacy,omitempty"`
}

// VolumeMigration copies the contents of one volume into another during an
// upgrade; the source is verified and kept (usually as a legacy volume).
type VolumeMigration struct {
	// From and To are Compose volume keys.
	From string `json:"from"`
	To   string `json:"to"`
}

// Network is a named network.
type Network struct {
	Key      string `json:"key"`
	Name     string `json:"name"`
	External bool   `json:"external,omitempty"`
	Internal bool   `json:"internal,omitempty"`
}

// TLSMode selects how the embedded proxy obtains certificates.
type TLSMode string

// TLS modes.
const (
	TLSInternal TLSMode = "internal"
	TLSACME     TLSMode = "acme"
	TLSOff      TLSMode = "off"
)

// Proxy configures the embedded Caddy.
type Proxy struct {
	// Service is the Compose service the embedded proxy replaces.
	Service string `json:"service,omitempty"`
	// Caddyfile is a path (relative to the first Compose file) of a Caddyfile.
	Caddyfile string `json:"caddyfile,omitempty"`
	// Routes are used when no Caddyfile is given.
	Routes []Route `json:"routes,omitempty"`
	// Sites are the site addresses for Routes (e.g. "https://app.local", ":80").
	Sites []string `json:"sites,omitempty"`
	TLS   TLSMode  `json:"tls"`
	// HealthListen is the loopback address of the internal health listener,
	// e.g. "127.0.0.1:2020".
	HealthListen string `json:"health_listen,omitempty"`
	// CAMount is where the local CA root is mounted (read-only) into services
	// listed in CAMountServices.
	CAMount         string   `json:"ca_mount,omitempty"`
	CAMountServices []string `json:"ca_mount_services,omitempty"`
	// MaintenancePage is a path to an HTML file served with 503 while no
	// upstream is healthy; empty uses the built-in page.
	MaintenancePage string `json:"maintenance_page,omitempty"`
	// CaddyfileText is the Caddyfile's content with its {$VAR} placeholders
	// resolved from the interpolation environment, captured when the
	// definition is loaded (proxy.Capture), so that a revision records
	// exactly what the proxy serves and the daemon needs neither the file
	// nor the CLI's environment. Empty for routes.
	CaddyfileText string `json:"caddyfile_text,omitempty"`
	// MaintenanceHTML is the content of MaintenancePage, captured at load
	// like CaddyfileText.
	MaintenanceHTML string `json:"maintenance_html,omitempty"`
	// Replaced is Service as the Compose file defines it (nil when it
	// names none, or the service has no image). Outpost never runs it;
	// exports to runtimes without the embedded proxy write it. Not stored:
	// it is no part of a revision.
	Replaced *Service `json:"-"`
}

// Route is one proxy route.
type Route struct {
	Path        string            `json:"path,omitempty"`
	Host        string            `json:"host,omitempty"`
	Header      map[string]string `json:"header,omitempty"`
	StripPrefix string            `json:"strip_prefix,omitempty"`
	Rewrite     string            `json:"rewrite,omitempty"`
	// Upstream is "service:port".
	Upstream string            `json:"upstream,omitempty"`
	Redirect string            `json:"redirect,omitempty"`
	Respond  string            `json:"respond,omitempty"`
	Status   int               `json:"status,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
}

// JobWhen says in which operations a job runs.
type JobWhen string

// Job timings.
const (
	JobAlways  JobWhen = "always"
	JobInstall JobWhen = "install"
	JobUpgrade JobWhen = "upgrade"
)

// Job is a one-shot command run in a container of a service's image.
type Job struct {
	Name string `json:"name"`
	// Service whose image, environment, mounts and networks the job uses.
	Service string   `json:"service"`
	Command []string `json:"command"`
	// After lists services that must be healthy (or jobs completed) first.
	After []string `json:"after,omitempty"`
	// Before lists services that wait for this job to complete successfully.
	Before  []string      `json:"before,omitempty"`
	When    JobWhen       `json:"when"`
	Timeout time.Duration `json:"timeout"`
}

// Secret is a value generated once at install.
type Secret struct {
	Name string `json:"name"`
	// Generate is "hex" (Length random bytes as hex), "base64" or "password".
	Generate string `json:"generate"`
	Length   int    `json:"length"`
	// Env is the environment variable the value is injected as in the
	// services that list the secret.
	Env string `json:"env,omitempty"`
}

// BackupHook dumps a service's data through exec.
type BackupHook struct {
	Command []string `json:"command"`
	Restore []string `json:"restore,omitempty"`
}

// Checks configures `outpost check`.
type Checks struct {
	// RequiredLabels are image labels every image must carry; empty means
	// the default set (org.opencontainers.image.version and .source).
	RequiredLabels []string `json:"required_labels,omitempty"`
	// SizeBudgets are the maximum uncompressed image size per service,
	// e.g. "400MB" (decimal units).
	SizeBudgets map[string]string `json:"size_budgets,omitempty"`
	// CompressedSizeBudgets are the maximum compressed (gzip, as pushed to
	// a registry) image size per service.
	CompressedSizeBudgets map[string]string `json:"compressed_size_budgets,omitempty"`
	// PrivilegeDrop lists services whose image starts as root and whose
	// entrypoint drops privileges itself (gosu, su-exec, setpriv); the
	// non-root check accepts them.
	PrivilegeDrop []string `json:"privilege_drop,omitempty"`
	// SecretsIgnore are absolute path globs (`**` crosses directories) of
	// image files, or environment variable names, the secret scan skips.
	SecretsIgnore []string `json:"secrets_ignore,omitempty"`
	// HealthBudgets bound, per service, how long the smoke test allows it
	// from start to healthy; without one the service's own health rules
	// (start period, interval × retries) are the budget.
	HealthBudgets map[string]time.Duration `json:"health_budgets,omitempty"`
	// Smoke are the endpoints and connections the smoke test probes.
	Smoke []SmokeCheck `json:"smoke,omitempty"`
}

// SmokeCheck is one endpoint or connection the smoke test probes.
type SmokeCheck struct {
	// Name identifies the check in reports; unique.
	Name string `json:"name"`
	// URL is fetched with GET: from the host, or from inside From's
	// network when From is set.
	URL string `json:"url,omitempty"`
	// From is the service whose container (or network) the probe runs from.
	From string `json:"from,omitempty"`
	// Target is host:port that must accept a TCP connection.
	Target string `json:"target,omitempty"`
	// Status is the expected HTTP status; 0 accepts any 2xx.
	Status int `json:"status,omitempty"`
}
