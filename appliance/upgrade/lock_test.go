package upgrade

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/outpostdev/outpost/appliance/store"
	"github.com/outpostdev/outpost/appliance/volumes"
)

// TestLockKeepsPruneOut checks that an upgrade holds the volumes lock that
// `volumes prune` takes, and that a prune in progress keeps an upgrade out
// without leaving the upgrade lock behind.
func TestLockKeepsPruneOut(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "outpost.db")
	open := func() *store.Store {
		st, err := store.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	up, other := New(nil, open(), nil, nil), open()

	release, err := up.lock(ctx, "app", "outpost upgrade")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.AcquireLock(ctx, volumes.LockName("app"), "outpost volumes prune"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("prune's lock during an upgrade: %v, want ErrLocked", err)
	}
	release()

	relPrune, err := other.AcquireLock(ctx, volumes.LockName("app"), "outpost volumes prune")
	if err != nil {
		t.Fatalf("prune's lock after the upgrade: %v", err)
	}
	if _, err := up.lock(ctx, "app", "outpost upgrade"); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("upgrade during a prune: %v, want ErrLocked", err)
	}
	// The failed attempt must not keep the upgrade lock.
	relUpgrade, err := other.AcquireLock(ctx, LockName("app"), "outpost upgrade")
	if err != nil {
		t.Fatalf("the upgrade lock after a refused upgrade: %v", err)
	}
	_ = relUpgrade()
	_ = relPrune()
}
