package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Event is something that happened to an appliance, for `outpost events`.
type Event struct {
	// ID is assigned by AddEvent and grows with every event.
	ID int64 `json:"id"`
	// Appliance is the appliance the event concerns.
	Appliance string `json:"appliance"`
	// Service is the service it concerns; empty for the whole appliance.
	Service string `json:"service,omitempty"`
	// Kind is a short dotted word, e.g. "container.restart". Required.
	Kind string `json:"kind"`
	// Message is human-readable detail.
	Message string `json:"message,omitempty"`
	// At defaults to now; stored with nanosecond precision.
	At time.Time `json:"at"`
}

// AddEvent records an event.
func (s *Store) AddEvent(ctx context.Context, e Event) error {
	if e.Kind == "" {
		return errors.New("recording event: kind is required")
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	if _, err := s.db.ExecContext(ctx,
		"INSERT INTO events (appliance, service, kind, message, at) VALUES (?, ?, ?, ?, ?)",
		e.Appliance, e.Service, e.Kind, e.Message, e.At.UnixNano()); err != nil {
		return fmt.Errorf("recording event %s: %w", e.Kind, err)
	}
	return nil
}

// Events returns the appliance's events with an ID above since, oldest first,
// at most limit of them (all when limit <= 0). An empty appliance means every
// appliance. Pass the last ID seen as since to follow the stream.
func (s *Store) Events(ctx context.Context, appliance string, since int64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = -1 // no limit in SQLite
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, appliance, service, kind, message, at FROM events
		WHERE (? = '' OR appliance = ?) AND id > ? ORDER BY id LIMIT ?`,
		appliance, appliance, since, limit)
	if err != nil {
		return nil, fmt.Errorf("listing events of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at int64
		if err := rows.Scan(&e.ID, &e.Appliance, &e.Service, &e.Kind, &e.Message, &at); err != nil {
			return nil, fmt.Errorf("listing events of appliance %q: %w", appliance, err)
		}
		e.At = time.Unix(0, at).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing events of appliance %q: %w", appliance, err)
	}
	return out, nil
}

// PruneEvents deletes events that happened before the given time and reports
// how many it deleted.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, "DELETE FROM events WHERE at < ?", before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("pruning events: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("pruning events: %w", err)
	}
	return n, nil
}

// Journal step states (JournalEntry.State).
const (
	// StepStarted is written before a step's action is attempted.
	StepStarted = "started"
	// StepDone is written once the action has taken effect.
	StepDone = "done"
	// StepFailed is written when the action failed.
	StepFailed = "failed"
	// StepUndone is written once a rollback has reverted the action.
	StepUndone = "undone"
)

// JournalEntry is one state change of one step of an operation. Entries are
// appended, never updated: the latest entry of a step is its current state.
type JournalEntry struct {
	// ID grows with every entry.
	ID int64
	// Op is the operation (BeginOp's ID).
	Op int64
	// Step is the step's position in the operation.
	Step int
	// Name names the step, e.g. "load-images".
	Name string
	// State is StepStarted, StepDone, StepFailed or StepUndone.
	State string
	// Data is what resuming or undoing the step needs (often JSON).
	Data string
	// At is when the entry was written.
	At time.Time
}

// Op is an operation of the journal (an upgrade, migration, bundle load).
type Op struct {
	// ID is assigned by BeginOp.
	ID int64
	// Appliance is the appliance it changes.
	Appliance string
	// Kind says what it is, e.g. "upgrade".
	Kind string
	// Status is FinishOp's status; empty while the operation is open.
	Status string
	// StartedAt is when BeginOp ran; FinishedAt is zero while open.
	StartedAt, FinishedAt time.Time
	// Entries are its journal entries, oldest first.
	Entries []JournalEntry
}

// BeginOp opens an operation of the given kind on the appliance and returns
// its ID.
func (s *Store) BeginOp(ctx context.Context, appliance, kind string) (int64, error) {
	if appliance == "" || kind == "" {
		return 0, fmt.Errorf("beginning operation: appliance and kind are required (got %q, %q)", appliance, kind)
	}
	var id int64
	if err := s.db.QueryRowContext(ctx,
		"INSERT INTO ops (appliance, kind, started_at) VALUES (?, ?, ?) RETURNING id",
		appliance, kind, time.Now().UnixNano()).Scan(&id); err != nil {
		return 0, fmt.Errorf("beginning %s operation on appliance %q: %w", kind, appliance, err)
	}
	return id, nil
}

// JournalStep appends a state of a step to an open operation. Write
// StepStarted (with what undoing needs in data) before acting, and StepDone
// after. ErrNotFound when the operation does not exist; an error when it is
// finished.
func (s *Store) JournalStep(ctx context.Context, op int64, step int, name, state, data string) error {
	what := fmt.Sprintf("journaling step %d (%s) %s of operation %d", step, name, state, op)
	switch state {
	case StepStarted, StepDone, StepFailed, StepUndone:
	default:
		return fmt.Errorf("%s: unknown state %q", what, state)
	}
	return s.inTx(ctx, what, func(tx *sql.Tx) error {
		if err := checkOpOpen(ctx, tx, op); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			"INSERT INTO journal (op_id, step, name, state, data, at) VALUES (?, ?, ?, ?, ?, ?)",
			op, step, name, state, data, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("inserting: %w", err)
		}
		return nil
	})
}

func checkOpOpen(ctx context.Context, tx *sql.Tx, op int64) error {
	var status sql.NullString
	err := tx.QueryRowContext(ctx, "SELECT status FROM ops WHERE id = ?", op).Scan(&status)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("operation %d: %w", op, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("reading operation %d: %w", op, err)
	}
	if status.Valid {
		return fmt.Errorf("operation %d already finished (%s)", op, status.String)
	}
	return nil
}

// FinishOp closes an operation with a status such as "done", "failed" or
// "rolled_back". ErrNotFound when it does not exist; an error when it is
// already finished.
func (s *Store) FinishOp(ctx context.Context, op int64, status string) error {
	what := fmt.Sprintf("finishing operation %d as %q", op, status)
	if status == "" {
		return fmt.Errorf("%s: status is required", what)
	}
	return s.inTx(ctx, what, func(tx *sql.Tx) error {
		if err := checkOpOpen(ctx, tx, op); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE ops SET status = ?, finished_at = ? WHERE id = ?",
			status, time.Now().UnixNano(), op); err != nil {
			return fmt.Errorf("updating: %w", err)
		}
		return nil
	})
}

// OpenOps returns the appliance's unfinished operations, oldest first, with
// their journal entries: after a crash, these are what to resume or undo.
func (s *Store) OpenOps(ctx context.Context, appliance string) ([]Op, error) {
	// One statement, so operations and entries come from one snapshot.
	rows, err := s.db.QueryContext(ctx, `SELECT o.id, o.appliance, o.kind, o.started_at,
			j.id, j.step, j.name, j.state, j.data, j.at
		FROM ops o LEFT JOIN journal j ON j.op_id = o.id
		WHERE o.appliance = ? AND o.finished_at IS NULL ORDER BY o.id, j.id`, appliance)
	if err != nil {
		return nil, fmt.Errorf("listing open operations of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var ops []Op
	for rows.Next() {
		var o Op
		var started int64
		var id, step, at sql.NullInt64
		var name, state, data sql.NullString
		if err := rows.Scan(&o.ID, &o.Appliance, &o.Kind, &started, &id, &step, &name, &state, &data, &at); err != nil {
			return nil, fmt.Errorf("listing open operations of appliance %q: %w", appliance, err)
		}
		if len(ops) == 0 || ops[len(ops)-1].ID != o.ID {
			o.StartedAt = time.Unix(0, started).UTC()
			ops = append(ops, o)
		}
		if id.Valid {
			last := &ops[len(ops)-1]
			last.Entries = append(last.Entries, JournalEntry{ID: id.Int64, Op: o.ID, Step: int(step.Int64),
				Name: name.String, State: state.String, Data: data.String, At: fromNanos(at)})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing open operations of appliance %q: %w", appliance, err)
	}
	return ops, nil
}

// Journal returns the entries of an operation, oldest first.
func (s *Store) Journal(ctx context.Context, op int64) ([]JournalEntry, error) {
	rows, err := s.db.QueryContext(ctx,
		"SELECT id, op_id, step, name, state, data, at FROM journal WHERE op_id = ? ORDER BY id", op)
	if err != nil {
		return nil, fmt.Errorf("reading journal of operation %d: %w", op, err)
	}
	defer rows.Close()
	var out []JournalEntry
	for rows.Next() {
		var e JournalEntry
		var at int64
		if err := rows.Scan(&e.ID, &e.Op, &e.Step, &e.Name, &e.State, &e.Data, &at); err != nil {
			return nil, fmt.Errorf("reading journal of operation %d: %w", op, err)
		}
		e.At = time.Unix(0, at).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading journal of operation %d: %w", op, err)
	}
	return out, nil
}

// Get returns the value of a meta key, or ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, "SELECT value FROM meta WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("reading setting %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("reading setting %q: %w", key, err)
	}
	return v, nil
}

// Set stores the value of a meta key, replacing any previous one.
func (s *Store) Set(ctx context.Context, key, value string) error {
	if key == "" {
		return errors.New("storing setting: empty key")
	}
	if _, err := s.db.ExecContext(ctx,
		"INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
		key, value); err != nil {
		return fmt.Errorf("storing setting %q: %w", key, err)
	}
	return nil
}
