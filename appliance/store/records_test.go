package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestRevisionLifecycle(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)

	r1 := Revision{Appliance: "shop", Version: "1.0", Spec: []byte(`{"services":{}}`),
		Images: map[string]string{"web": "sha256:aaa", "db": "sha256:bbb"}, Note: "install"}
	id1, err := s.CreateRevision(ctx, r1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Revision(ctx, id1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != RevisionPending || got.CreatedAt.IsZero() || !got.AppliedAt.IsZero() {
		t.Errorf("new revision: status %s created %v applied %v", got.Status, got.CreatedAt, got.AppliedAt)
	}
	if string(got.Spec) != string(r1.Spec) || !reflect.DeepEqual(got.Images, r1.Images) ||
		got.Version != "1.0" || got.Note != "install" || len(got.SpecHash) != len("sha256:")+64 {
		t.Errorf("round trip: %+v", got)
	}
	if _, err := s.ActiveRevision(ctx, "shop"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ActiveRevision before apply: %v, want ErrNotFound", err)
	}

	for _, st := range []RevisionStatus{RevisionApplying, RevisionActive, RevisionActive} {
		if err := s.SetRevisionStatus(ctx, id1, st); err != nil {
			t.Fatalf("-> %s: %v", st, err)
		}
	}
	act, err := s.ActiveRevision(ctx, "shop")
	if err != nil || act.ID != id1 || act.AppliedAt.IsZero() {
		t.Fatalf("ActiveRevision = %+v, %v; want revision %d applied", act, err, id1)
	}

	// A second revision becoming active supersedes the first.
	id2, err := s.CreateRevision(ctx, Revision{Appliance: "shop", Version: "1.1"})
	if err != nil {
		t.Fatal(err)
	}
	// Another appliance's active revision is not touched.
	other, err := s.CreateRevision(ctx, Revision{Appliance: "blog", Status: RevisionActive})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetRevisionStatus(ctx, id2, RevisionApplying); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRevisionStatus(ctx, id2, RevisionActive); err != nil {
		t.Fatal(err)
	}
	wantStatus := func(id int64, want RevisionStatus) {
		t.Helper()
		r, err := s.Revision(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != want {
			t.Errorf("revision %d is %s, want %s", id, r.Status, want)
		}
	}
	wantStatus(id1, RevisionSuperseded)
	wantStatus(id2, RevisionActive)
	wantStatus(other, RevisionActive)

	// Rollback: the new one is rolled back, the old one active again.
	if err := s.SetRevisionStatus(ctx, id2, RevisionRolledBack); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRevisionStatus(ctx, id1, RevisionActive); err != nil {
		t.Fatal(err)
	}
	wantStatus(id1, RevisionActive)
	wantStatus(id2, RevisionRolledBack)

	// Forbidden transitions and unknown ones.
	if err := s.SetRevisionStatus(ctx, id2, RevisionPending); !errors.Is(err, ErrInvalidTransition) {
		t.Errorf("rolled_back -> pending: %v, want ErrInvalidTransition", err)
	}
	if err := s.SetRevisionStatus(ctx, id2, "bogus"); err == nil {
		t.Error("unknown status accepted")
	}
	if err := s.SetRevisionStatus(ctx, 999, RevisionActive); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing revision: %v, want ErrNotFound", err)
	}
	if _, err := s.CreateRevision(ctx, Revision{Appliance: "shop", Spec: []byte("{nope")}); err == nil {
		t.Error("invalid JSON spec accepted")
	}

	// The database itself refuses a second active revision.
	if _, err := s.db.ExecContext(ctx, "UPDATE revisions SET status = 'active' WHERE id = ?", id2); err == nil {
		t.Error("schema allowed two active revisions of one appliance")
	}

	revs, err := s.Revisions(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 2 || revs[0].ID != id2 || revs[1].ID != id1 {
		t.Errorf("Revisions = %v, want [%d %d]", ids(revs), id2, id1)
	}
}

func ids(rs []Revision) []int64 {
	var out []int64
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func TestContainers(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	rev, err := s.CreateRevision(ctx, Revision{Appliance: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c := Container{Appliance: "shop", Service: "web", Name: "shop-web", ID: "c1", ConfigHash: "h1",
		Image: "sha256:aaa", Revision: rev, CreatedAt: now, StartedAt: now}
	if err := s.PutContainer(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.PutContainer(ctx, Container{Appliance: "shop", Service: "migrate", Name: "shop-job-migrate", Job: true}); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Minute)
	if err := s.RecordRestart(ctx, "shop", "shop-web", later, 137); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordRestart(ctx, "shop", "nope", later, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RecordRestart missing: %v, want ErrNotFound", err)
	}
	// Re-putting the same container (same ID) keeps the restart counters.
	c.ConfigHash = "h1"
	c.StartedAt = later
	if err := s.PutContainer(ctx, c); err != nil {
		t.Fatal(err)
	}
	cs, err := s.Containers(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Name != "shop-job-migrate" || !cs[0].Job || cs[1].Name != "shop-web" {
		t.Fatalf("Containers = %+v", cs)
	}
	web := cs[1]
	if web.Restarts != 1 || web.LastExitCode != 137 || !web.StartedAt.Equal(later) ||
		!web.CreatedAt.Equal(now) || web.Revision != rev || web.ID != "c1" {
		t.Errorf("web = %+v", web)
	}
	// A recreated container (new ID) starts with fresh counters.
	c.ID = "c2"
	if err := s.PutContainer(ctx, c); err != nil {
		t.Fatal(err)
	}
	cs, _ = s.Containers(ctx, "shop")
	if cs[1].Restarts != 0 || cs[1].ID != "c2" {
		t.Errorf("recreated web = %+v, want 0 restarts", cs[1])
	}
	if err := s.DeleteContainer(ctx, "shop", "shop-web"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteContainer(ctx, "shop", "shop-web"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	// A revision that does not exist is refused by the foreign key.
	if err := s.PutContainer(ctx, Container{Appliance: "shop", Name: "x", Revision: 999}); err == nil {
		t.Error("container with unknown revision accepted")
	}
}

func TestVolumeLegacySurvivesPut(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	rev, _ := s.CreateRevision(ctx, Revision{Appliance: "shop"})
	v := Volume{Appliance: "shop", Key: "data", Name: "shop_data", Services: []string{"db"}}
	if err := s.PutVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	if err := s.MarkVolumeLegacy(ctx, "shop", "shop_data", since, rev); err != nil {
		t.Fatal(err)
	}
	// A reconcile pass re-puts the volume without a legacy mark.
	v.Services = []string{"db", "backup"}
	v.CreatedBy = VolumeAdopted // ignored: kept from the first put
	if err := s.PutVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Volumes(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 {
		t.Fatalf("Volumes = %+v", vs)
	}
	got := vs[0]
	if got.LegacySince == nil || !got.LegacySince.Equal(since) || got.LegacyRevision != rev {
		t.Fatalf("legacy lost by PutVolume: %+v", got)
	}
	if !reflect.DeepEqual(got.Services, []string{"db", "backup"}) || got.CreatedBy != VolumeCreatedByOutpost || got.CreatedAt.IsZero() {
		t.Errorf("volume = %+v", got)
	}
	if err := s.ClearVolumeLegacy(ctx, "shop", "shop_data"); err != nil {
		t.Fatal(err)
	}
	vs, _ = s.Volumes(ctx, "shop")
	if vs[0].LegacySince != nil || vs[0].LegacyRevision != 0 {
		t.Errorf("legacy not cleared: %+v", vs[0])
	}
	if err := s.MarkVolumeLegacy(ctx, "shop", "nope", since, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("MarkVolumeLegacy missing: %v, want ErrNotFound", err)
	}
}

func TestNoVolumeRowLost(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	s := openTest(t, path)
	const n = 20
	for i := 0; i < n; i++ {
		if err := s.PutVolume(ctx, Volume{Appliance: "shop", Key: fmt.Sprint("k", i), Name: fmt.Sprintf("shop_k%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 3 {
		if err := s.RecordVolumeRemoved(ctx, "shop", fmt.Sprintf("shop_k%02d", i), "alice", "prune legacy"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RecordVolumeRemoved(ctx, "shop", "shop_k00", "alice", "again"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing twice: %v, want ErrNotFound", err)
	}
	if err := s.RecordVolumeRemoved(ctx, "shop", "shop_k01", "", ""); err == nil {
		t.Error("removal without who and why accepted")
	}
	// Any other delete is refused by the schema.
	if _, err := s.db.ExecContext(ctx, "DELETE FROM volumes WHERE name = 'shop_k01'"); err == nil {
		t.Error("schema allowed deleting a volume row without an audit record")
	}
	// Re-creating a removed volume and removing it again needs a new audit.
	if err := s.PutVolume(ctx, Volume{Appliance: "shop", Name: "shop_k00"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, "DELETE FROM volumes WHERE name = 'shop_k00'"); err == nil {
		t.Error("an older audit record let a re-created volume be deleted silently")
	}
	if err := s.RecordVolumeRemoved(ctx, "shop", "shop_k00", "bob", "reset"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTest(t, path)
	vs, err := s.Volumes(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := s.VolumeRemovals(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, v := range vs {
		seen[v.Name]++
	}
	for _, r := range rs {
		seen[r.Name]++
		if r.RemovedBy == "" || r.Reason == "" || r.RemovedAt.IsZero() {
			t.Errorf("incomplete audit: %+v", r)
		}
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("shop_k%02d", i)
		if seen[name] == 0 {
			t.Errorf("volume %s is neither in the inventory nor in the removal audit", name)
		}
	}
	if len(vs) != n-7 || len(rs) != 8 {
		t.Errorf("%d volumes and %d removals, want %d and 8", len(vs), len(rs), n-7)
	}
	if last := rs[len(rs)-1]; last.Name != "shop_k00" || last.RemovedBy != "bob" {
		t.Errorf("last removal = %+v", last)
	}
}

func TestNetworks(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	for _, n := range []string{"shop_default", "shop_back", "shop_default"} {
		if err := s.PutNetwork(ctx, "shop", n); err != nil {
			t.Fatal(err)
		}
	}
	ns, err := s.Networks(ctx, "shop")
	if err != nil || !reflect.DeepEqual(ns, []string{"shop_back", "shop_default"}) {
		t.Fatalf("Networks = %v, %v", ns, err)
	}
	if err := s.DeleteNetwork(ctx, "shop", "shop_back"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNetwork(ctx, "shop", "shop_back"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
}

// lowestFree picks the lowest free port from 20000.
func lowestFree(taken map[uint16]bool) (uint16, error) {
	for p := uint16(20000); p < 65535; p++ {
		if !taken[p] {
			return p, nil
		}
	}
	return 0, errors.New("no free port")
}

func TestPortAllocationStableAndUnique(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	s := openTest(t, path)
	type key struct {
		app, svc string
		port     uint16
		proto    string
	}
	keys := []key{{"shop", "web", 80, "tcp"}, {"shop", "web", 443, ""}, {"shop", "dns", 53, "udp"},
		{"blog", "web", 80, "tcp"}, {"blog", "dns", 53, "udp"}}
	first := map[key]uint16{}
	seen := map[string]bool{}
	for _, k := range keys {
		p, err := s.AllocatePort(ctx, k.app, k.svc, k.port, k.proto, lowestFree)
		if err != nil {
			t.Fatal(err)
		}
		proto := k.proto
		if proto == "" {
			proto = "tcp"
		}
		id := fmt.Sprint(p, "/", proto)
		if seen[id] {
			t.Errorf("%v got %s, already allocated", k, id)
		}
		seen[id] = true
		first[k] = p
	}
	s.Close()

	s = openTest(t, path)
	for _, k := range keys {
		p, err := s.AllocatePort(ctx, k.app, k.svc, k.port, k.proto, func(map[uint16]bool) (uint16, error) {
			t.Errorf("pick called for recorded %v", k)
			return 0, errors.New("unexpected")
		})
		if err != nil || p != first[k] {
			t.Errorf("%v after reopen: %d, %v; want %d", k, p, err, first[k])
		}
	}
	ports, err := s.Ports(ctx, "shop")
	if err != nil || len(ports) != 3 {
		t.Fatalf("Ports = %+v, %v", ports, err)
	}
	// pick sees ports of every appliance, and a taken port is refused.
	var sawTaken map[uint16]bool
	_, err = s.AllocatePort(ctx, "wiki", "web", 80, "tcp", func(taken map[uint16]bool) (uint16, error) {
		sawTaken = taken
		return first[keys[0]], nil
	})
	if err == nil {
		t.Error("allocating a taken port succeeded")
	}
	if len(sawTaken) != 3 || !sawTaken[first[keys[3]]] {
		t.Errorf("pick saw %v, want the 3 tcp ports of shop and blog", sawTaken)
	}
	if err := s.ReleasePort(ctx, "blog", "web", 80, "tcp"); err != nil {
		t.Fatal(err)
	}
	if p, err := s.AllocatePort(ctx, "wiki", "web", 80, "tcp", lowestFree); err != nil || p != first[keys[3]] {
		t.Errorf("after release: %d, %v; want the freed %d", p, err, first[keys[3]])
	}
	if _, err := s.AllocatePort(ctx, "wiki", "web", 80, "icmp", lowestFree); err == nil {
		t.Error("unknown protocol accepted")
	}
}

func TestEventsOrdering(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	base := time.Date(2025, 1, 2, 3, 4, 5, 987654321, time.UTC)
	// Added out of time order: Events follows insertion (ID) order.
	ats := []time.Time{base.Add(time.Nanosecond), base, base, base.Add(-time.Hour)}
	for i, at := range ats {
		if err := s.AddEvent(ctx, Event{Appliance: "shop", Service: "web", Kind: "test", Message: fmt.Sprint(i), At: at}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddEvent(ctx, Event{Appliance: "blog", Kind: "test", Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Events(ctx, "shop", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != len(ats) {
		t.Fatalf("%d events, want %d", len(evs), len(ats))
	}
	for i, e := range evs {
		if e.Message != fmt.Sprint(i) || !e.At.Equal(ats[i]) || e.At.Nanosecond() != ats[i].Nanosecond() {
			t.Errorf("event %d = %+v, want message %d at %v", i, e, i, ats[i])
		}
		if i > 0 && e.ID <= evs[i-1].ID {
			t.Errorf("IDs not increasing: %d after %d", e.ID, evs[i-1].ID)
		}
	}
	// Paging with since and limit.
	page, err := s.Events(ctx, "shop", evs[0].ID, 2)
	if err != nil || len(page) != 2 || page[0].ID != evs[1].ID || page[1].ID != evs[2].ID {
		t.Errorf("page = %+v, %v", page, err)
	}
	all, _ := s.Events(ctx, "", 0, 0)
	if len(all) != 2*len(ats) {
		t.Errorf("all appliances: %d events, want %d", len(all), 2*len(ats))
	}
	// Default time is now.
	if all[1].At.IsZero() || time.Since(all[1].At) > time.Minute {
		t.Errorf("default At = %v", all[1].At)
	}
	n, err := s.PruneEvents(ctx, base)
	if err != nil || n != 1 {
		t.Errorf("PruneEvents = %d, %v; want 1", n, err)
	}
}

func TestJournal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	s := openTest(t, path)
	op, err := s.BeginOp(ctx, "shop", "upgrade")
	if err != nil {
		t.Fatal(err)
	}
	done, _ := s.BeginOp(ctx, "shop", "install")
	if err := s.FinishOp(ctx, done, "done"); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		step        int
		name, state string
	}{{1, "load-images", StepStarted}, {1, "load-images", StepDone}, {2, "snapshot", StepStarted}}
	for _, st := range steps {
		if err := s.JournalStep(ctx, op, st.step, st.name, st.state, `{"n":1}`); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.JournalStep(ctx, op, 3, "x", "exploded", ""); err == nil {
		t.Error("unknown state accepted")
	}
	if err := s.JournalStep(ctx, 999, 1, "x", StepStarted, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown op: %v, want ErrNotFound", err)
	}
	if err := s.JournalStep(ctx, done, 1, "x", StepStarted, ""); err == nil {
		t.Error("journaling a finished op accepted")
	}
	s.Close() // as if killed

	s = openTest(t, path)
	ops, err := s.OpenOps(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].ID != op || ops[0].Kind != "upgrade" || len(ops[0].Entries) != 3 {
		t.Fatalf("OpenOps = %+v", ops)
	}
	last := ops[0].Entries[2]
	if last.Step != 2 || last.Name != "snapshot" || last.State != StepStarted || last.Data != `{"n":1}` || last.Op != op {
		t.Errorf("last entry = %+v", last)
	}
	j, err := s.Journal(ctx, op)
	if err != nil || !reflect.DeepEqual(j, ops[0].Entries) {
		t.Errorf("Journal = %+v, %v", j, err)
	}
	if err := s.FinishOp(ctx, op, "rolled_back"); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishOp(ctx, op, "done"); err == nil {
		t.Error("finishing twice accepted")
	}
	if ops, _ := s.OpenOps(ctx, "shop"); len(ops) != 0 {
		t.Errorf("OpenOps after finish = %+v", ops)
	}
}
