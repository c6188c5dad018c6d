// Package upgrade moves a deployed appliance from one revision to another
// as one journaled transaction: it computes the plan (what changes, how
// each service is replaced, which jobs and volume migrations run, whether
// a snapshot is needed), applies it under the appliance's writer lock with
// every step written to the store's journal before it runs, rolls the
// whole stack back when any step fails, and on the next start finishes or
// rolls back an upgrade whose process was killed.
//
// It never removes a volume: volumes the new revision no longer mounts
// are marked legacy (see package volumes). Containers are started, waited
// on and replaced through package runtime, which keeps the steady-state
// names (<appliance>-<service>) and config hashes every other command
// relies on.
package upgrade

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/backup"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/plan"
)

// Action says what an upgrade does to one service.
type Action string

// Actions of a plan.
const (
	// ActionKeep leaves the running container as it is.
	ActionKeep Action = "keep"
	// ActionRotate starts the new copy beside the old one, moves the
	// proxy's traffic to it once healthy, then drains and stops the old.
	ActionRotate Action = "rotate"
	// ActionReplace stops the old container (its full stop timeout) and
	// starts the new one in its place.
	ActionReplace Action = "replace"
	// ActionAdd starts a service the deployed revision does not have.
	ActionAdd Action = "add"
	// ActionRemove stops and removes a service the new revision drops
	// (its volumes are kept and marked legacy).
	ActionRemove Action = "remove"
)

// ServiceChange is the plan for one service.
type ServiceChange struct {
	Service string `json:"service"`
	Action  Action `json:"action"`
	// FromImage and ToImage are the image references before and after.
	FromImage string `json:"from_image,omitempty"`
	ToImage   string `json:"to_image,omitempty"`
	// Reason says why the service changes and, for a rotatable service
	// replaced in place, why it cannot rotate.
	Reason string `json:"reason,omitempty"`
	// HostPortGap, for a rotated service that publishes fixed host ports,
	// says that those ports are briefly unavailable: the copy beside
	// serves the proxy's traffic only, and the service's own container,
	// which holds the fixed ports, is replaced in place meanwhile.
	HostPortGap string `json:"host_port_gap,omitempty"`
}

// Plan is what an upgrade will do. Compute makes it without touching
// anything; --dry-run prints it.
type Plan struct {
	Appliance   string `json:"appliance"`
	FromVersion string `json:"from_version,omitempty"`
	ToVersion   string `json:"to_version,omitempty"`
	// FromRevision is the deployed revision.
	FromRevision int64 `json:"from_revision"`
	// Services in the new revision's start order, removed services last.
	Services []ServiceChange `json:"services"`
	// Jobs are the jobs that run during the upgrade (when: upgrade or
	// always), in start order.
	Jobs []string `json:"jobs,omitempty"`
	// Migrations are the volume migrations, in declaration order.
	Migrations []model.VolumeMigration `json:"migrations,omitempty"`
	// Legacy are the volume keys the deployed revision mounts and the new
	// one does not: kept, and marked legacy.
	Legacy []string `json:"legacy,omitempty"`
	// DataChanges say why the upgrade may change data; when there are any,
	// a snapshot is taken first.
	DataChanges []string `json:"data_changes,omitempty"`
	// Unchanged is true when the definition and images are identical.
	Unchanged bool `json:"unchanged"`
}

// Changes returns the services the plan touches (everything but keep).
func (p *Plan) Changes() []ServiceChange {
	var out []ServiceChange
	for _, c := range p.Services {
		if c.Action != ActionKeep {
			out = append(out, c)
		}
	}
	return out
}

// Compute plans moving from the deployed definition prev (running images
// prevImages, service → image ID) to next (images nextImages). It is pure:
// the images maps come from the recorded revision and a preflight
// inspection.
func Compute(prev, next *model.Appliance, prevImages, nextImages map[string]string) (*Plan, error) {
	if prev.Name != next.Name {
		return nil, fmt.Errorf("the new definition names appliance %q, the deployed one is %q; pass --name %s to upgrade it", next.Name, prev.Name, prev.Name)
	}
	p := &Plan{Appliance: next.Name, FromVersion: prev.Version, ToVersion: next.Version}
	dag, err := plan.Graph(next, func(j *model.Job) bool { return runsOnUpgrade(j) })
	if err != nil {
		return nil, err
	}
	// gated[s] names a job or in-place change s waits for: a copy of s
	// started beside the old one before it would break the start order.
	gated := map[string]string{}
	gate := func(name, why string) {
		for _, d := range dag.Downstream(name) {
			if gated[d] == "" {
				gated[d] = why
			}
		}
	}
	for _, name := range dag.Order() {
		if dag.Node(name).Kind == plan.KindJob {
			p.Jobs = append(p.Jobs, name)
			gate(name, "it waits for job "+name)
			continue
		}
		svc := next.Services[name]
		old := prev.Services[name]
		c := ServiceChange{Service: name, ToImage: svc.Image}
		switch {
		case old == nil:
			c.Action, c.Reason = ActionAdd, "new service"
		default:
			c.FromImage = old.Image
			why := difference(old, svc, prevImages[name], nextImages[name])
			switch {
			case why == "":
				c.Action = ActionKeep
			case svc.Role == model.RoleRotatable:
				c.Action, c.Reason = ActionRotate, why
				fixed := fixedHostPorts(old, svc)
				if g := gated[name]; g != "" {
					c.Action, c.Reason = ActionReplace, why+"; in place: "+g
				} else if len(fixed) > 0 && !proxied(next, name) {
					c.Action, c.Reason = ActionReplace, fmt.Sprintf("%s; in place: it publishes fixed host port %s, which two copies cannot share, and the proxy does not route to it", why, joinPorts(fixed))
				} else if len(fixed) > 0 {
					c.HostPortGap = fmt.Sprintf("host %s %s %s unavailable for ~%ds while %s is replaced; traffic through the proxy is not interrupted",
						plural(len(fixed), "port", "ports"), joinPorts(fixed), plural(len(fixed), "is", "are"), int(ReplaceGap/time.Second), name)
				}
			default:
				c.Action, c.Reason = ActionReplace, why
			}
		}
		if c.Action == ActionReplace || c.Action == ActionAdd {
			gate(name, "it depends on "+name+", which is replaced in place")
		}
		p.Services = append(p.Services, c)
	}
	for _, name := range prev.ServiceNames() {
		if _, ok := next.Services[name]; !ok {
			p.Services = append(p.Services, ServiceChange{Service: name, Action: ActionRemove, FromImage: prev.Services[name].Image, Reason: "not in the new definition"})
		}
	}
	p.Migrations = slices.Clone(next.VolumeMigrations)
	p.Legacy = legacyKeys(prev, next)
	p.DataChanges = backup.ChangesData(prev, next)
	p.Unchanged = len(p.Changes()) == 0 && len(p.Migrations) == 0 && sameDefinition(prev, next)
	return p, nil
}

