//! The bodies of the HTTP contract. Every type here both serialises an answer and
//! generates its OpenAPI schema (utoipa): a response type is its schema, so the
//! document cannot describe a body the service does not send. Handlers build these
//! types (from the engine's and the store's) and hand them to [`crate::routes::ok`] or
//! [`crate::routes::created`]; none builds a body with `json!`.
//!
//! Key order on the wire: `ok`/`created` send the envelope through
//! `serde_json::Value`, whose objects keep their keys sorted (serde_json is built
//! without `preserve_order`), as every body of the service always has been; the order
//! of the fields here is the document's. Numbers keep the type the answer always had
//! (`f64` scores; a quality stored as the `f32`s it was measured in).
//!
//! A few bodies carry the store's or the face pipeline's own serialisation (a record's
//! stored quality, an audit event's details, the jobs of the store): their schema types
//! are named by `value_type`, and the tests of `crate::openapi` hold each such body to
//! its schema, field by field and type by type.

pub mod audit;
pub mod error;
pub mod index;
pub mod job;
pub mod record;
pub mod search;
pub mod user;

use serde::Serialize;
use utoipa::ToSchema;

pub use audit::{AuditEvent, AuditPage};
pub use error::{AuthErrors, ErrorBody, ErrorDetails, ErrorObject, ServerErrors};
pub use index::{ExpectedFalseMatches, IndexObject, IndexType, ManagedIndexObject};
pub use job::{DuplicateJob, ReembedJobObject};
pub use record::{RecordObject, RecordPage};
pub use search::{FileObject, MatchResult};
pub use user::{Role, UserObject};

/// Health and readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusObject {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}

macro_rules! envelope {
    ($($name:ident($ty:ty): $doc:literal;)*) => {$(
        #[doc = $doc]
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            pub response: $ty,
        }
    )*};
}

envelope! {
    IndexListResponse(Vec<IndexObject>): "`{\"response\": [index, …]}`";
    ManagedIndexResponse(ManagedIndexObject): "`{\"response\": index}` (Part 2: with `faces` and `min_score_fpir_1e3`)";
    MatchListResponse(Vec<MatchResult>): "`{\"response\": [match, …]}`, best first; `[]` when nothing matches";
    FileResponse(FileObject): "`{\"response\": file}`";
    RecordResponse(RecordObject): "`{\"response\": record}`";
    ReembedJobResponse(ReembedJobObject): "`{\"response\": job}`";
    DuplicateJobResponse(DuplicateJob): "`{\"response\": job}`";
    RecordPageResponse(RecordPage): "`{\"response\": {\"records\": […], \"next_cursor\": …}}`";
    UserResponse(UserObject): "`{\"response\": user}`";
    UserListResponse(Vec<UserObject>): "`{\"response\": [user, …]}`, by username";
    AuditPageResponse(AuditPage): "`{\"response\": {\"events\": […], \"next_before_id\": …}}`";
    StatusResponse(StatusObject): "`{\"response\": {\"status\": …}}`";
}
