package volumes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

// mounted maps the Podman names of the volumes app's services mount to
// their Compose key, leaving out external volumes (never legacy).
func mounted(app *model.Appliance) map[string]string {
	out := map[string]string{}
	if app == nil {
		return out
	}
	for _, name := range app.ServiceNames() {
		for _, m := range app.Services[name].Mounts {
			if m.Type != model.MountVolume {
				continue
			}
			v, ok := app.Volumes[m.Source]
			switch {
			case ok && v != nil && v.External:
				continue
			case ok && v != nil:
				out[v.Name] = m.Source
			default:
				out[app.Name+"_"+m.Source] = m.Source
			}
		}
	}
	return out
}

// MarkLegacy marks volumes prev mounts and next no longer does as legacy
// since now at revision rev; returns their names.
//
// A volume already marked keeps its first mark (since, revision). A volume
// next mounts again (a rollback to a revision that used it) loses its
// legacy mark, so prune can never remove a volume in use. A volume missing
// from the inventory is recorded. Volumes are never removed here.
func MarkLegacy(ctx context.Context, st *store.Store, prev, next *model.Appliance, rev int64) ([]string, error) {
	if next == nil {
		return nil, errors.New("marking legacy volumes: no new definition")
	}
	app := next.Name
	recorded, err := st.Volumes(ctx, app)
	if err != nil {
		return nil, fmt.Errorf("marking legacy volumes of %s: %w", app, err)
	}
	byName := map[string]store.Volume{}
	for _, v := range recorded {
		byName[v.Name] = v
	}
	before, after := mounted(prev), mounted(next)
	now := time.Now()
	var marked []string
	for _, name := range slices.Sorted(maps.Keys(before)) {
		if _, still := after[name]; still {
			continue
		}
		rec, ok := byName[name]
		switch {
		case ok && rec.External:
			continue
		case ok && rec.LegacySince != nil:
			// Marked by an earlier revision: keep when it became legacy.
		case ok:
			if err := st.MarkVolumeLegacy(ctx, app, name, now, rev); err != nil {
				return marked, fmt.Errorf("marking volume %s legacy: %w", name, err)
			}
		default:
			v := store.Volume{Appliance: app, Key: before[name], Name: name, Services: users(prev, before[name]),
				CreatedBy: store.VolumeAdopted, LegacySince: &now, LegacyRevision: rev}
			if err := st.PutVolume(ctx, v); err != nil {
				return marked, fmt.Errorf("recording legacy volume %s: %w", name, err)
			}
		}
		marked = append(marked, name)
	}
	for _, name := range slices.Sorted(maps.Keys(after)) {
		if rec, ok := byName[name]; ok && rec.LegacySince != nil {
			if err := st.ClearVolumeLegacy(ctx, app, name); err != nil && !errors.Is(err, store.ErrNotFound) {
				return marked, fmt.Errorf("volume %s is mounted again: %w", name, err)
			}
		}
	}
	return marked, nil
}

// MarkUnused marks the named inventoried volumes of app legacy, since now
// at the active revision, for an operator retiring volumes no upgrade
// marked (left by a release before legacy marks existed, or by `up` with a
// new definition). A volume mounted by the active revision (or one being
// applied), an external one or one not in the inventory is refused, and
// then nothing is marked. Volumes already legacy keep their mark. It
// returns the names marked now.
func MarkUnused(ctx context.Context, st *store.Store, app string, names []string) ([]string, error) {
	infos, err := listOne(ctx, st, app)
	if err != nil {
		return nil, err
	}
	byName := map[string]Info{}
	for _, v := range infos {
		byName[v.Name] = v
	}
	var refused []string
	for _, n := range names {
		v, ok := byName[n]
		switch {
		case !ok:
			refused = append(refused, n+": not a volume of "+app+" in Outpost's inventory")
		case v.External:
			refused = append(refused, n+": external: Outpost does not manage it")
		case len(v.InUse) > 0:
			refused = append(refused, n+": mounted by "+strings.Join(v.InUse, ", ")+" in the active revision")
		}
	}
	if len(refused) > 0 {
		return nil, fmt.Errorf("%w: %s; nothing was marked", ErrRefused, strings.Join(refused, "; "))
	}
	var rev int64
	if r, err := st.ActiveRevision(ctx, app); err == nil {
		rev = r.ID
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	var marked []string
	for _, n := range names {
		if byName[n].LegacySince != nil {
			continue
		}
		if err := st.MarkVolumeLegacy(ctx, app, n, time.Now(), rev); err != nil {
			return marked, err
		}
		marked = append(marked, n)
	}
	return marked, nil
}
