//! What both stores share: ids, list cursors, password hashing and verification, the
//! checks on what a caller hands in, how a patch changes a record, and how a stored job
//! row becomes a [`ReembedJob`], so that SQLite and PostgreSQL accept, refuse and answer
//! exactly the same.

use std::collections::HashMap;

use argon2::password_hash::{self, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use facesearch_models::Pack;

use crate::time::now_rfc3339;
use crate::{
    ImageSummary, IndexInfo, IndexType, JobState, NewImage, PackName, Record, RecordFields, RecordPatch,
    ReembedFailure, ReembedJob, Role, StoreError, User,
};

/// The columns both stores read for an index, a record (table alias `r`) and a
/// re-embedding job, in the order their row decoders expect.
pub(crate) const INDEX_COLS: &str =
    "id, index_name, index_type, record_count, title, description, pack, created_at, updated_at";

pub(crate) const RECORD_COLS: &str = "r.id, r.index_id, r.name, r.dob, r.nationality, r.gender, r.id_no, \
                           r.address, r.watch_list, r.additional_info, r.reference, r.created_at, r.updated_at";

pub(crate) const JOB_COLS: &str = "id, index_id, pack, from_pack, state, total, done, failed, failures, error, requested_by, \
                        created_at, updated_at, finished_at";

/// An index row in the order of [`INDEX_COLS`].
pub(crate) type IndexColumns = (String, String, String, i64, String, String, String, String, String);

/// The columns both stores read for a user.
pub(crate) const USER_COLS: &str = "username, role, password_hash, created_at";

/// A user row in the order of [`USER_COLS`].
pub(crate) type UserColumns = (String, String, String, String);

/// Longest cursor string accepted (ours are ~130 characters).
const MAX_CURSOR_LEN: usize = 512;

pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::InvalidInput(format!("not serializable as JSON: {e}")))
}

pub(crate) fn count_u64(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative {what}: {n}")))
}

pub(crate) fn encode_cursor(created_at: &str, record_id: &str) -> String {
    hex::encode(format!("{created_at}|{record_id}"))
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<(String, String), StoreError> {
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(StoreError::InvalidCursor);
    }
    let bytes = hex::decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    let (created_at, record_id) = text.split_once('|').ok_or(StoreError::InvalidCursor)?;
    if created_at.is_empty() || uuid::Uuid::parse_str(record_id).is_err() {
        return Err(StoreError::InvalidCursor);
    }
    Ok((created_at.to_owned(), record_id.to_owned()))
}

pub(crate) fn hash_password(password: &str) -> Result<String, StoreError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| StoreError::PasswordHash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::PasswordHash(e.to_string()))
}

/// Constant-time comparison is done by the argon2 crate.
fn password_matches(password: &str, phc: &str) -> Result<bool, StoreError> {
    let parsed = PasswordHash::new(phc).map_err(|e| StoreError::Corrupt(format!("stored password hash: {e}")))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(password_hash::Error::Password) => Ok(false),
        Err(e) => Err(StoreError::PasswordHash(e.to_string())),
    }
}

pub(crate) fn validate_username(username: &str) -> Result<(), StoreError> {
    if username.is_empty() || username.contains(':') || username.chars().any(char::is_control) {
        return Err(StoreError::InvalidInput("username must be non-empty, without ':' or control characters".into()));
    }
    Ok(())
}

/// A vector must be non-empty and finite to be stored (live or staged).
pub(crate) fn check_vector(vector: &[f32], what: &str) -> Result<(), StoreError> {
    if vector.is_empty() {
        return Err(StoreError::InvalidInput(format!("{what} is empty")));
    }
    if vector.iter().any(|x| !x.is_finite()) {
        return Err(StoreError::InvalidInput(format!("{what} has non-finite values")));
    }
    Ok(())
}

/// What every stored image must have: bytes, and a usable embedding.
pub(crate) fn check_image(image: &NewImage) -> Result<(), StoreError> {
    if image.bytes.is_empty() {
        return Err(StoreError::InvalidInput("image has no bytes".into()));
    }
    check_vector(&image.embedding, "embedding")
}

