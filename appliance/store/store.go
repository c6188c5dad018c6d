// Package store owns Outpost's state database: one SQLite file (pure-Go
// modernc.org/sqlite, no cgo) holding revisions, the inventory of containers,
// volumes and networks, port allocations, events, the operation journal, small
// settings and the writer lock. It applies the numbered schema migrations
// embedded in the binary and exposes typed methods; it is the only package
// that imports database/sql or the SQLite driver, and nothing outside it
// writes SQL.
//
// It must not talk to the container engine or decide anything: it records
// what the runtime tells it, atomically. Every multi-row change runs in one
// transaction, so the process may be killed at any moment without leaving a
// half-written state.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound is returned (wrapped) when the requested row does not exist.
var ErrNotFound = errors.New("not found")

// ErrSchemaTooNew is returned (wrapped) by Open when the database was written
// by a newer Outpost whose schema this binary does not know.
var ErrSchemaTooNew = errors.New("state database was written by a newer outpost")

// BusyTimeout is how long a statement waits for another connection or process
// holding the database's write lock before failing with SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// applicationID marks the file as an Outpost state database ("OUTP") in the
// SQLite header, so Open refuses some other program's database.
const applicationID = 0x4f555450

//go:embed migrations/*.sql
var migrationFS embed.FS

// Store is an open state database. It is safe for concurrent use by many
// goroutines, and several Stores (in one or several processes) may share a
// file: writers queue behind SQLite's lock for up to BusyTimeout.
type Store struct {
	db   *sql.DB
	path string
	log  *slog.Logger

	mu    sync.Mutex
	locks map[string]string // writer locks held through this Store: name -> token
}

// Option configures Open.
type Option func(*options)

type options struct {
	logger *slog.Logger
}

// WithLogger sets the logger the Store reports unusual but non-fatal events
// to, such as taking over a writer lock left by a dead process. The default
// discards them.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// Open opens (creating if needed) the state database at path and brings its
// schema up to date. The parent directory is created 0700 and the file 0600:
// the state names secrets and volumes, so only the owner may read it.
//
// Connections use WAL (readers never block the writer), foreign keys,
// a BusyTimeout wait for locks, and synchronous=FULL: the operation journal
// is written before the step it announces is done, so a committed entry must
// survive a power cut, not only a killed process (NORMAL in WAL mode may lose
// the last commits on power loss). Outpost writes a few rows per second at
// most, so the extra fsync per commit costs nothing noticeable.
//
// Open refuses a database written by a newer Outpost (ErrSchemaTooNew).
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	o := options{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		opt(&o)
	}
	if path == "" {
		return nil, errors.New("opening state database: empty path")
	}
	// The driver treats everything after '?' as connection parameters.
	if strings.Contains(path, "?") {
		return nil, fmt.Errorf("opening state database %s: path must not contain '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening state database %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	// Create the file ourselves so it gets 0600 from the start; SQLite gives
	// the -wal and -shm files the same mode as the database.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating state database: %w", err)
	}
	fi, err := f.Stat()
	if err == nil && fi.Mode().Perm()&0o077 != 0 {
		err = f.Chmod(0o600)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("restricting state database permissions: %w", err)
	}

	// _txlock=immediate: every transaction takes the write lock at BEGIN, so
	// two writers queue on the busy timeout instead of one failing with
	// SQLITE_BUSY when it upgrades a read lock. Reads outside transactions
	// are not affected.
	dsn := abs + "?" + strings.Join([]string{
		"_pragma=busy_timeout(" + strconv.FormatInt(BusyTimeout.Milliseconds(), 10) + ")",
		"_pragma=journal_mode(WAL)",
		"_pragma=foreign_keys(1)",
		"_pragma=synchronous(FULL)",
		"_txlock=immediate",
	}, "&")
	// Two processes opening a brand-new file at once race to switch it to
	// WAL; SQLite answers the loser SQLITE_BUSY at once, without its busy
	// handler, so the first open retries for up to BusyTimeout.
	deadline := time.Now().Add(BusyTimeout)
	for {
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			return nil, fmt.Errorf("opening state database %s: %w", abs, err)
		}
		s := &Store{db: db, path: abs, log: o.logger, locks: map[string]string{}}
		err = s.init(ctx)
		if err == nil {
			return s, nil
		}
		db.Close()
		if !isBusy(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("opening state database %s: %w", abs, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("opening state database %s: %w", abs, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// isBusy reports whether err is SQLite's "database is locked".
func isBusy(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SQLITE_BUSY") || strings.Contains(msg, "database is locked")
}

func (s *Store) init(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("reading journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not WAL; keep the state directory on a local filesystem", mode)
	}
	var appID int64
	if err := s.db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return fmt.Errorf("reading application id: %w", err)
	}
	if appID != 0 && appID != applicationID {
		return fmt.Errorf("not an outpost state database (application id %#x); move it away or choose another state directory", appID)
	}
	return migrate(ctx, s.db, migrationFS)
}

// Close releases the writer locks still held through this Store and closes
// the database.
func (s *Store) Close() error {
	s.mu.Lock()
	held := s.locks
	s.locks = map[string]string{}
	s.mu.Unlock()
	var errs []error
	for name, token := range held {
		if _, err := s.db.Exec("DELETE FROM locks WHERE name = ? AND token = ?", name, token); err != nil {
			errs = append(errs, fmt.Errorf("releasing lock %q: %w", name, err))
		}
	}
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing state database: %w", err))
	}
	return errors.Join(errs...)
}

// Path is the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// SchemaVersion reports the highest migration applied to the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	v, err := schemaVersion(ctx, s.db)
	if err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}

