-- The PostgreSQL store's schema (version 1): the same data as the embedded SQLite
-- store, plus pgvector columns searched inside the database. Never edit a released
-- migration: add a new file.

CREATE EXTENSION IF NOT EXISTS vector;

-- Ids and timestamps sort byte-wise (COLLATE "C"), whatever the database's locale,
-- so list order and cursors are the same as in the embedded store.
CREATE TABLE indexes (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id           TEXT COLLATE "C" PRIMARY KEY,
    index_name   TEXT NOT NULL UNIQUE,
    index_type   TEXT NOT NULL CHECK (index_type IN ('INTERNAL', 'EXTERNAL')),
    title        TEXT NOT NULL,
    description  TEXT NOT NULL,
    pack         TEXT NOT NULL,
    record_count BIGINT NOT NULL DEFAULT 0 CHECK (record_count >= 0),
    created_at   TEXT COLLATE "C" NOT NULL,
    updated_at   TEXT COLLATE "C" NOT NULL
);

CREATE TABLE records (
    id              TEXT COLLATE "C" PRIMARY KEY,
    index_id        TEXT COLLATE "C" NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    dob             TEXT NOT NULL,
    nationality     TEXT NOT NULL,
    gender          TEXT NOT NULL,
    id_no           TEXT NOT NULL,
    address         TEXT NOT NULL,
    watch_list      JSONB NOT NULL CHECK (jsonb_typeof(watch_list) = 'array'),
    additional_info TEXT NOT NULL,
    reference       TEXT,
    created_at      TEXT COLLATE "C" NOT NULL,
    updated_at      TEXT COLLATE "C" NOT NULL
);
CREATE INDEX records_page ON records (index_id, created_at, id);
CREATE UNIQUE INDEX records_reference ON records (index_id, reference) WHERE reference IS NOT NULL;

-- record_count is exact: kept in the same transaction as every insert and delete
-- (deletes cascaded from an index included).
CREATE FUNCTION records_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE indexes SET record_count = record_count + 1 WHERE id = NEW.index_id;
        RETURN NEW;
    END IF;
    UPDATE indexes SET record_count = record_count - 1 WHERE id = OLD.index_id;
    RETURN OLD;
END $$;
CREATE TRIGGER records_count AFTER INSERT OR DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION records_count();

CREATE FUNCTION records_index_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a record cannot move to another index';
END $$;
CREATE TRIGGER records_index_fixed BEFORE UPDATE OF index_id ON records
    FOR EACH ROW WHEN (NEW.index_id IS DISTINCT FROM OLD.index_id) EXECUTE FUNCTION records_index_fixed();

-- Image bytes in bytea, in the same row as their metadata: they commit, replicate,
-- back up and (by cascade) delete together with their record. JPEG/PNG bytes do not
-- compress, so TOAST stores them out of line without trying.
CREATE TABLE images (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id         TEXT COLLATE "C" PRIMARY KEY,
    record_id  TEXT COLLATE "C" NOT NULL REFERENCES records (id) ON DELETE CASCADE,
    mime       TEXT NOT NULL,
    file_name  TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    face       JSONB NOT NULL,
    quality    JSONB,
    created_at TEXT COLLATE "C" NOT NULL,
    bytes      BYTEA NOT NULL
);
ALTER TABLE images ALTER COLUMN bytes SET STORAGE EXTERNAL;
CREATE INDEX images_record ON images (record_id, created_at, seq);

-- One live vector per image. record_id and index_id are copied from the image's
-- record (neither ever changes) so that a search reads this table alone.
CREATE TABLE embeddings (
    image_id  TEXT COLLATE "C" PRIMARY KEY REFERENCES images (id) ON DELETE CASCADE,
    record_id TEXT COLLATE "C" NOT NULL,
    index_id  TEXT COLLATE "C" NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    pack      TEXT NOT NULL,
    dim       INTEGER NOT NULL CHECK (dim > 0),
    vector    vector NOT NULL CHECK (vector_dims(vector) = dim)
);
CREATE INDEX embeddings_index ON embeddings (index_id);
-- One HNSW graph per model dimension (open: 128, insightface: 512), on half-precision
-- copies of the vectors (half the memory); candidates are re-ranked on the full
-- vectors. Cosine distance: the embeddings are compared by cosine similarity.
CREATE INDEX embeddings_hnsw_128 ON embeddings
    USING hnsw ((vector::halfvec(128)) halfvec_cosine_ops) WITH (m = 16, ef_construction = 128) WHERE dim = 128;
CREATE INDEX embeddings_hnsw_512 ON embeddings
    USING hnsw ((vector::halfvec(512)) halfvec_cosine_ops) WITH (m = 16, ef_construction = 128) WHERE dim = 512;

-- Moves on every change of an embedding (a sequence: no row lock shared by writers;
-- per row, so a statement that changes nothing does not move it).
CREATE SEQUENCE vector_version;
CREATE FUNCTION vector_version_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('vector_version');
    RETURN NULL;
END $$;
CREATE TRIGGER embeddings_changed AFTER INSERT OR UPDATE OR DELETE ON embeddings
    FOR EACH ROW EXECUTE FUNCTION vector_version_bump();

CREATE TABLE users (
    username      TEXT COLLATE "C" PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'searcher', 'auditor')),
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE grants (
    username   TEXT COLLATE "C" NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    index_id   TEXT COLLATE "C" NOT NULL REFERENCES indexes (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (username, index_id)
);
CREATE INDEX grants_index ON grants (index_id);

-- Append-only: rows are never updated; retention deletes old rows.
CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         TEXT COLLATE "C" NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    index_ids  JSONB NOT NULL,
    record_ids JSONB NOT NULL,
    details    JSONB NOT NULL
);
CREATE INDEX audit_at ON audit_log (at);
CREATE INDEX audit_actor ON audit_log (actor, id);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- Moving an index to another model pack: one job row per index (its latest job);
-- the new pack's vectors are staged per (image, pack) beside the live ones.
CREATE TABLE reembed_jobs (
    index_id     TEXT COLLATE "C" PRIMARY KEY REFERENCES indexes (id) ON DELETE CASCADE,
    id           TEXT NOT NULL UNIQUE,
    pack         TEXT NOT NULL,
    from_pack    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    total        BIGINT NOT NULL DEFAULT 0 CHECK (total >= 0),
    done         BIGINT NOT NULL DEFAULT 0 CHECK (done >= 0),
    failed       BIGINT NOT NULL DEFAULT 0 CHECK (failed >= 0),
    failures     JSONB NOT NULL DEFAULT '[]',
    error        TEXT,
    requested_by TEXT NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    updated_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX reembed_jobs_state ON reembed_jobs (state);

CREATE TABLE staged_embeddings (
    image_id TEXT COLLATE "C" NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    pack     TEXT NOT NULL,
    dim      INTEGER,
    vector   vector,
    failure  TEXT,
    PRIMARY KEY (image_id, pack),
    CHECK ((vector IS NULL) <> (failure IS NULL)),
    CHECK (vector IS NULL OR (dim > 0 AND vector_dims(vector) = dim))
);
