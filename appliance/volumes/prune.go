package volumes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

// Sizer measures volumes; engine/podman implements it outside engine.Engine.
type Sizer interface {
	VolumeSizes(ctx context.Context) (map[string]int64, error)
}

// Remover deletes a volume; deliberately not part of engine.Engine (see
// engine/podman.RemoveVolume): Prune is its only caller here.
type Remover interface {
	RemoveVolume(ctx context.Context, name string) error
}

// Info is one inventoried volume as `outpost volumes` shows it.
type Info struct {
	Appliance string `json:"appliance"`
	Name      string `json:"name"`
	Key       string `json:"key"`
	// Services are the services that mount (or, for a legacy volume,
	// last mounted) it: its owners.
	Services []string `json:"services,omitempty"`
	External bool     `json:"external,omitempty"`
	// Size in bytes; -1 when unknown (no engine, or it does not exist).
	Size int64 `json:"size"`
	// Exists is false when the engine does not have the volume (or was
	// not asked).
	Exists    bool      `json:"exists"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	// LegacySince and LegacyRevision are set for legacy volumes.
	LegacySince    *time.Time `json:"legacy_since,omitempty"`
	LegacyRevision int64      `json:"legacy_revision,omitempty"`
	// MigratedTo names the volumes a recorded migration copied this one
	// into; Unverified names those a declared migration should copy it
	// into but no verified copy is recorded for.
	MigratedTo []string `json:"migrated_to,omitempty"`
	Unverified []string `json:"unverified,omitempty"`
	// InUse names the services of the active definition (or one being
	// applied) mounting it.
	InUse []string `json:"in_use,omitempty"`
	// Unrecorded is true for a volume Podman has with the appliance's
	// label that Outpost's inventory does not hold: it is listed, but
	// never pruned.
	Unrecorded bool `json:"unrecorded,omitempty"`
}

// Legacy reports whether the volume is marked legacy.
func (i Info) Legacy() bool { return i.LegacySince != nil }

// List returns the inventoried volumes of the appliances (all recorded
// appliances when none is given), by appliance and name. eng may be nil
// (no sizes, Exists false).
func List(ctx context.Context, eng engine.Engine, st *store.Store, appliances ...string) ([]Info, error) {
	if len(appliances) == 0 {
		names, err := st.Appliances(ctx)
		if err != nil {
			return nil, err
		}
		appliances = names
	}
	var sizes map[string]int64
	exists := map[string]bool{}
	var labelled []engine.VolumeInfo
	if eng != nil {
		vols, err := eng.ListVolumes(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("listing volumes: %w", err)
		}
		labelled = vols
		for _, v := range vols {
			exists[v.Name] = true
		}
		if s, ok := eng.(Sizer); ok {
			// Sizes are a nicety: a failure leaves them unknown.
			sizes, _ = s.VolumeSizes(ctx)
		}
	}
	var out []Info
	for _, app := range appliances {
		infos, err := listOne(ctx, st, app)
		if err != nil {
			return nil, err
		}
		known := map[string]bool{}
		for _, v := range infos {
			known[v.Name] = true
		}
		for _, v := range labelled {
			if v.Labels[engine.LabelAppliance] == app && !known[v.Name] {
				infos = append(infos, Info{Appliance: app, Name: v.Name, Key: v.Labels[engine.LabelVolume], CreatedAt: v.CreatedAt, Unrecorded: true})
			}
		}
		sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
		for i := range infos {
			infos[i].Exists = exists[infos[i].Name]
			infos[i].Size = -1
			if n, ok := sizes[infos[i].Name]; ok && infos[i].Exists {
				infos[i].Size = n
			}
		}
		out = append(out, infos...)
	}
	return out, nil
}

// listOne reads one appliance's inventory with its migration records and
// the active definition's mounts.
func listOne(ctx context.Context, st *store.Store, app string) ([]Info, error) {
	vols, err := st.Volumes(ctx, app)
	if err != nil {
		return nil, err
	}
	revs, err := st.Revisions(ctx, app)
	if err != nil {
		return nil, fmt.Errorf("reading revisions of %s: %w", app, err)
	}
	// Every migration any revision declared, by source name.
	targets := map[string]map[string]bool{}
	// Definitions whose mounts are in use: the active one and any being
	// applied (an upgrade or rollback in flight).
	var live []*model.Appliance
	for _, r := range revs {
		if len(r.Spec) == 0 {
			continue
		}
		var a model.Appliance
		if err := json.Unmarshal(r.Spec, &a); err != nil {
			return nil, fmt.Errorf("decoding revision %d of %s: %w", r.ID, app, err)
		}
		if r.Status == store.RevisionActive || r.Status == store.RevisionApplying {
			live = append(live, &a)
		}
		for _, m := range a.VolumeMigrations {
			from, to, err := resolve(&a, m)
			if err != nil {
				continue
			}
			if targets[from.Name] == nil {
				targets[from.Name] = map[string]bool{}
			}
			targets[from.Name][to.Name] = true
		}
	}
	inUse := map[string][]string{}
	for _, a := range live {
		for name, key := range mounted(a) {
			inUse[name] = append(inUse[name], users(a, key)...)
		}
	}
	for name, svcs := range inUse {
		sort.Strings(svcs)
		inUse[name] = slices.Compact(svcs)
	}
	out := make([]Info, 0, len(vols))
	for _, v := range vols {
		i := Info{Appliance: app, Name: v.Name, Key: v.Key, Services: v.Services, External: v.External,
			CreatedAt: v.CreatedAt, CreatedBy: v.CreatedBy, LegacySince: v.LegacySince, LegacyRevision: v.LegacyRevision,
			InUse: inUse[v.Name]}
		for _, to := range slices.Sorted(maps.Keys(targets[v.Name])) {
			if _, err := st.Get(ctx, RecordKey(app, v.Name, to)); err == nil {
				i.MigratedTo = append(i.MigratedTo, to)
			} else if errors.Is(err, store.ErrNotFound) {
				i.Unverified = append(i.Unverified, to)
			} else {
				return nil, err
			}
		}
		out = append(out, i)
	}
	return out, nil
}

// Refusal says why a volume may not be pruned.
type Refusal struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Prunable decides whether a volume may be removed by `prune --legacy`:
// it must be legacy for longer than olderThan, not external, not mounted by
// the active definition, and every migration declared from it must have a
// verified copy recorded (a volume no migration reads needs no
// replacement). The empty string means yes; otherwise the reason.
func Prunable(v Info, now time.Time, olderThan time.Duration) string {
	switch {
	case v.External:
		return "external: Outpost never removes it"
	case v.LegacySince == nil:
		return "not legacy: the deployed revision still uses it"
	case len(v.InUse) > 0:
		return "mounted by " + strings.Join(v.InUse, ", ") + " in the active revision"
	case len(v.Unverified) > 0:
		return "its migration into " + strings.Join(v.Unverified, ", ") + " has no verified copy recorded"
	}
	if age := now.Sub(*v.LegacySince); age < olderThan {
		return fmt.Sprintf("legacy for only %s (since %s), younger than %s", age.Round(time.Second), v.LegacySince.Local().Format(time.DateTime), olderThan)
	}
	return ""
}

// PruneOptions select what `prune --legacy` removes.
type PruneOptions struct {
	// Appliance whose legacy volumes are considered. Required.
	Appliance string
	// OlderThan is the minimum time a volume has been legacy; 0 allows any.
	OlderThan time.Duration
	// Names restricts the plan to these volumes; each must be prunable.
	Names []string
	// Now defaults to the current time.
	Now time.Time
}

// PrunePlan is what a prune would remove and what it keeps, and why.
type PrunePlan struct {
	Appliance string `json:"appliance"`
	// Remove are the volumes that would be removed.
	Remove []Info `json:"remove"`
	// Keep are legacy (or named) volumes the guards keep.
	Keep []Refusal `json:"keep,omitempty"`
}

// Names are the names of the volumes the plan removes.
func (p PrunePlan) Names() []string {
	out := make([]string, len(p.Remove))
	for i, v := range p.Remove {
		out[i] = v.Name
	}
	return out
}

// ErrRefused: a named volume may not be pruned (wrapped with the reasons).
var ErrRefused = errors.New("refusing to prune")

// PlanPrune lists what Prune would remove. A named volume that is not
// prunable (or unknown) makes it fail with ErrRefused naming the reasons;
// without names, unprunable legacy volumes are listed in Keep.
func PlanPrune(ctx context.Context, st *store.Store, o PruneOptions) (PrunePlan, error) {
	if o.Appliance == "" {
		return PrunePlan{}, errors.New("planning the prune: no appliance given")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.OlderThan < 0 {
		return PrunePlan{}, fmt.Errorf("planning the prune: --older-than %s is negative", o.OlderThan)
	}
	infos, err := listOne(ctx, st, o.Appliance)
	if err != nil {
		return PrunePlan{}, err
	}
	plan := PrunePlan{Appliance: o.Appliance}
	byName := map[string]Info{}
	for _, v := range infos {
		byName[v.Name] = v
	}
	if len(o.Names) > 0 {
		var refused []string
		seen := map[string]bool{}
		for _, n := range o.Names {
			if seen[n] {
				continue
			}
			seen[n] = true
			v, ok := byName[n]
			why := "not a volume of " + o.Appliance + " in Outpost's inventory"
			if ok {
				why = Prunable(v, o.Now, o.OlderThan)
			}
			if why != "" {
				refused = append(refused, n+": "+why)
				plan.Keep = append(plan.Keep, Refusal{Name: n, Reason: why})
				continue
			}
			plan.Remove = append(plan.Remove, v)
		}
		if len(refused) > 0 {
			return plan, fmt.Errorf("%w: %s; nothing was removed", ErrRefused, strings.Join(refused, "; "))
		}
		return plan, nil
	}
	for _, v := range infos {
		if v.LegacySince == nil {
			continue
		}
		if why := Prunable(v, o.Now, o.OlderThan); why != "" {
			plan.Keep = append(plan.Keep, Refusal{Name: v.Name, Reason: why})
			continue
		}
		plan.Remove = append(plan.Remove, v)
	}
	return plan, nil
}

// LockName is the store lock Prune holds for an appliance.
func LockName(app string) string { return "volumes:" + app }

// Prune removes exactly the named legacy volumes of o.Appliance, after
// checking again, under the appliance's volumes lock, that each is
// prunable and that no operation (an upgrade, a rollback) is unfinished.
// by says who confirmed it; every removal is recorded with
// store.RecordVolumeRemoved. It stops at the first failure and returns
// the names removed so far.
func Prune(ctx context.Context, eng engine.Engine, st *store.Store, o PruneOptions, by string) ([]string, error) {
	if len(o.Names) == 0 {
		return nil, errors.New("pruning legacy volumes: name the volumes to remove")
	}
	rm, ok := eng.(Remover)
	if !ok {
		return nil, errors.New("pruning legacy volumes: the container engine cannot remove volumes")
	}
	release, err := st.AcquireLock(ctx, LockName(o.Appliance), "outpost volumes prune")
	if err != nil {
		return nil, fmt.Errorf("pruning legacy volumes of %s: %w", o.Appliance, err)
	}
	defer func() { _ = release() }()
	ops, err := st.OpenOps(ctx, o.Appliance)
	if err != nil {
		return nil, err
	}
	if len(ops) > 0 {
		return nil, fmt.Errorf("%w: operation %d (%s) of %s is unfinished; let it finish or roll back (start `outpost run` or run `outpost upgrade` again), then prune",
			ErrRefused, ops[0].ID, ops[0].Kind, o.Appliance)
	}
	plan, err := PlanPrune(ctx, st, o)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, v := range plan.Remove {
		if err := rm.RemoveVolume(ctx, v.Name); err != nil && !errors.Is(err, engine.ErrNotFound) {
			return removed, fmt.Errorf("removing legacy volume %s: %w (is a container still using it? `podman ps -a --filter volume=%s`)", v.Name, err, v.Name)
		}
		reason := fmt.Sprintf("legacy since %s (revision %d)", v.LegacySince.UTC().Format(time.RFC3339), v.LegacyRevision)
		if len(v.MigratedTo) > 0 {
			reason += ", verified copy in " + strings.Join(v.MigratedTo, ", ")
		} else {
			reason += ", no migration reads it"
		}
		reason += ", pruned with --older-than " + o.OlderThan.String()
		if err := st.RecordVolumeRemoved(ctx, o.Appliance, v.Name, by, reason); err != nil {
			return removed, fmt.Errorf("volume %s was removed but not recorded: %w", v.Name, err)
		}
		_ = st.AddEvent(ctx, store.Event{Appliance: o.Appliance, Kind: "volume-removed", Message: v.Name + ": " + reason + " by " + by})
		removed = append(removed, v.Name)
	}
	sort.Strings(removed)
	return removed, nil
}
