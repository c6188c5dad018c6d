package volumes

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpostdev/outpost/appliance/engine"
	"github.com/outpostdev/outpost/appliance/model"
	"github.com/outpostdev/outpost/appliance/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "outpost.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// app builds a definition whose services mount the given volume keys
// (service name = "svc-" + key).
func app(mounts ...string) *model.Appliance {
	a := &model.Appliance{Name: "tale", Services: map[string]*model.Service{}, Volumes: map[string]*model.Volume{}}
	for _, k := range mounts {
		a.Volumes[k] = &model.Volume{Key: k, Name: "tale_" + k}
		a.Services["svc-"+k] = &model.Service{Name: "svc-" + k, Image: "img",
			Mounts: []model.Mount{{Type: model.MountVolume, Source: k, Target: "/data"}}}
	}
	return a
}

// deploy records a as an active revision and its volumes, as `up` does.
func deploy(t *testing.T, st *store.Store, a *model.Appliance) int64 {
	t.Helper()
	ctx := context.Background()
	spec, _ := json.Marshal(a)
	id, err := st.CreateRevision(ctx, store.Revision{Appliance: a.Name, Spec: spec, Status: store.RevisionActive})
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range mounted(a) {
		if err := st.PutVolume(ctx, store.Volume{Appliance: a.Name, Key: key, Name: name, Services: users(a, key)}); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func legacyOf(t *testing.T, st *store.Store) map[string]store.Volume {
	t.Helper()
	vols, err := st.Volumes(context.Background(), "tale")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.Volume{}
	for _, v := range vols {
		if v.LegacySince != nil {
			out[v.Name] = v
		}
	}
	return out
}

func TestMarkLegacy(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	v1 := app("platform-data", "db-data")
	deploy(t, st, v1)
	v2 := app("convex-data", "db-data")
	v2.Volumes["platform-data"] = &model.Volume{Key: "platform-data", Name: "tale_platform-data", Legacy: true}
	rev2 := deploy(t, st, v2)

	got, err := MarkLegacy(ctx, st, v1, v2, rev2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"tale_platform-data"}) {
		t.Fatalf("marked %v, want [tale_platform-data]", got)
	}
	leg := legacyOf(t, st)
	first := leg["tale_platform-data"]
	if len(leg) != 1 || first.LegacyRevision != rev2 || !slices.Equal(first.Services, []string{"svc-platform-data"}) {
		t.Fatalf("legacy volumes: %+v", leg)
	}

	// Marking again (a resumed upgrade) keeps the first mark.
	time.Sleep(2 * time.Millisecond)
	if _, err := MarkLegacy(ctx, st, v1, v2, rev2); err != nil {
		t.Fatal(err)
	}
	if again := legacyOf(t, st)["tale_platform-data"]; !again.LegacySince.Equal(*first.LegacySince) {
		t.Fatalf("legacy since moved from %s to %s", first.LegacySince, again.LegacySince)
	}

	// Rolling back to v1: platform-data is in use again, convex-data legacy.
	rev3 := deploy(t, st, v1)
	got, err = MarkLegacy(ctx, st, v2, v1, rev3)
	if err != nil {
		t.Fatal(err)
	}
	leg = legacyOf(t, st)
	if !slices.Equal(got, []string{"tale_convex-data"}) || len(leg) != 1 || leg["tale_convex-data"].LegacyRevision != rev3 {
		t.Fatalf("after rollback marked %v, legacy %+v", got, leg)
	}
}

func TestMarkLegacyRecordsUninventoriedVolume(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	v1 := app("old")
	spec, _ := json.Marshal(v1)
	if _, err := st.CreateRevision(ctx, store.Revision{Appliance: "tale", Spec: spec, Status: store.RevisionActive}); err != nil {
		t.Fatal(err)
	}
	v2 := app("new")
	got, err := MarkLegacy(ctx, st, v1, v2, 0)
	if err != nil || !slices.Equal(got, []string{"tale_old"}) {
		t.Fatalf("marked %v %v", got, err)
	}
	if leg := legacyOf(t, st); leg["tale_old"].Key != "old" {
		t.Fatalf("legacy %+v", leg)
	}
}

func TestPrunable(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	old := now.Add(-40 * 24 * time.Hour)
	young := now.Add(-time.Hour)
	cases := []struct {
		name string
		v    Info
		want string // substring of the reason; "" = prunable
	}{
		{"legacy, old, nothing migrates from it", Info{LegacySince: &old}, ""},
		{"legacy, old, verified copy", Info{LegacySince: &old, MigratedTo: []string{"t_new"}}, ""},
		{"not legacy", Info{}, "not legacy"},
		{"external", Info{External: true, LegacySince: &old}, "external"},
		{"too young", Info{LegacySince: &young}, "younger than 720h0m0s"},
		{"migration not verified", Info{LegacySince: &old, Unverified: []string{"t_new"}}, "no verified copy"},
		{"in use by the active revision", Info{LegacySince: &old, InUse: []string{"platform"}}, "mounted by platform"},
	}
	for _, c := range cases {
		got := Prunable(c.v, now, 720*time.Hour)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

// remover is the only engine call Prune makes; the rest of engine.Engine
// is never called (nil).
type remover struct {
	engine.Engine
	removed []string
}

func (r *remover) RemoveVolume(_ context.Context, name string) error {
	r.removed = append(r.removed, name)
	return nil
}

func TestPlanAndPrune(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	v1 := app("platform-data", "db-data", "cache")
	deploy(t, st, v1)
	v2 := app("convex-data", "db-data")
	v2.VolumeMigrations = []model.VolumeMigration{{From: "platform-data", To: "convex-data"}}
	rev2 := deploy(t, st, v2)
	if _, err := MarkLegacy(ctx, st, v1, v2, rev2); err != nil {
		t.Fatal(err)
	}
	// Both legacy; platform-data's migration is not verified yet.
	plan, err := PlanPrune(ctx, st, PruneOptions{Appliance: "tale", OlderThan: 720 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Remove) != 0 || len(plan.Keep) != 2 || !strings.Contains(plan.Keep[0].Reason+plan.Keep[1].Reason, "younger than 720h") {
		t.Fatalf("plan %+v", plan)
	}
	plan, err = PlanPrune(ctx, st, PruneOptions{Appliance: "tale", OlderThan: 0})
	if err != nil || !slices.Equal(plan.Names(), []string{"tale_cache"}) || len(plan.Keep) != 1 ||
		!strings.Contains(plan.Keep[0].Reason, "no verified copy") {
		t.Fatalf("plan %+v %v", plan, err)
	}

	// Naming a non-legacy or unverified volume refuses everything.
	for _, names := range [][]string{{"tale_db-data"}, {"tale_cache", "tale_platform-data"}, {"tale_nope"}} {
		_, err := PlanPrune(ctx, st, PruneOptions{Appliance: "tale", Names: names})
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("names %v: %v, want ErrRefused", names, err)
		}
		rm := &remover{}
		if got, err := Prune(ctx, rm, st, PruneOptions{Appliance: "tale", Names: names}, "test"); !errors.Is(err, ErrRefused) || len(got) > 0 || len(rm.removed) > 0 {
			t.Fatalf("prune %v: removed %v %v, %v", names, got, rm.removed, err)
		}
	}

	// Once the copy is verified, platform-data qualifies too.
	rec, _ := json.Marshal(Record{Marker: Marker{From: "tale_platform-data", To: "tale_convex-data", Checksum: "sha256:x"}, Appliance: "tale"})
	if err := st.Set(ctx, RecordKey("tale", "tale_platform-data", "tale_convex-data"), string(rec)); err != nil {
		t.Fatal(err)
	}
	plan, err = PlanPrune(ctx, st, PruneOptions{Appliance: "tale", OlderThan: time.Hour})
	if err != nil || len(plan.Remove) != 0 {
		t.Fatalf("too young volumes planned: %+v %v", plan, err)
	}
	rm := &remover{}
	got, err := Prune(ctx, rm, st, PruneOptions{Appliance: "tale", Names: []string{"tale_platform-data"}}, "alice")
	if err != nil || !slices.Equal(got, []string{"tale_platform-data"}) || !slices.Equal(rm.removed, got) {
		t.Fatalf("prune: %v %v %v", got, rm.removed, err)
	}
	removals, err := st.VolumeRemovals(ctx, "tale")
	if err != nil || len(removals) != 1 || removals[0].RemovedBy != "alice" || !strings.Contains(removals[0].Reason, "verified copy in tale_convex-data") {
		t.Fatalf("removals %+v %v", removals, err)
	}
	if _, ok := legacyOf(t, st)["tale_platform-data"]; ok {
		t.Fatal("removed volume still in the inventory")
	}

	// An unfinished operation (an upgrade in flight) blocks every prune.
	if _, err := st.BeginOp(ctx, "tale", "upgrade"); err != nil {
		t.Fatal(err)
	}
	if _, err := Prune(ctx, &remover{}, st, PruneOptions{Appliance: "tale", Names: []string{"tale_cache"}}, "alice"); !errors.Is(err, ErrRefused) {
		t.Fatalf("prune during an operation: %v", err)
	}
}
