//! Users: the user object (never the password hash).

use facesearch_store::User;
use serde::Serialize;
use utoipa::ToSchema;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Searcher,
    Auditor,
}

impl From<facesearch_store::Role> for Role {
    fn from(role: facesearch_store::Role) -> Self {
        match role {
            facesearch_store::Role::Admin => Role::Admin,
            facesearch_store::Role::Operator => Role::Operator,
            facesearch_store::Role::Searcher => Role::Searcher,
            facesearch_store::Role::Auditor => Role::Auditor,
        }
    }
}

/// A user account (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserObject {
    pub username: String,
    pub role: Role,
    /// Ids of the indexes granted to the user, sorted.
    pub grants: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

impl From<&User> for UserObject {
    fn from(user: &User) -> Self {
        Self {
            username: user.username.clone(),
            role: user.role.into(),
            grants: user.grants.clone(),
            created_at: user.created_at.clone(),
        }
    }
}
