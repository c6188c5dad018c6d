package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// BackupStatus is where a snapshot is in its life.
type BackupStatus string

// Backup statuses: a snapshot is running until it is complete (its manifest
// is written) or failed; pruning a complete one marks it pruned.
const (
	BackupRunning  BackupStatus = "running"
	BackupComplete BackupStatus = "complete"
	BackupFailed   BackupStatus = "failed"
	BackupPruned   BackupStatus = "pruned"
)

// Backup is the record of one snapshot. The snapshot's own manifest is the
// authority on its content; the record says where it is and what happened.
type Backup struct {
	// ID is assigned by StartBackup.
	ID int64 `json:"id"`
	// Appliance is the appliance name. Required.
	Appliance string `json:"appliance"`
	// Name is the snapshot's name (its directory's base name). Required.
	Name string `json:"name"`
	// Path is the snapshot directory's absolute path. Required.
	Path string `json:"path"`
	// Revision is the revision the snapshot holds.
	Revision int64 `json:"revision"`
	// Trigger says what asked for it: "manual" (default), "schedule",
	// "upgrade".
	Trigger string `json:"trigger"`
	// Status defaults to BackupRunning.
	Status BackupStatus `json:"status"`
	// Size is the total size in bytes of the snapshot's files.
	Size int64 `json:"size"`
	// StartedAt defaults to now.
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// VerifiedAt is when its checksums were last verified; zero if never.
	VerifiedAt time.Time `json:"verified_at,omitzero"`
	// Error says why a failed snapshot failed.
	Error string `json:"error,omitempty"`
}

func (st BackupStatus) valid() bool {
	switch st {
	case BackupRunning, BackupComplete, BackupFailed, BackupPruned:
		return true
	}
	return false
}

// StartBackup records a snapshot being made and returns its ID.
func (s *Store) StartBackup(ctx context.Context, b Backup) (int64, error) {
	step := fmt.Sprintf("recording backup %q", b.Name)
	if b.Appliance == "" || b.Name == "" || b.Path == "" {
		return 0, fmt.Errorf("%s: appliance, name and path are required", step)
	}
	if b.Status == "" {
		b.Status = BackupRunning
	}
	if !b.Status.valid() {
		return 0, fmt.Errorf("%s: unknown status %q", step, b.Status)
	}
	if b.Trigger == "" {
		b.Trigger = "manual"
	}
	if b.StartedAt.IsZero() {
		b.StartedAt = time.Now()
	}
	var id int64
	err := s.inTx(ctx, step, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO backups
			(appliance, name, path, revision_id, trigger, status, size, started_at, finished_at, verified_at, error)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			b.Appliance, b.Name, b.Path, b.Revision, b.Trigger, string(b.Status), b.Size,
			nanos(b.StartedAt), nanos(b.FinishedAt), nanos(b.VerifiedAt), b.Error).Scan(&id)
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

// FinishBackup records the outcome of snapshot id: its status (complete or
// failed), total size and, for a failure, the error.
func (s *Store) FinishBackup(ctx context.Context, id int64, status BackupStatus, size int64, errMsg string) error {
	step := fmt.Sprintf("finishing backup %d", id)
	if status != BackupComplete && status != BackupFailed {
		return fmt.Errorf("%s: status must be complete or failed, not %q", step, status)
	}
	return s.inTx(ctx, step, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE backups SET status = ?, size = ?, error = ?, finished_at = ? WHERE id = ?",
			string(status), size, errMsg, time.Now().UnixNano(), id)
		if err != nil {
			return err
		}
		return notFoundIfNone(res, fmt.Sprintf("backup %d", id))
	})
}

// SetBackupVerified records that the snapshot at path had every checksum
// verified at the given time. ErrNotFound when no record has that path.
func (s *Store) SetBackupVerified(ctx context.Context, path string, at time.Time) error {
	return s.inTx(ctx, "recording verification of backup "+path, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE backups SET verified_at = ? WHERE path = ? AND status = 'complete'", at.UnixNano(), path)
		if err != nil {
			return err
		}
		return notFoundIfNone(res, "backup "+path)
	})
}

// SetBackupPruned records that the snapshot at path was deleted by
// retention. Snapshots without a record are not an error.
func (s *Store) SetBackupPruned(ctx context.Context, path string) error {
	return s.inTx(ctx, "recording pruning of backup "+path, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE backups SET status = 'pruned' WHERE path = ? AND status = 'complete'", path)
		return err
	})
}

const backupColumns = `id, appliance, name, path, revision_id, trigger, status, size, started_at, finished_at, verified_at, error`

func scanBackup(sc scanner) (Backup, error) {
	var b Backup
	var status string
	var started, finished, verified sql.NullInt64
	if err := sc.Scan(&b.ID, &b.Appliance, &b.Name, &b.Path, &b.Revision, &b.Trigger, &status, &b.Size,
		&started, &finished, &verified, &b.Error); err != nil {
		return Backup{}, err
	}
	b.Status = BackupStatus(status)
	b.StartedAt, b.FinishedAt, b.VerifiedAt = fromNanos(started), fromNanos(finished), fromNanos(verified)
	return b, nil
}

// Backups returns the appliance's backup records, newest first; all
// appliances' when appliance is empty.
func (s *Store) Backups(ctx context.Context, appliance string) ([]Backup, error) {
	q := "SELECT " + backupColumns + " FROM backups"
	var args []any
	if appliance != "" {
		q += " WHERE appliance = ?"
		args = append(args, appliance)
	}
	rows, err := s.db.QueryContext(ctx, q+" ORDER BY id DESC", args...)
	if err != nil {
		return nil, fmt.Errorf("listing backups: %w", err)
	}
	defer rows.Close()
	var out []Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, fmt.Errorf("listing backups: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing backups: %w", err)
	}
	return out, nil
}

// LastBackup returns the appliance's newest backup record with the given
// status, or ErrNotFound.
func (s *Store) LastBackup(ctx context.Context, appliance string, status BackupStatus) (Backup, error) {
	b, err := scanBackup(s.db.QueryRowContext(ctx,
		"SELECT "+backupColumns+" FROM backups WHERE appliance = ? AND status = ? ORDER BY id DESC LIMIT 1",
		appliance, string(status)))
	if errors.Is(err, sql.ErrNoRows) {
		return Backup{}, fmt.Errorf("reading the last %s backup of %q: %w", status, appliance, ErrNotFound)
	}
	if err != nil {
		return Backup{}, fmt.Errorf("reading the last %s backup of %q: %w", status, appliance, err)
	}
	return b, nil
}
