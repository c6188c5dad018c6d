package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Container is a container Outpost created, as recorded in the inventory.
type Container struct {
	// Appliance and Name (the Podman container name) identify the row.
	Appliance string
	// Service is the Compose service (or job) the container runs.
	Service string
	// Name is the Podman container name, e.g. "<appliance>-<service>".
	Name string
	// ID is the Podman container ID.
	ID string
	// ConfigHash is the plan's hash of the configuration it was created from.
	ConfigHash string
	// Image is the image ID or digest it was created from.
	Image string
	// Revision is the revision it belongs to; 0 for none.
	Revision int64
	// Job is true for one-shot job containers.
	Job bool
	// CreatedAt and StartedAt are zero when unknown.
	CreatedAt, StartedAt time.Time
	// Restarts counts the restarts recorded by RecordRestart.
	Restarts int
	// LastExitCode is the exit code before the last restart.
	LastExitCode int
}

// PutContainer inserts or replaces the inventory row of c (keyed by Appliance
// and Name). Restarts and LastExitCode belong to RecordRestart: they are taken
// from c when the row is new or c.ID names a different container, and kept
// otherwise, so a reconcile pass cannot erase a restart recorded meanwhile.
func (s *Store) PutContainer(ctx context.Context, c Container) error {
	if c.Appliance == "" || c.Name == "" {
		return fmt.Errorf("recording container: appliance and name are required (got %q, %q)", c.Appliance, c.Name)
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO containers
		(appliance, name, service, container_id, config_hash, image, revision_id, job,
		 created_at, started_at, restarts, last_exit_code)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (appliance, name) DO UPDATE SET
			service = excluded.service,
			container_id = excluded.container_id,
			config_hash = excluded.config_hash,
			image = excluded.image,
			revision_id = excluded.revision_id,
			job = excluded.job,
			created_at = excluded.created_at,
			started_at = excluded.started_at,
			restarts = CASE WHEN containers.container_id = excluded.container_id
				THEN containers.restarts ELSE excluded.restarts END,
			last_exit_code = CASE WHEN containers.container_id = excluded.container_id
				THEN containers.last_exit_code ELSE excluded.last_exit_code END`,
		c.Appliance, c.Name, c.Service, c.ID, c.ConfigHash, c.Image, nullID(c.Revision), boolInt(c.Job),
		nanos(c.CreatedAt), nanos(c.StartedAt), c.Restarts, c.LastExitCode)
	if err != nil {
		return fmt.Errorf("recording container %s: %w", c.Name, err)
	}
	return nil
}

// Containers lists the appliance's containers by name.
func (s *Store) Containers(ctx context.Context, appliance string) ([]Container, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT appliance, name, service, container_id, config_hash, image,
		revision_id, job, created_at, started_at, restarts, last_exit_code
		FROM containers WHERE appliance = ? ORDER BY name`, appliance)
	if err != nil {
		return nil, fmt.Errorf("listing containers of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var out []Container
	for rows.Next() {
		var c Container
		var rev, created, started sql.NullInt64
		if err := rows.Scan(&c.Appliance, &c.Name, &c.Service, &c.ID, &c.ConfigHash, &c.Image,
			&rev, &c.Job, &created, &started, &c.Restarts, &c.LastExitCode); err != nil {
			return nil, fmt.Errorf("listing containers of appliance %q: %w", appliance, err)
		}
		c.Revision = rev.Int64
		c.CreatedAt, c.StartedAt = fromNanos(created), fromNanos(started)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing containers of appliance %q: %w", appliance, err)
	}
	return out, nil
}

// DeleteContainer removes a container from the inventory; ErrNotFound when it
// is not there.
func (s *Store) DeleteContainer(ctx context.Context, appliance, name string) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM containers WHERE appliance = ? AND name = ?", appliance, name)
	if err == nil {
		err = notFoundIfNone(res, "container "+name)
	}
	if err != nil {
		return fmt.Errorf("deleting container %s of appliance %q: %w", name, appliance, err)
	}
	return nil
}

// RecordRestart counts a restart of the container: Restarts grows by one,
// LastExitCode becomes exitCode (how the previous run ended) and StartedAt
// becomes at (when it started again). ErrNotFound when it is not recorded.
func (s *Store) RecordRestart(ctx context.Context, appliance, name string, at time.Time, exitCode int) error {
	if at.IsZero() {
		at = time.Now()
	}
	res, err := s.db.ExecContext(ctx, `UPDATE containers
		SET restarts = restarts + 1, last_exit_code = ?, started_at = ?
		WHERE appliance = ? AND name = ?`, exitCode, at.UnixNano(), appliance, name)
	if err == nil {
		err = notFoundIfNone(res, "container "+name)
	}
	if err != nil {
		return fmt.Errorf("recording restart of container %s: %w", name, err)
	}
	return nil
}

// Who created a volume (Volume.CreatedBy).
const (
	// VolumeCreatedByOutpost marks a volume Outpost created.
	VolumeCreatedByOutpost = "outpost"
	// VolumeAdopted marks a volume that existed and was taken into the
	// inventory (external, or left by an earlier installation).
	VolumeAdopted = "adopted"
)

// Volume is a volume in the inventory.
type Volume struct {
	// Appliance and Name (the Podman volume name) identify the row.
	Appliance string
	// Key is the Compose volume key.
	Key string
	// Name is the Podman volume name.
	Name string
	// Services are the services mounting it.
	Services []string
	// External is true for volumes declared external: Outpost never removes them.
	External bool
	// CreatedAt defaults to now; kept from the first PutVolume.
	CreatedAt time.Time
	// CreatedBy is VolumeCreatedByOutpost (the default) or VolumeAdopted;
	// kept from the first PutVolume.
	CreatedBy string
	// LegacySince is when the active definition stopped using the volume;
	// nil while it is in use.
	LegacySince *time.Time
	// LegacyRevision is the revision that stopped using it; 0 for none.
	LegacyRevision int64
}

// VolumeRemoval is the audit record of a volume removed from the inventory.
type VolumeRemoval struct {
	// Volume is the row as it was when removed.
	Volume
	// RemovedAt is when RecordVolumeRemoved ran.
	RemovedAt time.Time
	// RemovedBy says who removed it (a user, "outpost prune", ...).
	RemovedBy string
	// Reason says why.
	Reason string
}

// PutVolume inserts or updates the inventory row of v (keyed by Appliance and
// Name). Key, Services and External are replaced; CreatedAt and CreatedBy are
// kept from the first insert. The legacy mark is never cleared here: a nil
// LegacySince keeps the recorded one (use ClearVolumeLegacy), a non-nil one
// sets it with LegacyRevision.
func (s *Store) PutVolume(ctx context.Context, v Volume) error {
	if v.Appliance == "" || v.Name == "" {
		return fmt.Errorf("recording volume: appliance and name are required (got %q, %q)", v.Appliance, v.Name)
	}
	if v.CreatedBy == "" {
		v.CreatedBy = VolumeCreatedByOutpost
	}
	if v.CreatedBy != VolumeCreatedByOutpost && v.CreatedBy != VolumeAdopted {
		return fmt.Errorf("recording volume %s: created by %q, want %q or %q", v.Name, v.CreatedBy, VolumeCreatedByOutpost, VolumeAdopted)
	}
	if v.CreatedAt.IsZero() {
		v.CreatedAt = time.Now()
	}
	services, err := json.Marshal(nonNil(v.Services))
	if err != nil {
		return fmt.Errorf("recording volume %s: encoding services: %w", v.Name, err)
	}
	var legacy any
	if v.LegacySince != nil {
		legacy = v.LegacySince.UnixNano()
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO volumes
		(appliance, name, key, services, external, created_at, created_by, legacy_since, legacy_revision)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (appliance, name) DO UPDATE SET
			key = excluded.key,
			services = excluded.services,
			external = excluded.external,
			legacy_since = COALESCE(excluded.legacy_since, volumes.legacy_since),
			legacy_revision = CASE WHEN excluded.legacy_since IS NULL
				THEN volumes.legacy_revision ELSE excluded.legacy_revision END`,
		v.Appliance, v.Name, v.Key, string(services), boolInt(v.External), v.CreatedAt.UnixNano(), v.CreatedBy,
		legacy, nullID(v.LegacyRevision))
	if err != nil {
		return fmt.Errorf("recording volume %s: %w", v.Name, err)
	}
	return nil
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

// MarkVolumeLegacy records that the volume is no longer used by the active
// definition since the given time (zero means now), by revision (0 for
// none). ErrNotFound when the volume is not recorded.
func (s *Store) MarkVolumeLegacy(ctx context.Context, appliance, name string, since time.Time, revision int64) error {
	if since.IsZero() {
		since = time.Now()
	}
	res, err := s.db.ExecContext(ctx,
		"UPDATE volumes SET legacy_since = ?, legacy_revision = ? WHERE appliance = ? AND name = ?",
		since.UnixNano(), nullID(revision), appliance, name)
	if err == nil {
		err = notFoundIfNone(res, "volume "+name)
	}
	if err != nil {
		return fmt.Errorf("marking volume %s legacy: %w", name, err)
	}
	return nil
}

// ClearVolumeLegacy records that the volume is in use again. ErrNotFound when
// the volume is not recorded.
func (s *Store) ClearVolumeLegacy(ctx context.Context, appliance, name string) error {
	res, err := s.db.ExecContext(ctx,
		"UPDATE volumes SET legacy_since = NULL, legacy_revision = NULL WHERE appliance = ? AND name = ?",
		appliance, name)
	if err == nil {
		err = notFoundIfNone(res, "volume "+name)
	}
	if err != nil {
		return fmt.Errorf("clearing legacy mark of volume %s: %w", name, err)
	}
	return nil
}

const volumeColumns = "appliance, name, key, services, external, created_at, created_by, legacy_since, legacy_revision"

func scanVolume(sc scanner, extra ...any) (Volume, error) {
	var v Volume
	var services string
	var created int64
	var legacy, legacyRev sql.NullInt64
	dest := append([]any{&v.Appliance, &v.Name, &v.Key, &services, &v.External, &created, &v.CreatedBy,
		&legacy, &legacyRev}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return Volume{}, err
	}
	if err := json.Unmarshal([]byte(services), &v.Services); err != nil {
		return Volume{}, fmt.Errorf("decoding services of volume %s: %w", v.Name, err)
	}
	if len(v.Services) == 0 {
		v.Services = nil
	}
	v.CreatedAt = time.Unix(0, created).UTC()
	if legacy.Valid {
		t := fromNanos(legacy)
		v.LegacySince = &t
	}
	v.LegacyRevision = legacyRev.Int64
	return v, nil
}

// Volumes lists the appliance's volumes by name.
func (s *Store) Volumes(ctx context.Context, appliance string) ([]Volume, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+volumeColumns+" FROM volumes WHERE appliance = ? ORDER BY name", appliance)
	if err != nil {
		return nil, fmt.Errorf("listing volumes of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var out []Volume
	for rows.Next() {
		v, err := scanVolume(rows)
		if err != nil {
			return nil, fmt.Errorf("listing volumes of appliance %q: %w", appliance, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing volumes of appliance %q: %w", appliance, err)
	}
	return out, nil
}

// RecordVolumeRemoved moves the volume's row to the removal audit, saying who
// removed it and why (both required), in one transaction. It is the only way
// a volume leaves the inventory; the schema rejects any other delete.
// ErrNotFound when the volume is not recorded.
func (s *Store) RecordVolumeRemoved(ctx context.Context, appliance, name, by, reason string) error {
	step := fmt.Sprintf("recording removal of volume %s", name)
	if strings.TrimSpace(by) == "" || strings.TrimSpace(reason) == "" {
		return fmt.Errorf("%s: who removed it and why are required", step)
	}
	return s.inTx(ctx, step, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO volume_removals
			(volume_id, `+volumeColumns+`, removed_at, removed_by, reason)
			SELECT id, `+volumeColumns+`, ?, ?, ? FROM volumes WHERE appliance = ? AND name = ?`,
			time.Now().UnixNano(), by, reason, appliance, name)
		if err == nil {
			err = notFoundIfNone(res, "volume "+name)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM volumes WHERE appliance = ? AND name = ?", appliance, name); err != nil {
			return fmt.Errorf("deleting inventory row: %w", err)
		}
		return nil
	})
}

