//! Part 2: users, their roles and their per-index grants. Managing users is for
//! admins; `GET /users/me` tells any user who they are.
//!
//! A user's role is fixed at creation: the store has no way to change it in place, so
//! a role change is done by deleting the user and creating them again (with the new
//! role, a new password and the grants they need). `PATCH` changes the password.
//!
//! After every change the credential cache is cleared, so a changed password, a
//! deleted user or a revoked grant takes effect with the very next request.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facesearch_store::Role;
use serde::Deserialize;

use super::{created, ok};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{JsonBody, Path};
use crate::openapi::TAG_USERS;
use crate::responses::{AuthErrors, ErrorBody, ServerErrors, UserListResponse, UserObject, UserResponse};
use crate::state::AppState;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest accepted username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Names that cannot be users: `/users/me` is the caller's own account.
const RESERVED_USERNAMES: &[&str] = &["me"];

/// 1–64 characters of `A–Z a–z 0–9 . _ -`, not a reserved name.
pub fn check_username(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_USERNAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(ApiError::invalid_parameter(
            "username",
            format!("username must be 1 to {MAX_USERNAME_CHARS} characters of A-Z, a-z, 0-9, '.', '_' and '-'"),
        ));
    }
    if RESERVED_USERNAMES.contains(&name) {
        return Err(ApiError::invalid_parameter("username", format!("the username {name:?} is reserved")));
    }
    Ok(())
}

/// 12–1024 characters, at least one of them printable and not a space; a shorter
/// one, or one of only spaces and control characters, is `WEAK_PASSWORD`.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::new(
            ErrorCode::WeakPassword,
            format!("the password must be at least {MIN_PASSWORD_CHARS} characters long"),
        )
        .with("min_length", MIN_PASSWORD_CHARS));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid_parameter(
            "password",
            format!("the password must be at most {MAX_PASSWORD_CHARS} characters long"),
        ));
    }
    check_password_characters(password)
}

/// At least one character that is neither white space nor a control character: a
/// password of twelve spaces, tabs or NULs is refused (`WEAK_PASSWORD`).
pub fn check_password_characters(password: &str) -> Result<(), ApiError> {
    if !password.chars().any(|c| !c.is_whitespace() && !c.is_control()) {
        return Err(ApiError::new(
            ErrorCode::WeakPassword,
            "the password must contain at least one printable character other than a space",
        )
        .with("min_length", MIN_PASSWORD_CHARS));
    }
    Ok(())
}

/// `admin`, `operator`, `searcher` or `auditor` (any case).
pub fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse::<Role>().map_err(|_| {
        ApiError::invalid_parameter("role", format!("role must be admin, operator, searcher or auditor, not {role:?}"))
    })
}

pub fn user_not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, format!("no user named {name:?}")).with("username", name)
}

/// Makes the change visible at once: no request may run on a remembered credential
/// that predates it.
fn changed(state: &AppState) {
    state.credentials().clear();
}

/// The JSON body of `POST /users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    /// 1–64 characters of `A–Z a–z 0–9 . _ -`; `me` is reserved.
    username: String,
    /// 12–1024 characters, at least one printable and not a space.
    #[schema(format = Password)]
    password: String,
    /// `admin`, `operator`, `searcher` or `auditor`.
    #[schema(example = "searcher")]
    role: String,
    /// Ids of existing indexes to grant.
    #[serde(default)]
    grants: Vec<String>,
}

/// The JSON body of `PATCH /users/{username}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUserBody {
    /// A new password, 12–1024 characters, at least one printable and not a space.
    #[schema(format = Password)]
    password: Option<String>,
    /// Only the current role is accepted (roles cannot change in place).
    role: Option<String>,
}

/// `GET /users/me`: the caller's own account.
#[utoipa::path(
    get,
    path = "/users/me",
    tag = TAG_USERS,
    operation_id = "me",
    summary = "The caller's own account",
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The caller's user object", body = UserResponse),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    // Read afresh: a grant given since the credential was cached shows at once.
    let user = state.store().get_user(&caller.user.username).await?.unwrap_or(caller.user);
    Ok(ok(UserObject::from(&user)))
}

