//! What both stores share: ids, list cursors, password hashing and the checks on
//! what a caller hands in, so that SQLite and PostgreSQL accept and refuse exactly
//! the same input.

use argon2::password_hash::{self, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::{NewImage, Record, RecordPatch, StoreError};

/// The columns both stores read for an index, a record (table alias `r`) and a
/// re-embedding job, in the order their row decoders expect.
pub(crate) const INDEX_COLS: &str =
    "id, index_name, index_type, record_count, title, description, pack, created_at, updated_at";

pub(crate) const RECORD_COLS: &str = "r.id, r.index_id, r.name, r.dob, r.nationality, r.gender, r.id_no, \
                           r.address, r.watch_list, r.additional_info, r.reference, r.created_at, r.updated_at";

pub(crate) const JOB_COLS: &str = "id, index_id, pack, from_pack, state, total, done, failed, failures, error, requested_by, \
                        created_at, updated_at, finished_at";

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
pub(crate) fn password_matches(password: &str, phc: &str) -> Result<bool, StoreError> {
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
pub(crate) fn check_pack(index_id: &str, index_pack: &str, vector_pack: &str) -> Result<(), StoreError> {
    if vector_pack != index_pack {
        return Err(StoreError::PackMismatch {
            index_id: index_id.to_owned(),
            index_pack: index_pack.to_owned(),
            vector_pack: vector_pack.to_owned(),
        });
    }
    Ok(())
}

/// Applies a patch's field changes to `record`. Returns the reference the patch asks
/// for (`Some(None)`: remove it) when it differs from the record's, for the store to
/// check that no other record of the index uses it before setting it.
pub(crate) fn apply_patch(record: &mut Record, patch: RecordPatch) -> Option<Option<String>> {
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
