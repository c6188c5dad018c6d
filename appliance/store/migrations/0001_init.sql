-- 0001_init: the first Outpost state schema.
--
-- Conventions: times are INTEGER Unix nanoseconds (UTC), NULL when unset;
-- references to a revision are NULL when there is none. Migrations are
-- immutable once released: change the schema by adding 0002_..., never by
-- editing this file.

-- Small key/value settings (install id, last seen versions, ...).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY CHECK (key <> ''),
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Every applied (or attempted) definition of an appliance. Never deleted:
-- rollback needs the history. AUTOINCREMENT so an id is never reused.
CREATE TABLE revisions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance  TEXT    NOT NULL CHECK (appliance <> ''),
    version    TEXT    NOT NULL DEFAULT '',
    spec       TEXT             CHECK (spec IS NULL OR json_valid(spec)),
    spec_hash  TEXT    NOT NULL DEFAULT '',
    status     TEXT    NOT NULL CHECK (status IN
                   ('pending', 'applying', 'active', 'failed', 'superseded', 'rolled_back')),
    created_at INTEGER NOT NULL,
    applied_at INTEGER,
    note       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX revisions_by_appliance ON revisions (appliance, id);
-- The database itself guarantees at most one active revision per appliance.
CREATE UNIQUE INDEX revisions_one_active ON revisions (appliance) WHERE status = 'active';

-- The image (ID or digest) each service of a revision runs.
CREATE TABLE revision_images (
    revision_id INTEGER NOT NULL REFERENCES revisions (id) ON DELETE CASCADE,
    service     TEXT    NOT NULL,
    image       TEXT    NOT NULL,
    PRIMARY KEY (revision_id, service)
) WITHOUT ROWID;

-- Inventory of the containers Outpost created.
CREATE TABLE containers (
    appliance      TEXT    NOT NULL CHECK (appliance <> ''),
    name           TEXT    NOT NULL CHECK (name <> ''),
    service        TEXT    NOT NULL,
    container_id   TEXT    NOT NULL DEFAULT '',
    config_hash    TEXT    NOT NULL DEFAULT '',
    image          TEXT    NOT NULL DEFAULT '',
    revision_id    INTEGER REFERENCES revisions (id),
    job            INTEGER NOT NULL DEFAULT 0 CHECK (job IN (0, 1)),
    created_at     INTEGER,
    started_at     INTEGER,
    restarts       INTEGER NOT NULL DEFAULT 0,
    last_exit_code INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (appliance, name)
) WITHOUT ROWID;

-- Inventory of volumes. Data lives in volumes, so a row is never simply
-- deleted: it is moved to volume_removals with who, when and why (the trigger
-- below enforces that). AUTOINCREMENT id: one per incarnation of a volume.
CREATE TABLE volumes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance       TEXT    NOT NULL CHECK (appliance <> ''),
    name            TEXT    NOT NULL CHECK (name <> ''),
    key             TEXT    NOT NULL DEFAULT '',
    services        TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(services)),
    external        INTEGER NOT NULL DEFAULT 0 CHECK (external IN (0, 1)),
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL CHECK (created_by IN ('outpost', 'adopted')),
    legacy_since    INTEGER,
    legacy_revision INTEGER REFERENCES revisions (id),
    UNIQUE (appliance, name)
);

-- Audit of removed volumes: a copy of the row plus who, when and why.
CREATE TABLE volume_removals (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    volume_id       INTEGER NOT NULL,
    appliance       TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    services        TEXT    NOT NULL,
    external        INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    legacy_since    INTEGER,
    legacy_revision INTEGER,
    removed_at      INTEGER NOT NULL,
    removed_by      TEXT    NOT NULL CHECK (removed_by <> ''),
    reason          TEXT    NOT NULL CHECK (reason <> '')
);
CREATE INDEX volume_removals_by_volume ON volume_removals (appliance, name);

CREATE TRIGGER volumes_delete_needs_audit BEFORE DELETE ON volumes
WHEN NOT EXISTS (SELECT 1 FROM volume_removals r WHERE r.volume_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'volume rows are removed only with an audit record (RecordVolumeRemoved)');
END;

-- Inventory of networks.
CREATE TABLE networks (
    appliance  TEXT    NOT NULL CHECK (appliance <> ''),
    name       TEXT    NOT NULL CHECK (name <> ''),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (appliance, name)
) WITHOUT ROWID;

-- Host ports handed out to published container ports; stable across
-- restarts and unique per protocol across every appliance on the host.
CREATE TABLE port_allocations (
    appliance      TEXT    NOT NULL CHECK (appliance <> ''),
    service        TEXT    NOT NULL,
    container_port INTEGER NOT NULL CHECK (container_port BETWEEN 1 AND 65535),
    proto          TEXT    NOT NULL CHECK (proto IN ('tcp', 'udp', 'sctp')),
    host_port      INTEGER NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (appliance, service, container_port, proto),
    UNIQUE (host_port, proto)
) WITHOUT ROWID;

-- What happened, for `outpost events` and the console.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance TEXT    NOT NULL,
    service   TEXT    NOT NULL DEFAULT '',
    kind      TEXT    NOT NULL CHECK (kind <> ''),
    message   TEXT    NOT NULL DEFAULT '',
    at        INTEGER NOT NULL
);
CREATE INDEX events_by_appliance ON events (appliance, id);
CREATE INDEX events_by_time ON events (at);

-- Operation journal: an operation (upgrade, migration, bundle load) and its
-- steps, each written before it is done so a killed process can resume or
-- undo. status is NULL while the operation is open.
CREATE TABLE ops (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance   TEXT    NOT NULL CHECK (appliance <> ''),
    kind        TEXT    NOT NULL CHECK (kind <> ''),
    status      TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    CHECK ((status IS NULL) = (finished_at IS NULL))
);
CREATE INDEX ops_open ON ops (appliance, id) WHERE finished_at IS NULL;

-- Append-only: the latest entry of a step is its current state.
CREATE TABLE journal (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id INTEGER NOT NULL REFERENCES ops (id),
    step  INTEGER NOT NULL,
    name  TEXT    NOT NULL,
    state TEXT    NOT NULL CHECK (state IN ('started', 'done', 'failed', 'undone')),
    data  TEXT    NOT NULL DEFAULT '',
    at    INTEGER NOT NULL
);
CREATE INDEX journal_by_op ON journal (op_id, id);

-- Writer locks: who holds them, with enough identity to tell whether the
-- holder still lives after a crash.
CREATE TABLE locks (
    name        TEXT    PRIMARY KEY CHECK (name <> ''),
    token       TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    hostname    TEXT    NOT NULL,
    boot_id     TEXT    NOT NULL,
    start_time  INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL
) WITHOUT ROWID;
