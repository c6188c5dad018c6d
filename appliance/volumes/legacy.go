package volumes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
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