/// `POST /users`: `{username, password, role, grants?}` → `201` user.
#[utoipa::path(
    post,
    path = "/users",
    tag = TAG_USERS,
    operation_id = "create_user",
    summary = "Create a user (admin)",
    request_body(content = CreateUserBody, content_type = "application/json"),
    security(("basic_auth" = [])),
    responses(
        (status = 201, description = "The new user", body = UserResponse),
        (status = 400, description = "`INVALID_JSON`, `INVALID_PARAMETER` (username, role, too long password) or \
                                      `WEAK_PASSWORD` (`min_length`)", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`INDEX_NOT_FOUND`: a grant names an unknown index (no user is created)", body = ErrorBody),
        (status = 409, description = "`USER_EXISTS`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: not `application/json`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Response, ApiError> {
    check_username(&body.username)?;
    check_password(&body.password)?;
    let role = parse_role(&body.role)?;
    let mut grants = body.grants;
    grants.sort();
    grants.dedup();
    for id in &grants {
        state.store().get_index(id).await?.ok_or_else(|| ApiError::index_not_found(id))?;
    }
    let user = state.store().create_user(&body.username, &body.password, role).await?;
    for id in &grants {
        if !state.store().grant(&user.username, id).await? {
            // The index was deleted meanwhile: do not leave a half-made user behind.
            let _ = state.store().delete_user(&user.username).await;
            changed(&state);
            return Err(ApiError::index_not_found(id));
        }
    }
    changed(&state);
    let user = state.store().get_user(&user.username).await?.ok_or_else(|| user_not_found(&body.username))?;
    Ok(created(UserObject::from(&user)))
}

/// `GET /users`: every user, by username.
#[utoipa::path(
    get,
    path = "/users",
    tag = TAG_USERS,
    operation_id = "list_users",
    summary = "Every user, by username (admin)",
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The users", body = UserListResponse),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let users = state.store().list_users().await?;
    Ok(ok(users.iter().map(UserObject::from).collect::<Vec<_>>()))
}

/// `GET /users/{username}`.
#[utoipa::path(
    get,
    path = "/users/{username}",
    tag = TAG_USERS,
    operation_id = "get_user",
    summary = "A user (admin)",
    params(("username" = String, Path, description = "The username")),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`USER_NOT_FOUND` (`username`)", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn get(State(state): State<AppState>, Path(username): Path<String>) -> Result<Response, ApiError> {
    let user = state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    Ok(ok(UserObject::from(&user)))
}

/// `PATCH /users/{username}`: `{password?, role?}`. The role cannot change (only
/// by deleting and re-creating the user); naming the current role is accepted.
#[utoipa::path(
    patch,
    path = "/users/{username}",
    tag = TAG_USERS,
    operation_id = "patch_user",
    summary = "Set a user's password (admin)",
    description = "A role cannot be changed in place: delete the user and create them again.",
    params(("username" = String, Path, description = "The username")),
    request_body(content = PatchUserBody, content_type = "application/json"),
    security(("basic_auth" = [])),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 400, description = "`INVALID_JSON`, `INVALID_PARAMETER`, `WEAK_PASSWORD` or \
                                      `ROLE_CHANGE_NOT_SUPPORTED`", body = ErrorBody),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`USER_NOT_FOUND` (`username`)", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: not `application/json`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Path(username): Path<String>,
    JsonBody(body): JsonBody<PatchUserBody>,
) -> Result<Response, ApiError> {
    let role = body.role.as_deref().map(parse_role).transpose()?;
    if let Some(p) = &body.password {
        check_password(p)?;
    }
    let user = state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    if let Some(role) = role
        && role != user.role
    {
        return Err(ApiError::new(
            ErrorCode::RoleChangeNotSupported,
            format!("the role of a user cannot be changed; delete {username:?} and create the user again as {role}"),
        )
        .with("parameter", "role"));
    }
    if let Some(p) = &body.password {
        if !state.store().set_password(&username, p).await? {
            return Err(user_not_found(&username));
        }
        changed(&state);
        // The old password's failures say nothing about the new one.
        state.throttle().forget_user(&username);
    }
    let user = state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    Ok(ok(UserObject::from(&user)))
}

