package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// RevisionStatus is where a revision is in its life.
type RevisionStatus string

// Revision statuses. A revision starts pending, is applying while Outpost
// converges to it, and ends active or failed; an active revision becomes
// superseded when another turns active, or rolled_back when it is undone.
const (
	RevisionPending    RevisionStatus = "pending"
	RevisionApplying   RevisionStatus = "applying"
	RevisionActive     RevisionStatus = "active"
	RevisionFailed     RevisionStatus = "failed"
	RevisionSuperseded RevisionStatus = "superseded"
	RevisionRolledBack RevisionStatus = "rolled_back"
)

// revisionTransitions lists, for each status, the statuses SetRevisionStatus
// may move it to. Setting the current status again is always allowed (a
// resumed operation repeats its last step). Nothing returns to pending;
// failed, superseded and rolled_back revisions are applied again (rollback,
// retry) through applying, or made active directly. An applying revision
// that was active before returns to superseded when the operation that
// applied it again is rolled back.
var revisionTransitions = map[RevisionStatus][]RevisionStatus{
	RevisionPending:    {RevisionApplying, RevisionActive, RevisionFailed},
	RevisionApplying:   {RevisionActive, RevisionFailed, RevisionRolledBack, RevisionSuperseded},
	RevisionActive:     {RevisionSuperseded, RevisionRolledBack},
	RevisionFailed:     {RevisionApplying},
	RevisionSuperseded: {RevisionApplying, RevisionActive, RevisionRolledBack},
	RevisionRolledBack: {RevisionApplying, RevisionActive},
}

// Valid reports whether st is one of the known statuses.
func (st RevisionStatus) Valid() bool {
	_, ok := revisionTransitions[st]
	return ok
}

// ErrInvalidTransition is returned (wrapped) by SetRevisionStatus when a
// revision may not move from its current status to the requested one.
var ErrInvalidTransition = errors.New("invalid revision status transition")

// Revision is one recorded definition of an appliance.
type Revision struct {
	// ID is assigned by CreateRevision; never reused.
	ID int64
	// Appliance is the appliance name. Required.
	Appliance string
	// Version is the vendor's version string of the definition.
	Version string
	// Spec is the resolved definition as JSON; empty is stored as NULL.
	Spec []byte
	// SpecHash identifies Spec; CreateRevision fills "sha256:<hex>" of Spec
	// when empty.
	SpecHash string
	// Images maps each service to the image ID or digest it runs.
	Images map[string]string
	// Status defaults to RevisionPending.
	Status RevisionStatus
	// CreatedAt defaults to now.
	CreatedAt time.Time
	// AppliedAt is when the revision last became active; zero if never.
	AppliedAt time.Time
	// Note is free text (who asked, why).
	Note string
}