// VolumeRemovals lists the appliance's removed volumes, oldest removal first.
func (s *Store) VolumeRemovals(ctx context.Context, appliance string) ([]VolumeRemoval, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+volumeColumns+", removed_at, removed_by, reason FROM volume_removals WHERE appliance = ? ORDER BY id", appliance)
	if err != nil {
		return nil, fmt.Errorf("listing removed volumes of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var out []VolumeRemoval
	for rows.Next() {
		var r VolumeRemoval
		var removed int64
		v, err := scanVolume(rows, &removed, &r.RemovedBy, &r.Reason)
		if err != nil {
			return nil, fmt.Errorf("listing removed volumes of appliance %q: %w", appliance, err)
		}
		r.Volume, r.RemovedAt = v, time.Unix(0, removed).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing removed volumes of appliance %q: %w", appliance, err)
	}
	return out, nil
}

// PutNetwork records a network of the appliance; recording it again is a
// no-op.
func (s *Store) PutNetwork(ctx context.Context, appliance, name string) error {
	if appliance == "" || name == "" {
		return fmt.Errorf("recording network: appliance and name are required (got %q, %q)", appliance, name)
	}
	if _, err := s.db.ExecContext(ctx,
		"INSERT INTO networks (appliance, name, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
		appliance, name, time.Now().UnixNano()); err != nil {
		return fmt.Errorf("recording network %s: %w", name, err)
	}
	return nil
}

// Networks lists the names of the appliance's networks, sorted.
func (s *Store) Networks(ctx context.Context, appliance string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT name FROM networks WHERE appliance = ? ORDER BY name", appliance)
	if err != nil {
		return nil, fmt.Errorf("listing networks of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("listing networks of appliance %q: %w", appliance, err)
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing networks of appliance %q: %w", appliance, err)
	}
	return out, nil
}

// DeleteNetwork removes a network from the inventory; ErrNotFound when it is
// not there.
func (s *Store) DeleteNetwork(ctx context.Context, appliance, name string) error {
	res, err := s.db.ExecContext(ctx, "DELETE FROM networks WHERE appliance = ? AND name = ?", appliance, name)
	if err == nil {
		err = notFoundIfNone(res, "network "+name)
	}
	if err != nil {
		return fmt.Errorf("deleting network %s of appliance %q: %w", name, appliance, err)
	}
	return nil
}

// PortAllocation is a host port handed out to a published container port.
type PortAllocation struct {
	// Appliance and Service own the allocation.
	Appliance, Service string
	// ContainerPort is the published port inside the container.
	ContainerPort uint16
	// Proto is "tcp", "udp" or "sctp"; host ports are unique per protocol.
	Proto string
	// HostPort is the port on the host.
	HostPort uint16
	// CreatedAt is when it was allocated.
	CreatedAt time.Time
}

func normalizeProto(proto string) (string, error) {
	p := strings.ToLower(strings.TrimSpace(proto))
	switch p {
	case "":
		return "tcp", nil
	case "tcp", "udp", "sctp":
		return p, nil
	}
	return "", fmt.Errorf("unknown protocol %q, want tcp, udp or sctp", proto)
}

// AllocatePort returns the host port recorded for the appliance's service,
// container port and protocol (empty means tcp). When none is recorded it
// calls pick with every host port recorded for that protocol by any appliance
// and records the port pick returns, which must be one of those. Lookup, pick
// and record are one transaction, so concurrent callers never get the same
// port; pick runs while the database is write-locked and should be quick.
func (s *Store) AllocatePort(ctx context.Context, appliance, service string, containerPort uint16, proto string,
	pick func(taken map[uint16]bool) (uint16, error)) (uint16, error) {
	step := fmt.Sprintf("allocating host port for %s/%s %d/%s", appliance, service, containerPort, proto)
	p, err := normalizeProto(proto)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", step, err)
	}
	if appliance == "" || containerPort == 0 {
		return 0, fmt.Errorf("%s: appliance and container port are required", step)
	}
	var host uint16
	err = s.inTx(ctx, step, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT host_port FROM port_allocations
			WHERE appliance = ? AND service = ? AND container_port = ? AND proto = ?`,
			appliance, service, containerPort, p).Scan(&host)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("reading allocation: %w", err)
		}
		taken, err := takenPorts(ctx, tx, p)
		if err != nil {
			return err
		}
		host, err = pick(taken)
		if err != nil {
			return fmt.Errorf("picking a free port: %w", err)
		}
		if host == 0 {
			return errors.New("picking a free port: picked port 0")
		}
		if taken[host] {
			return fmt.Errorf("picking a free port: port %d/%s is already allocated", host, p)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO port_allocations
			(appliance, service, container_port, proto, host_port, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			appliance, service, containerPort, p, host, time.Now().UnixNano()); err != nil {
			return fmt.Errorf("recording port %d: %w", host, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return host, nil
}

func takenPorts(ctx context.Context, tx *sql.Tx, proto string) (map[uint16]bool, error) {
	rows, err := tx.QueryContext(ctx, "SELECT host_port FROM port_allocations WHERE proto = ?", proto)
	if err != nil {
		return nil, fmt.Errorf("reading allocated ports: %w", err)
	}
	defer rows.Close()
	taken := map[uint16]bool{}
	for rows.Next() {
		var p uint16
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("reading allocated ports: %w", err)
		}
		taken[p] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading allocated ports: %w", err)
	}
	return taken, nil
}

// ReleasePort forgets an allocation, freeing its host port for others.
// ErrNotFound when none is recorded.
func (s *Store) ReleasePort(ctx context.Context, appliance, service string, containerPort uint16, proto string) error {
	step := fmt.Sprintf("releasing host port of %s/%s %d/%s", appliance, service, containerPort, proto)
	p, err := normalizeProto(proto)
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM port_allocations
		WHERE appliance = ? AND service = ? AND container_port = ? AND proto = ?`,
		appliance, service, containerPort, p)
	if err == nil {
		err = notFoundIfNone(res, "allocation")
	}
	if err != nil {
		return fmt.Errorf("%s: %w", step, err)
	}
	return nil
}

// Ports lists the appliance's port allocations by service, container port and
// protocol.
func (s *Store) Ports(ctx context.Context, appliance string) ([]PortAllocation, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT appliance, service, container_port, proto, host_port, created_at
		FROM port_allocations WHERE appliance = ? ORDER BY service, container_port, proto`, appliance)
	if err != nil {
		return nil, fmt.Errorf("listing ports of appliance %q: %w", appliance, err)
	}
	defer rows.Close()
	var out []PortAllocation
	for rows.Next() {
		var a PortAllocation
		var created int64
		if err := rows.Scan(&a.Appliance, &a.Service, &a.ContainerPort, &a.Proto, &a.HostPort, &created); err != nil {
			return nil, fmt.Errorf("listing ports of appliance %q: %w", appliance, err)
		}
		a.CreatedAt = time.Unix(0, created).UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing ports of appliance %q: %w", appliance, err)
	}
	return out, nil
}