/// `DELETE /users/{username}` → `204`. Deleting yourself, or the last admin, is
/// `409 CONFLICT`.
#[utoipa::path(
    delete,
    path = "/users/{username}",
    tag = TAG_USERS,
    operation_id = "delete_user",
    summary = "Delete a user and their grants (admin)",
    params(("username" = String, Path, description = "The username")),
    security(("basic_auth" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`USER_NOT_FOUND` (`username`)", body = ErrorBody),
        (status = 409, description = "`CONFLICT`: deleting yourself or the last admin", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    if username == caller.user.username {
        return Err(ApiError::new(ErrorCode::Conflict, "you cannot delete your own account").with("username", username));
    }
    // The store refuses to delete the last admin (StoreError::LastAdmin → 409) in the
    // same transaction as the delete, so two admins deleting each other at once, on one
    // node or on two sharing PostgreSQL, cannot leave none.
    if !state.store().delete_user(&username).await? {
        return Err(user_not_found(&username));
    }
    changed(&state);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /users/{username}/grants/{index_id}` → `204`; idempotent.
#[utoipa::path(
    put,
    path = "/users/{username}/grants/{index_id}",
    tag = TAG_USERS,
    operation_id = "grant",
    summary = "Grant an index to a user (admin; idempotent)",
    params(("username" = String, Path, description = "The username"), ("index_id" = String, Path, description = "The index id")),
    security(("basic_auth" = [])),
    responses(
        (status = 204, description = "Granted"),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`USER_NOT_FOUND` or `INDEX_NOT_FOUND`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn grant(
    State(state): State<AppState>,
    Path((username, index_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    state.store().get_index(&index_id).await?.ok_or_else(|| ApiError::index_not_found(&index_id))?;
    if !state.store().grant(&username, &index_id).await? {
        // Deleted between the checks and the grant.
        return Err(match state.store().get_user(&username).await? {
            None => user_not_found(&username),
            Some(_) => ApiError::index_not_found(&index_id),
        });
    }
    changed(&state);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /users/{username}/grants/{index_id}` → `204`; idempotent for an existing
/// index, `404 INDEX_NOT_FOUND` for an index that does not exist.
#[utoipa::path(
    delete,
    path = "/users/{username}/grants/{index_id}",
    tag = TAG_USERS,
    operation_id = "revoke",
    summary = "Revoke a user's grant of an index (admin; idempotent for an existing index)",
    params(("username" = String, Path, description = "The username"), ("index_id" = String, Path, description = "The index id")),
    security(("basic_auth" = [])),
    responses(
        (status = 204, description = "Revoked (or was not granted)"),
        (status = 403, description = "`FORBIDDEN`: not an admin", body = ErrorBody),
        (status = 404, description = "`USER_NOT_FOUND` or `INDEX_NOT_FOUND`", body = ErrorBody),
        AuthErrors,
        ServerErrors,
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Path((username, index_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    let removed = state.store().revoke(&username, &index_id).await?;
    changed(&state);
    if !removed && state.store().get_index(&index_id).await?.is_none() {
        return Err(ApiError::index_not_found(&index_id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_policy() {
        for ok in ["a", "alice", "Alice.Smith", "ops_team-2", &"x".repeat(64)] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "me", "al ice", "alice:x", "élodie", "a/b", &"x".repeat(65), "tab\t"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_policy() {
        assert_eq!(check_password("short-pass1").unwrap_err().code, "WEAK_PASSWORD");
        assert!(check_password("twelve-chars").is_ok());
        assert!(check_password(&"é".repeat(12)).is_ok(), "characters, not bytes");
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert_eq!(check_password(&"x".repeat(1025)).unwrap_err().code, "INVALID_PARAMETER");
        // Long enough, but nothing printable: refused.
        for blank in [" ".repeat(12), "\0".repeat(12), "\t".repeat(12), "\u{3000}".repeat(12), " \n\r\0".repeat(4)] {
            assert_eq!(check_password(&blank).unwrap_err().code, "WEAK_PASSWORD", "{blank:?}");
        }
        // One printable character among spaces is enough; spaces inside are fine.
        assert!(check_password(&format!("{}x", " ".repeat(11))).is_ok());
        assert!(check_password("correct horse battery").is_ok());
    }

    #[test]
    fn roles_parse() {
        assert_eq!(parse_role("Searcher").unwrap(), Role::Searcher);
        assert_eq!(parse_role("root").unwrap_err().code, "INVALID_PARAMETER");
    }
}