// runsOnUpgrade reports whether a job runs during an upgrade.
func runsOnUpgrade(j *model.Job) bool {
	return j.When == model.JobUpgrade || j.When == model.JobAlways
}

// difference says how a service changes, "" when it does not.
func difference(old, svc *model.Service, oldImage, newImage string) string {
	switch {
	case old.Image != svc.Image:
		return fmt.Sprintf("image %s → %s", old.Image, svc.Image)
	case oldImage != "" && newImage != "" && oldImage != newImage:
		return fmt.Sprintf("image %s now has ID %s (was %s)", svc.Image, short(newImage), short(oldImage))
	case !sameJSON(old, svc):
		return "configuration changed"
	}
	return ""
}

// ReplaceGap is the typical time a fixed host port of a rotated service
// is unavailable: from stopping its own container (which exits on
// SIGTERM) to the new one listening — removal, creation, start and the
// rootless port forwarder. Measured with bench/upgrade on a 2-core VM
// (docs/benchmarks.md); a service slow to stop adds up to its stop
// timeout.
const ReplaceGap = 2 * time.Second

// fixedHostPorts are the fixed host ports a service publishes before or
// after the change, sorted: two copies cannot share them, so the copy
// started beside leaves them to the service's own container.
func fixedHostPorts(old, svc *model.Service) []uint16 {
	var out []uint16
	for _, s := range []*model.Service{old, svc} {
		for _, p := range s.Ports {
			if p.HostPort != 0 && !slices.Contains(out, p.HostPort) {
				out = append(out, p.HostPort)
			}
		}
	}
	slices.Sort(out)
	return out
}

// proxied reports whether the embedded proxy may send traffic to service
// name: a route names it as upstream, or a Caddyfile (whose upstreams
// the plan does not parse) is used.
func proxied(app *model.Appliance, name string) bool {
	if app.Proxy == nil {
		return false
	}
	if app.Proxy.Caddyfile != "" || app.Proxy.CaddyfileText != "" {
		return true
	}
	return slices.ContainsFunc(app.Proxy.Routes, func(r model.Route) bool {
		host, _, _ := strings.Cut(r.Upstream, ":")
		return host == name
	})
}

func joinPorts(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// legacyKeys are the volume keys prev mounts and next does not.
func legacyKeys(prev, next *model.Appliance) []string {
	used := map[string]bool{}
	for _, s := range next.Services {
		for _, m := range s.Mounts {
			if m.Type == model.MountVolume {
				used[m.Source] = true
			}
		}
	}
	var out []string
	for _, name := range prev.ServiceNames() {
		for _, m := range prev.Services[name].Mounts {
			if m.Type == model.MountVolume && !used[m.Source] && !slices.Contains(out, m.Source) {
				out = append(out, m.Source)
			}
		}
	}
	slices.Sort(out)
	return out
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// sameDefinition compares what the runtime applies, ignoring where the
// files were loaded from.
func sameDefinition(a, b *model.Appliance) bool {
	ca, cb := *a, *b
	ca.Sources, cb.Sources = nil, nil
	return sameJSON(&ca, &cb)
}

func short(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// Render writes the plan for people, one line per change.
func (p *Plan) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "upgrade %s from revision %d", p.Appliance, p.FromRevision)
	if p.FromVersion != "" || p.ToVersion != "" {
		fmt.Fprintf(&b, " (version %s → %s)", orDash(p.FromVersion), orDash(p.ToVersion))
	}
	b.WriteString("\n")
	if p.Unchanged {
		b.WriteString("  nothing changes\n")
		return b.String()
	}
	if len(p.DataChanges) > 0 {
		b.WriteString("  snapshot first, because:\n")
		for _, r := range p.DataChanges {
			fmt.Fprintf(&b, "    - %s\n", r)
		}
	}
	for _, m := range p.Migrations {
		fmt.Fprintf(&b, "  migrate volume %s → %s (the source is kept)\n", m.From, m.To)
	}
	for _, c := range p.Services {
		line := fmt.Sprintf("  %-8s %s", c.Action, c.Service)
		if c.Reason != "" {
			line += ": " + c.Reason
		}
		b.WriteString(line + "\n")
		if c.HostPortGap != "" {
			fmt.Fprintf(&b, "  %-8s %s\n", "", c.HostPortGap)
		}
	}
	for _, j := range p.Jobs {
		fmt.Fprintf(&b, "  %-8s %s\n", "job", j)
	}
	for _, v := range p.Legacy {
		fmt.Fprintf(&b, "  %-8s volume %s (kept for rollback)\n", "legacy", v)
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
