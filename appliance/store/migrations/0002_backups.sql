-- 0002_backups: snapshots of appliances' data (`outpost backup`).
--
-- A row is written when a snapshot starts (running) and finished as
-- complete or failed; pruning marks it pruned. The snapshot itself is a
-- directory whose manifest is the authority: a row only says where it is and
-- what happened, so snapshots copied in from elsewhere are listed too.

CREATE TABLE backups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    appliance   TEXT    NOT NULL CHECK (appliance <> ''),
    name        TEXT    NOT NULL CHECK (name <> ''),
    -- Absolute path of the snapshot directory.
    path        TEXT    NOT NULL CHECK (path <> ''),
    -- The revision the snapshot holds; not a reference: the revision may
    -- come from another box's database (a restored snapshot).
    revision_id INTEGER NOT NULL DEFAULT 0,
    -- What asked for it: manual, schedule, upgrade.
    trigger     TEXT    NOT NULL DEFAULT 'manual' CHECK (trigger <> ''),
    status      TEXT    NOT NULL CHECK (status IN ('running', 'complete', 'failed', 'pruned')),
    size        INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    verified_at INTEGER,
    error       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX backups_by_appliance ON backups (appliance, id);
CREATE INDEX backups_by_path ON backups (path);
