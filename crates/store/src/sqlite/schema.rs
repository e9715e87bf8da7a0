//! The SQLite schema: its ordered migration steps and the code that applies them at
//! open, each step in one transaction with its version bump.

use super::*;

/// Ordered schema migrations; step `i` takes `PRAGMA user_version` from `i` to `i + 1`.
/// Never edit a released step: append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
CREATE TABLE indexes (
    id           TEXT PRIMARY KEY NOT NULL,
    index_name   TEXT NOT NULL UNIQUE,
    index_type   TEXT NOT NULL CHECK (index_type IN ('INTERNAL', 'EXTERNAL')),
    title        TEXT NOT NULL,
    description  TEXT NOT NULL,
    pack         TEXT NOT NULL,
    record_count INTEGER NOT NULL DEFAULT 0 CHECK (record_count >= 0),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX indexes_created ON indexes (created_at, id);

CREATE TABLE records (
    id              TEXT PRIMARY KEY NOT NULL,
    index_id        TEXT NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    dob             TEXT NOT NULL,
    nationality     TEXT NOT NULL,
    gender          TEXT NOT NULL,
    id_no           TEXT NOT NULL,
    address         TEXT NOT NULL,
    watch_list      TEXT NOT NULL CHECK (json_valid(watch_list) AND json_type(watch_list) = 'array'),
    additional_info TEXT NOT NULL,
    reference       TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX records_page ON records (index_id, created_at, id);
CREATE UNIQUE INDEX records_reference ON records (index_id, reference) WHERE reference IS NOT NULL;

-- record_count is exact: maintained in the same transaction as every insert/delete
-- (including deletes cascaded from an index).
CREATE TRIGGER records_count_insert AFTER INSERT ON records BEGIN
    UPDATE indexes SET record_count = record_count + 1 WHERE id = NEW.index_id;
END;
CREATE TRIGGER records_count_delete AFTER DELETE ON records BEGIN
    UPDATE indexes SET record_count = record_count - 1 WHERE id = OLD.index_id;
END;
CREATE TRIGGER records_index_fixed BEFORE UPDATE OF index_id ON records
WHEN NEW.index_id IS NOT OLD.index_id BEGIN
    SELECT RAISE(ABORT, 'a record cannot move to another index');
END;

-- Image bytes live in the database so that record, image and embedding commit atomically.
CREATE TABLE images (
    id         TEXT PRIMARY KEY NOT NULL,
    record_id  TEXT NOT NULL REFERENCES records (id) ON DELETE CASCADE,
    mime       TEXT NOT NULL,
    file_name  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    face       TEXT NOT NULL CHECK (json_valid(face)),
    created_at TEXT NOT NULL,
    bytes      BLOB NOT NULL
);
CREATE INDEX images_record ON images (record_id, created_at, id);

-- Little-endian f32 vectors; pack copied from the index at insert.
CREATE TABLE embeddings (
    image_id TEXT PRIMARY KEY NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    pack     TEXT NOT NULL,
    dim      INTEGER NOT NULL CHECK (dim > 0),
    vector   BLOB NOT NULL CHECK (length(vector) = 4 * dim)
);
CREATE INDEX embeddings_pack ON embeddings (pack);

CREATE TABLE users (
    username      TEXT PRIMARY KEY NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'searcher', 'auditor')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE grants (
    username   TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    index_id   TEXT NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (username, index_id)
) WITHOUT ROWID;
CREATE INDEX grants_index ON grants (index_id);
"#,
    // 2: the audit log. Append-only: rows are never updated; only retention deletes
    // old rows (prune_audit).
    r#"
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    index_ids  TEXT NOT NULL CHECK (json_valid(index_ids)),
    record_ids TEXT NOT NULL CHECK (json_valid(record_ids)),
    details    TEXT NOT NULL CHECK (json_valid(details))
);
CREATE INDEX audit_at ON audit_log (at);
CREATE INDEX audit_actor ON audit_log (actor, id);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
"#,
    // 3: moving an index to another model pack. One job row per index (its latest
    // job); the new pack's vectors are staged per (image, pack) beside the live ones
    // and go with their image (cascade). A staged row has a vector or the code of why
    // the new pack found no usable face, never both.
    r#"
CREATE TABLE reembed_jobs (
    index_id     TEXT PRIMARY KEY NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    id           TEXT NOT NULL UNIQUE,
    pack         TEXT NOT NULL,
    from_pack    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    total        INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    done         INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0),
    failed       INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
    failures     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(failures)),
    error        TEXT,
    requested_by TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX reembed_jobs_state ON reembed_jobs (state);

CREATE TABLE staged_embeddings (
    image_id TEXT NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    pack     TEXT NOT NULL,
    dim      INTEGER,
    vector   BLOB,
    failure  TEXT,
    PRIMARY KEY (image_id, pack),
    CHECK ((vector IS NULL) <> (failure IS NULL)),
    CHECK (vector IS NULL OR (dim > 0 AND length(vector) = 4 * dim))
) WITHOUT ROWID;
"#,
    // 4: a counter of embedding changes, bumped by triggers in the same transaction as
    // every insert, update and delete of an embedding (cascades included), so a saved
    // copy of the vector index can tell whether it still matches the store.
    r#"
CREATE TABLE vector_version (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO vector_version (id, version) VALUES (1, 0);
CREATE TRIGGER embeddings_inserted AFTER INSERT ON embeddings BEGIN
    UPDATE vector_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER embeddings_updated AFTER UPDATE ON embeddings BEGIN
    UPDATE vector_version SET version = version + 1 WHERE id = 1;
END;
CREATE TRIGGER embeddings_deleted AFTER DELETE ON embeddings BEGIN
    UPDATE vector_version SET version = version + 1 WHERE id = 1;
END;
"#,
    // 5: the face quality measured at enrolment (JSON); NULL for older images.
    r#"
ALTER TABLE images ADD COLUMN quality TEXT CHECK (quality IS NULL OR json_valid(quality));
"#,
];

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    loop {
        // IMMEDIATE: another process opening the same file waits instead of racing.
        let tx = immediate(conn, "starting a migration")?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).ctx("reading user_version")?;
        if version > supported {
            return Err(StoreError::UnsupportedSchema { found: version, supported });
        }
        let Some(step) = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)) else {
            return tx.commit().ctx("finishing migrations");
        };
        tx.execute_batch(step).ctx("applying a migration")?;
        tx.pragma_update(None, "user_version", version + 1).ctx("writing user_version")?;
        tx.commit().ctx("committing a migration")?;
        tracing::info!(from = version, to = version + 1, "store schema migrated");
    }
}
