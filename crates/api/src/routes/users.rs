//! Part 2: users, their roles and their per-index grants. Managing users is for
//! admins; `GET /users/me` tells any user who they are.
//!
//! A user's role is fixed at creation: the store has no way to change it in place, so
//! a role change is done by deleting the user and creating them again (with the new
//! role, a new password and the grants they need). `PATCH` changes the password.
//!
//! After every change the credential cache is cleared, so a changed password, a
//! deleted user or a revoked grant takes effect with the very next request.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use facesearch_store::{Role, User};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{created, ok};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest accepted username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Names that cannot be users: `/users/me` is the caller's own account.
const RESERVED_USERNAMES: &[&str] = &["me"];

/// Serialises the changes that must keep at least one admin (deleting users), so that
/// two admins deleting each other at once cannot leave none.
static ADMIN_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// 12–1024 characters; a shorter one is `WEAK_PASSWORD`.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::bad_request(
            "WEAK_PASSWORD",
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
    Ok(())
}

/// `admin`, `operator`, `searcher` or `auditor` (any case).
pub fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse::<Role>().map_err(|_| {
        ApiError::invalid_parameter("role", format!("role must be admin, operator, searcher or auditor, not {role:?}"))
    })
}

/// The user object: never the password hash.
pub fn user_object(user: &User) -> Value {
    json!({
        "username": user.username,
        "role": user.role.as_str(),
        "grants": user.grants,
        "created_at": user.created_at,
    })
}

pub fn user_not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "USER_NOT_FOUND", format!("no user named {name:?}")).with("username", name)
}

fn admins_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.is_admin() { Ok(()) } else { Err(ApiError::forbidden("manage users")) }
}

/// Makes the change visible at once: no request may run on a remembered credential
/// that predates it.
fn changed(state: &AppState) {
    state.credentials().clear();
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    username: String,
    password: String,
    role: String,
    #[serde(default)]
    grants: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchUserBody {
    password: Option<String>,
    role: Option<String>,
}

/// `GET /users/me`: the caller's own account.
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    // Read afresh: a grant given since the credential was cached shows at once.
    let user = state.store().get_user(&caller.user.username).await?.unwrap_or(caller.user);
    Ok(ok(user_object(&user)))
}

/// `POST /users`: `{username, password, role, grants?}` → `201` user.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateUserBody>,
) -> Result<Response, ApiError> {
    admins_only(&caller)?;
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
    Ok(created(user_object(&user)))
}

/// `GET /users`: every user, by username.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    admins_only(&caller)?;
    let users = state.store().list_users().await?;
    Ok(ok(users.iter().map(user_object).collect::<Vec<_>>()))
}

/// `GET /users/{username}`.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    admins_only(&caller)?;
    let user = state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    Ok(ok(user_object(&user)))
}

/// `PATCH /users/{username}`: `{password?, role?}`. The role cannot change (only
/// by deleting and re-creating the user); naming the current role is accepted.
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
    JsonBody(body): JsonBody<PatchUserBody>,
) -> Result<Response, ApiError> {
    admins_only(&caller)?;
    let role = body.role.as_deref().map(parse_role).transpose()?;
    if let Some(p) = &body.password {
        check_password(p)?;
    }
    let user = state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    if let Some(role) = role
        && role != user.role
    {
        return Err(ApiError::bad_request(
            "ROLE_CHANGE_NOT_SUPPORTED",
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
        state.throttle().succeeded(&username);
    }
    let user = state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    Ok(ok(user_object(&user)))
}

/// `DELETE /users/{username}` → `204`. Deleting yourself, or the last admin, is
/// `409 CONFLICT`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    admins_only(&caller)?;
    if username == caller.user.username {
        return Err(ApiError::new(StatusCode::CONFLICT, "CONFLICT", "you cannot delete your own account")
            .with("username", username));
    }
    let _serialised = ADMIN_CHANGES.lock().await;
    let user = state.store().get_user(&username).await?.ok_or_else(|| user_not_found(&username))?;
    if user.role == Role::Admin {
        let admins = state.store().list_users().await?.iter().filter(|u| u.role == Role::Admin).count();
        if admins <= 1 {
            return Err(ApiError::new(StatusCode::CONFLICT, "CONFLICT", "the last admin cannot be deleted")
                .with("username", username));
        }
    }
    if !state.store().delete_user(&username).await? {
        return Err(user_not_found(&username));
    }
    changed(&state);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /users/{username}/grants/{index_id}` → `204`; idempotent.
pub async fn grant(
    State(state): State<AppState>,
    caller: Caller,
    Path((username, index_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admins_only(&caller)?;
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
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path((username, index_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admins_only(&caller)?;
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
    }

    #[test]
    fn roles_parse() {
        assert_eq!(parse_role("Searcher").unwrap(), Role::Searcher);
        assert_eq!(parse_role("root").unwrap_err().code, "INVALID_PARAMETER");
    }
}
