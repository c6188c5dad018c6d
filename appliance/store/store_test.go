package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

func openTest(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newTest(t *testing.T) *Store {
	t.Helper()
	return openTest(t, filepath.Join(t.TempDir(), "state", "outpost.db"))
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "outpost.db")
	s := openTest(t, path)
	if err := s.Set(context.Background(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + "-wal": 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	var mode, fk, sync string
	ctx := context.Background()
	s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
	s.db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk)
	s.db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync)
	if mode != "wal" || fk != "1" || sync != "2" {
		t.Errorf("journal_mode=%s foreign_keys=%s synchronous=%s, want wal 1 2", mode, fk, sync)
	}
}

func TestOpenTightensExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "outpost.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	openTest(t, path)
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", fi.Mode().Perm())
	}
}

func TestMigrationsIdempotentOnReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	for i := 0; i < 3; i++ {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		v, err := s.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v != LatestSchemaVersion() || v < 1 {
			t.Errorf("open %d: schema version %d, want %d", i, v, LatestSchemaVersion())
		}
		var n int
		s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&n)
		if n != LatestSchemaVersion() {
			t.Errorf("open %d: %d migration rows, want %d", i, n, LatestSchemaVersion())
		}
		if err := s.Set(ctx, "opened", "yes"); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

func TestMigrateAppliesNewAndRollsBackFailed(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	base, err := loadMigrations(migrationFS)
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	for _, m := range base {
		fsys[migrationFile(m.version, m.name)] = &fstest.MapFile{Data: []byte(m.sql)}
	}
	next := len(base) + 1
	// A failing migration must leave nothing behind: its first statement is
	// rolled back with the second.
	fsys[migrationFile(next, "broken")] = &fstest.MapFile{Data: []byte(
		"CREATE TABLE extra (x INTEGER); INSERT INTO no_such_table VALUES (1);")}
	if err := migrate(ctx, s.db, fsys); err == nil || !strings.Contains(err.Error(), "broken") {
		t.Fatalf("migrate with a broken migration: %v, want an error naming it", err)
	}
	if v, _ := s.SchemaVersion(ctx); v != len(base) {
		t.Fatalf("schema version %d after failed migration, want %d", v, len(base))
	}
	var n int
	s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'extra'").Scan(&n)
	if n != 0 {
		t.Fatal("failed migration left table extra behind")
	}

	delete(fsys, migrationFile(next, "broken"))
	fsys[migrationFile(next, "extra")] = &fstest.MapFile{Data: []byte("CREATE TABLE extra (x INTEGER);")}
	if err := migrate(ctx, s.db, fsys); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.SchemaVersion(ctx); v != next {
		t.Fatalf("schema version %d, want %d", v, next)
	}
	if _, err := s.db.ExecContext(ctx, "INSERT INTO extra VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	// The binary's own (older) set now refuses the database.
	if err := migrate(ctx, s.db, migrationFS); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("older binary: %v, want ErrSchemaTooNew", err)
	}
}

func migrationFile(v int, name string) string {
	return fmt.Sprintf("migrations/%04d_%s.sql", v, name)
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "outpost.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	newer := LatestSchemaVersion() + 1
	if _, err := s.db.ExecContext(ctx, "INSERT INTO schema_migrations VALUES (?, 'future', 0)", newer); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err = Open(ctx, path)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open: %v, want ErrSchemaTooNew", err)
	}
	want := fmt.Sprintf("state database was written by a newer outpost (schema %d > %d); upgrade outpost", newer, LatestSchemaVersion())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestRefusesForeignDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "other.db")
	s := openTest(t, path)
	s.db.ExecContext(ctx, "PRAGMA application_id = 42")
	s.Close()
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "not an outpost state database") {
		t.Fatalf("Open: %v, want refusal", err)
	}
}

func TestEmbeddedMigrationsNumbered(t *testing.T) {
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].name != "init" {
		t.Fatalf("migrations %v, want 0001_init first", ms)
	}
}

func TestMeta(t *testing.T) {
	ctx := context.Background()
	s := newTest(t)
	if _, err := s.Get(ctx, "install-id"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v, want ErrNotFound", err)
	}
	for _, v := range []string{"a", "b"} {
		if err := s.Set(ctx, "install-id", v); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "install-id"); err != nil || got != v {
			t.Fatalf("Get = %q, %v; want %q", got, err, v)
		}
	}
}

// Many processes' worth of handles opening one brand-new file at once all
// succeed (the WAL switch race answers SQLITE_BUSY without a busy handler).
func TestConcurrentFirstOpen(t *testing.T) {
	for round := 0; round < 5; round++ {
		path := filepath.Join(t.TempDir(), "outpost.db")
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := Open(context.Background(), path)
				if err != nil {
					errs <- err
					return
				}
				errs <- s.Close()
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
}