// CreateRevision records a new revision and returns its ID. A revision created
// active supersedes the appliance's active one, in the same transaction.
func (s *Store) CreateRevision(ctx context.Context, r Revision) (int64, error) {
	step := fmt.Sprintf("creating revision of appliance %q", r.Appliance)
	if r.Appliance == "" {
		return 0, fmt.Errorf("creating revision: appliance name is empty")
	}
	if r.Status == "" {
		r.Status = RevisionPending
	}
	if !r.Status.Valid() {
		return 0, fmt.Errorf("%s: unknown status %q", step, r.Status)
	}
	var spec any
	if len(r.Spec) > 0 {
		if !json.Valid(r.Spec) {
			return 0, fmt.Errorf("%s: spec is not valid JSON", step)
		}
		spec = string(r.Spec)
		if r.SpecHash == "" {
			sum := sha256.Sum256(r.Spec)
			r.SpecHash = "sha256:" + hex.EncodeToString(sum[:])
		}
	}
	now := time.Now()
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now
	}
	if r.Status == RevisionActive && r.AppliedAt.IsZero() {
		r.AppliedAt = now
	}
	var id int64
	err := s.inTx(ctx, step, func(tx *sql.Tx) error {
		if r.Status == RevisionActive {
			if err := supersedeActive(ctx, tx, r.Appliance, 0); err != nil {
				return err
			}
		}
		err := tx.QueryRowContext(ctx, `INSERT INTO revisions
			(appliance, version, spec, spec_hash, status, created_at, applied_at, note)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			r.Appliance, r.Version, spec, r.SpecHash, string(r.Status),
			nanos(r.CreatedAt), nanos(r.AppliedAt), r.Note).Scan(&id)
		if err != nil {
			return fmt.Errorf("inserting: %w", err)
		}
		for svc, img := range r.Images {
			if _, err := tx.ExecContext(ctx,
				"INSERT INTO revision_images (revision_id, service, image) VALUES (?, ?, ?)",
				id, svc, img); err != nil {
				return fmt.Errorf("recording image of service %q: %w", svc, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

func supersedeActive(ctx context.Context, tx *sql.Tx, appliance string, except int64) error {
	if _, err := tx.ExecContext(ctx,
		"UPDATE revisions SET status = 'superseded' WHERE appliance = ? AND status = 'active' AND id <> ?",
		appliance, except); err != nil {
		return fmt.Errorf("superseding the active revision: %w", err)
	}
	return nil
}

// SetRevisionStatus moves revision id to status. Making a revision active
// marks the appliance's previously active revision superseded and sets
// AppliedAt, in one transaction. Transitions not listed for the current
// status fail with ErrInvalidTransition; setting the current status again
// changes nothing.
func (s *Store) SetRevisionStatus(ctx context.Context, id int64, status RevisionStatus) error {
	step := fmt.Sprintf("setting revision %d %s", id, status)
	if !status.Valid() {
		return fmt.Errorf("%s: unknown status %q", step, status)
	}
	return s.inTx(ctx, step, func(tx *sql.Tx) error {
		var appliance string
		var cur RevisionStatus
		err := tx.QueryRowContext(ctx, "SELECT appliance, status FROM revisions WHERE id = ?", id).Scan(&appliance, &cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("revision %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading revision: %w", err)
		}
		if cur == status {
			return nil
		}
		if !slices.Contains(revisionTransitions[cur], status) {
			return fmt.Errorf("revision is %s, which may become only %v: %w", cur, revisionTransitions[cur], ErrInvalidTransition)
		}
		if status == RevisionActive {
			if err := supersedeActive(ctx, tx, appliance, id); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, "UPDATE revisions SET status = ?, applied_at = ? WHERE id = ?",
				string(status), time.Now().UnixNano(), id)
		} else {
			_, err = tx.ExecContext(ctx, "UPDATE revisions SET status = ? WHERE id = ?", string(status), id)
		}
		if err != nil {
			return fmt.Errorf("updating: %w", err)
		}
		return nil
	})
}

const revisionColumns = `r.id, r.appliance, r.version, r.spec, r.spec_hash,
	(SELECT json_group_object(service, image) FROM revision_images WHERE revision_id = r.id),
	r.status, r.created_at, r.applied_at, r.note`

type scanner interface {
	Scan(dest ...any) error
}

func scanRevision(sc scanner) (Revision, error) {
	var r Revision
	var images string
	var status string
	var created, applied sql.NullInt64
	if err := sc.Scan(&r.ID, &r.Appliance, &r.Version, &r.Spec, &r.SpecHash, &images,
		&status, &created, &applied, &r.Note); err != nil {
		return Revision{}, err
	}
	r.Status = RevisionStatus(status)
	r.CreatedAt = fromNanos(created)
	r.AppliedAt = fromNanos(applied)
	if err := json.Unmarshal([]byte(images), &r.Images); err != nil {
		return Revision{}, fmt.Errorf("decoding images of revision %d: %w", r.ID, err)
	}
	if len(r.Images) == 0 {
		r.Images = nil
	}
	return r, nil
}

// Revision returns the revision with the given ID.
func (s *Store) Revision(ctx context.Context, id int64) (Revision, error) {
	r, err := scanRevision(s.db.QueryRowContext(ctx, "SELECT "+revisionColumns+" FROM revisions r WHERE r.id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Revision{}, fmt.Errorf("reading revision %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Revision{}, fmt.Errorf("reading revision %d: %w", id, err)
	}
	return r, nil
}

// ActiveRevision returns the appliance's active revision, or ErrNotFound.
func (s *Store) ActiveRevision(ctx context.Context, appliance string) (Revision, error) {
	r, err := scanRevision(s.db.QueryRowContext(ctx,
		"SELECT "+revisionColumns+" FROM revisions r WHERE r.appliance = ? AND r.status = 'active'", appliance))
	if errors.Is(err, sql.ErrNoRows) {
		return Revision{}, fmt.Errorf("reading active revision of appliance %q: %w", appliance, ErrNotFound)
	}
	if err != nil {
		return Revision{}, fmt.Errorf("reading active revision of appliance %q: %w", appliance, err)
	}
	return r, nil
}

// Revisions returns the appliance's revisions, newest first.
func (s *Store) Revisions(ctx context.Context, appliance string) ([]Revision, error) {
	rows, err := s.db.QueryContext(ctx,
		"SELECT "+revisionColumns+" FROM revisions r WHERE r.appliance = ? ORDER BY r.id DESC", appliance)
	if err != nil {
		return nil, fmt.Errorf("listing revisions of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var out []Revision
	for rows.Next() {
		r, err := scanRevision(rows)
		if err != nil {
			return nil, fmt.Errorf("listing revisions of appliance %q: %w", appliance, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing revisions of appliance %q: %w", appliance, err)
	}
	return out, nil
}
