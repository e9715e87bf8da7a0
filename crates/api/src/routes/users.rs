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
use serde::Deserialize;

use super::{created, ok};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{JsonBody, Path};
use crate::openapi::TAG_USERS;
use crate::responses::{AuthErrors, ErrorBody, ServerErrors, UserListResponse, UserObject, UserResponse};
use crate::state::AppState;

pub fn user_not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::UserNotFound, format!("no user named {name:?}"))
        .with(|d| d.username = Some(name.to_string()))
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
    let made = state.service().create_user(&body.username, &body.password, &body.role, body.grants).await;
    // Also after a failure: a user made and removed again (a grant's index deleted
    // meanwhile) must not linger in the cache.
    changed(&state);
    Ok(created(UserObject::from(&made?)))
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
    let user = state.service().update_user(&username, body.password.as_deref(), body.role.as_deref()).await?;
    if body.password.is_some() {
        changed(&state);
        // The old password's failures say nothing about the new one.
        state.throttle().forget_user(&username);
    }
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
    // Not oneself, nor the last admin (the store's rule, in the delete's transaction).
    state.service().delete_user(Some(&caller.user.username), &username).await?;
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
    state.service().grant(&username, &index_id).await?;
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
    let revoked = state.service().revoke(&username, &index_id).await;
    changed(&state);
    revoked?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