// LatestSchemaVersion is the schema version this binary migrates databases to.
func LatestSchemaVersion() int {
	ms, err := loadMigrations(migrationFS)
	if err != nil {
		// The embedded set is checked by the tests; a broken one cannot ship.
		panic(err)
	}
	return len(ms)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q queryer) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v)
	return v, err
}

type migration struct {
	version int
	name    string
	sql     string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// loadMigrations reads migrations/NNNN_name.sql from fsys and checks they are
// numbered 1, 2, 3... without gaps.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			return nil, fmt.Errorf("embedded migration %q is not named NNNN_name.sql", e.Name())
		}
		body, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("reading embedded migration %s: %w", e.Name(), err)
		}
		v, _ := strconv.Atoi(m[1])
		ms = append(ms, migration{version: v, name: m[2], sql: string(body)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("embedded migrations are not numbered 1..%d: found %04d at position %d", len(ms), m.version, i+1)
		}
	}
	return ms, nil
}

// migrate applies the pending migrations of fsys, each in its own
// transaction together with its schema_migrations row, so a kill leaves the
// database at a whole version. Each transaction re-reads the version under the
// write lock, so processes opening the file at once do not race.
func migrate(ctx context.Context, db *sql.DB, fsys fs.FS) error {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return err
	}
	for {
		done, err := migrateOne(ctx, db, ms)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

func migrateOne(ctx context.Context, db *sql.DB, ms []migration) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("migrating schema: beginning transaction: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL)`); err != nil {
		return false, fmt.Errorf("creating schema_migrations: %w", err)
	}
	cur, err := schemaVersion(ctx, tx)
	if err != nil {
		return false, fmt.Errorf("reading schema version: %w", err)
	}
	if cur > len(ms) {
		return false, fmt.Errorf("%w (schema %d > %d); upgrade outpost", ErrSchemaTooNew, cur, len(ms))
	}
	if cur > 0 {
		// Migrations are immutable once released; a different name at a
		// known version means this binary and the database disagree on
		// what the schema is.
		var name string
		if err := tx.QueryRowContext(ctx, "SELECT name FROM schema_migrations WHERE version = ?", cur).Scan(&name); err != nil {
			return false, fmt.Errorf("reading schema migration %d: %w", cur, err)
		}
		if want := ms[cur-1].name; name != want {
			return false, fmt.Errorf("schema migration %d is %q in the database but %q in this outpost; use the outpost build that wrote it", cur, name, want)
		}
	}
	if cur == len(ms) {
		return true, tx.Commit()
	}
	m := ms[cur]
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("applying schema migration %04d_%s: %w", m.version, m.name, err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		m.version, m.name, time.Now().UnixNano()); err != nil {
		return false, fmt.Errorf("recording schema migration %04d_%s: %w", m.version, m.name, err)
	}
	if cur == 0 {
		if _, err := tx.ExecContext(ctx, "PRAGMA application_id = "+strconv.Itoa(applicationID)); err != nil {
			return false, fmt.Errorf("setting application id: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("committing schema migration %04d_%s: %w", m.version, m.name, err)
	}
	return false, nil
}

// inTx runs fn in one write transaction and wraps any error with step.
func (s *Store) inTx(ctx context.Context, step string, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: beginning transaction: %w", step, err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: committing: %w", step, err)
	}
	return nil
}

// nanos stores a time as Unix nanoseconds; the zero time is NULL.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos; times come back in UTC.
func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// nullID stores a reference to a row; 0 (none) is NULL.
func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// notFoundIfNone turns "no row changed" into ErrNotFound.
func notFoundIfNone(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}