/// An embedding may only join an index of the pack that computed it.
pub(crate) fn check_pack(index_id: &str, index_pack: &str, vector_pack: Pack) -> Result<(), StoreError> {
    if vector_pack.name() != index_pack {
        return Err(StoreError::PackMismatch {
            index_id: index_id.to_owned(),
            index_pack: index_pack.to_owned(),
            vector_pack: vector_pack.name().to_owned(),
        });
    }
    Ok(())
}

/// A record row as both stores read it (the columns [`RECORD_COLS`]) with its watch list
/// decoded: PostgreSQL decodes it straight from the row (the derive), SQLite from its
/// JSON text.
#[derive(sqlx::FromRow)]
pub(crate) struct RecordRow {
    pub id: String,
    pub index_id: String,
    pub name: String,
    pub dob: String,
    pub nationality: String,
    pub gender: String,
    pub id_no: String,
    pub address: String,
    #[sqlx(json)]
    pub watch_list: Vec<String>,
    pub additional_info: String,
    pub reference: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// The records of `rows`, in their order, each with its images from `images`
/// ((record id, image) pairs, each record's oldest first).
pub(crate) fn with_images(rows: Vec<RecordRow>, images: Vec<(String, ImageSummary)>) -> Vec<Record> {
    let mut by_record: HashMap<String, Vec<ImageSummary>> = HashMap::new();
    for (record_id, image) in images {
        by_record.entry(record_id).or_default().push(image);
    }
    rows.into_iter()
        .map(|row| {
            let images = by_record.remove(&row.id).unwrap_or_default();
            Record {
                record_id: row.id,
                index_id: row.index_id,
                fields: RecordFields {
                    name: row.name,
                    dob: row.dob,
                    nationality: row.nationality,
                    gender: row.gender,
                    id_no: row.id_no,
                    address: row.address,
                    watch_list: row.watch_list,
                    additional_info: row.additional_info,
                },
                reference: row.reference,
                image_ids: images.iter().map(|i| i.image_id.clone()).collect(),
                images,
                created_at: row.created_at,
                updated_at: row.updated_at,
            }
        })
        .collect()
}

pub(crate) fn index_from_columns(columns: IndexColumns) -> Result<IndexInfo, StoreError> {
    let (id, index_name, index_type, count, title, description, pack, created_at, updated_at) = columns;
    let index_type: IndexType = index_type.parse().map_err(|e| StoreError::Corrupt(format!("index {id}: {e}")))?;
    let pack = PackName::parse(&pack);
    Ok(IndexInfo {
        record_count: count_u64(count, "record_count")?,
        id,
        index_name,
        index_type,
        title,
        description,
        pack,
        created_at,
        updated_at,
    })
}

pub(crate) fn user_from_columns(columns: UserColumns, grants: Vec<String>) -> Result<User, StoreError> {
    let (username, role, password_hash, created_at) = columns;
    let role: Role = role.parse().map_err(|e| StoreError::Corrupt(format!("user {username:?}: {e}")))?;
    Ok(User { username, role, password_hash, grants, created_at })
}

/// Every user with their grants, from the user rows (by username) and the
/// (username, index id) grant pairs (by username, then index id).
pub(crate) fn users_with_grants(
    users: Vec<UserColumns>,
    pairs: Vec<(String, String)>,
) -> Result<Vec<User>, StoreError> {
    let mut grants: HashMap<String, Vec<String>> = HashMap::new();
    for (username, index_id) in pairs {
        grants.entry(username).or_default().push(index_id);
    }
    users
        .into_iter()
        .map(|columns| {
            let granted = grants.remove(&columns.0).unwrap_or_default();
            user_from_columns(columns, granted)
        })
        .collect()
}

/// The answer of a password check: the user only if the password matches. An unknown
/// user is checked against `dummy_hash`, so that both paths cost one Argon2 run and the
/// time taken does not reveal which usernames exist. Slow: run it on the blocking pool,
/// outside any database lock.
pub(crate) fn verified(user: Option<User>, password: &str, dummy_hash: &str) -> Result<Option<User>, StoreError> {
    match user {
        Some(user) => Ok(password_matches(password, &user.password_hash)?.then_some(user)),
        None => {
            password_matches(password, dummy_hash)?;
            Ok(None)
        }
    }
}

/// A record as a patch leaves it, stamped now, with the reference it newly claims: the
/// store must find that reference unused in the index (else [`reference_taken`])
/// before writing the record back.
pub(crate) fn patch_record(mut record: Record, patch: RecordPatch) -> (Record, Option<String>) {
    let mut claimed = None;
    if let Some(reference) = apply_patch(&mut record, patch) {
        claimed.clone_from(&reference);
        record.reference = reference;
    }
    record.updated_at = now_rfc3339();
    (record, claimed)
}

/// The error when the database's unique index refuses a reference (a concurrent
/// writer claimed it between the check and the write).
pub(crate) fn reference_in_use() -> StoreError {
    StoreError::Conflict("reference already used in this index".into())
}

/// A re-embedding job as both stores keep it (the columns [`JOB_COLS`]), before its
/// figures are known.
pub(crate) struct JobRow {
    pub id: String,
    pub index_id: String,
    pub pack: String,
    pub from_pack: String,
    pub state: String,
    /// (total, done, failed) recorded by the switch; meaningful once the job is done.
    pub recorded: (i64, i64, i64),
    pub error: Option<String>,
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

/// A job's figures: (total, done, failed) and the failures listed.
pub(crate) type JobFigures = (u64, u64, u64, Vec<ReembedFailure>);

impl JobRow {
    pub(crate) fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt(format!("re-embedding job {}: {what}", self.id))
    }

