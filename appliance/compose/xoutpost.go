package compose

import (
	"time"
)

// The x-outpost schema as written in Compose files. These types mirror the
// YAML one to one and are decoded strictly (decodeStrict); conversion to the
// model and its validation happen in convert.go. docs/x-outpost.md documents
// every field: keep the two in step.

// xOutpost is the top-level `x-outpost` block.
type xOutpost struct {
	Name     string               `json:"name"`
	Version  string               `json:"version"`
	Proxy    *xProxy              `json:"proxy"`
	Services map[string]*xService `json:"services"`
	Jobs     map[string]*xJob     `json:"jobs"`
	Volumes  *xVolumes            `json:"volumes"`
	Secrets  map[string]*xSecret  `json:"secrets"`
	Checks   *xChecks             `json:"checks"`
	Backup   *xBackupPolicy       `json:"backup"`
}

// xProxy is x-outpost.proxy.
type xProxy struct {
	Service         string   `json:"service"`
	Caddyfile       string   `json:"caddyfile"`
	Routes          []xRoute `json:"routes"`
	Sites           []string `json:"sites"`
	TLS             string   `json:"tls"`
	HealthListen    string   `json:"health_listen"`
	CAMount         string   `json:"ca_mount"`
	CAMountServices []string `json:"ca_mount_services"`
	MaintenancePage string   `json:"maintenance_page"`
}

// xRoute is one entry of x-outpost.proxy.routes.
type xRoute struct {
	Path        string            `json:"path"`
	Host        string            `json:"host"`
	Header      map[string]string `json:"header"`
	StripPrefix string            `json:"strip_prefix"`
	Rewrite     string            `json:"rewrite"`
	Upstream    string            `json:"upstream"`
	Redirect    string            `json:"redirect"`
	Respond     string            `json:"respond"`
	Status      int               `json:"status"`
	Headers     map[string]string `json:"headers"`
}

// xService is x-outpost.services.<svc>, and also services.<svc>.x-outpost.
// Pointer and nil-slice fields tell "not set" from "set to empty" so the
// service-level block can override the top-level one field by field.
type xService struct {
	Role         string         `json:"role"`
	ReadyMarkers []string       `json:"ready_markers"`
	StopTimeout  *time.Duration `json:"stop_timeout"`
	Backup       *xBackup       `json:"backup"`
	Secrets      []string       `json:"secrets"`
}

// xBackup is a service's backup hook.
type xBackup struct {
	Command shellCommand `json:"command"`
	Restore shellCommand `json:"restore"`
}

// xBackupPolicy is x-outpost.backup: scheduled snapshots and retention.
// Ages are strings so that days ("14d") can be written.
type xBackupPolicy struct {
	Schedule   string `json:"schedule"`
	KeepLast   *int   `json:"keep_last"`
	KeepWithin string `json:"keep_within"`
	Dir        string `json:"dir"`
	Quiesce    string `json:"quiesce"`
}

// xJob is x-outpost.jobs.<name>.
type xJob struct {
	Service string         `json:"service"`
	Command shellCommand   `json:"command"`
	After   []string       `json:"after"`
	Before  []string       `json:"before"`
	When    string         `json:"when"`
	Timeout *time.Duration `json:"timeout"`
}

// xVolumes is x-outpost.volumes.
type xVolumes struct {
	Legacy     []string     `json:"legacy"`
	Migrations []xMigration `json:"migrations"`
}

// xMigration is one entry of x-outpost.volumes.migrations.
type xMigration struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// xSecret is x-outpost.secrets.<name>.
type xSecret struct {
	Generate string `json:"generate"`
	Length   *int   `json:"length"`
	Env      string `json:"env"`
}

// xChecks is x-outpost.checks.
type xChecks struct {
	RequiredLabels        []string                  `json:"required_labels"`
	SizeBudgets           map[string]string         `json:"size_budgets"`
	CompressedSizeBudgets map[string]string         `json:"compressed_size_budgets"`
	PrivilegeDrop         []string                  `json:"privilege_drop"`
	SecretsIgnore         []string                  `json:"secrets_ignore"`
	HealthBudgets         map[string]*time.Duration `json:"health_budgets"`
	Smoke                 []xSmoke                  `json:"smoke"`
}

// xSmoke is one entry of x-outpost.checks.smoke.
type xSmoke struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	From   string `json:"from"`
	Target string `json:"target"`
	Status int    `json:"status"`
}

// merge overlays the service-level block s on the top-level one t: every
// field s sets wins.
func (t *xService) merge(s *xService) *xService {
	switch {
	case t == nil:
		return s
	case s == nil:
		return t
	}
	out := *t
	if s.Role != "" {
		out.Role = s.Role
	}
	if s.ReadyMarkers != nil {
		out.ReadyMarkers = s.ReadyMarkers
	}
	if s.StopTimeout != nil {
		out.StopTimeout = s.StopTimeout
	}
	if s.Backup != nil {
		out.Backup = s.Backup
	}
	if s.Secrets != nil {
		out.Secrets = s.Secrets
	}
	return &out
}