    /// The stored state.
    pub(crate) fn state(&self) -> Result<JobState, StoreError> {
        self.state.parse().map_err(|_| self.corrupt(format!("state {:?}", self.state)))
    }

    /// The figures the switch recorded (for a done job), with its listed failures.
    pub(crate) fn recorded(&self, failures: Vec<ReembedFailure>) -> Result<JobFigures, StoreError> {
        let (t, d, f) = self.recorded;
        Ok((count_u64(t, "total")?, count_u64(d, "done")?, count_u64(f, "failed")?, failures))
    }

    /// The job with its figures: those the switch recorded once it is done, else the
    /// live counts of the staging.
    pub(crate) fn into_job(self, state: JobState, figures: JobFigures) -> ReembedJob {
        let (total, done, failed, failures) = figures;
        ReembedJob {
            job_id: self.id,
            index_id: self.index_id,
            pack: PackName::parse(&self.pack),
            from_pack: PackName::parse(&self.from_pack),
            state,
            total,
            done,
            failed,
            failures,
            error: self.error,
            requested_by: self.requested_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
        }
    }
}

/// Live figures of a running (or failed) job from the staging counts: (images of the
/// index, images with a staged row of the job's pack, of which failures).
pub(crate) fn live_figures(counts: (i64, i64, i64), failures: Vec<ReembedFailure>) -> Result<JobFigures, StoreError> {
    let (total, done, failed) = counts;
    Ok((
        count_u64(total, "image count")?,
        count_u64(done, "staged count")?,
        count_u64(failed, "failure count")?,
        failures,
    ))
}

/// Applies a patch's field changes to `record`. Returns the reference the patch asks
/// for (`Some(None)`: remove it) when it differs from the record's, for the store to
/// check that no other record of the index uses it before setting it.
fn apply_patch(record: &mut Record, patch: RecordPatch) -> Option<Option<String>> {
    let RecordPatch { name, dob, nationality, gender, id_no, address, watch_list, additional_info, reference } = patch;
    let f = &mut record.fields;
    for (slot, value) in [
        (&mut f.name, name),
        (&mut f.dob, dob),
        (&mut f.nationality, nationality),
        (&mut f.gender, gender),
        (&mut f.id_no, id_no),
        (&mut f.address, address),
        (&mut f.additional_info, additional_info),
    ] {
        if let Some(value) = value {
            *slot = value;
        }
    }
    if let Some(watch_list) = watch_list {
        f.watch_list = watch_list;
    }
    let reference = Some(reference?).filter(|r| !r.is_empty());
    (reference != record.reference).then_some(reference)
}

pub(crate) fn reference_taken(reference: &str) -> StoreError {
    StoreError::Conflict(format!("reference {reference:?} is already used by another record of this index"))
}
