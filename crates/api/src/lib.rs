//! The HTTP API of facesearch: Part 1 is the published Face Search (1:N) API, matched
//! to the letter; Part 2 manages the face databases. See `docs/API.md`.
//!
//! This crate only speaks HTTP: extractors validate input ([`extract`], [`validate`]),
//! [`auth`] decides who may do what, handlers in [`routes`] call the engine or the
//! store, and [`error`] is the one place where failures become status codes and
//! error codes.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod validate;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, delete, get, patch, post, put};

pub use auth::Permission;
pub use error::ApiError;
pub use server::{ServeOptions, ServerError, TlsFiles, bind, serve};
pub use state::{ApiConfig, AppState};

/// One endpoint: its method, its path template (axum syntax, `{param}`), the least
/// permission it needs, and its handler.
///
/// Every endpoint of the service is in [`route_table`] and nowhere else: [`router`]
/// builds the routes from it (and authenticates every route whose permission is not
/// [`Permission::None`], enforcing the role-only permissions before the handler
/// runs), and `tests/authz_matrix.rs` fails for an endpoint whose expected answers
/// for every role it does not know.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
    handler: fn() -> MethodRouter<AppState>,
}

/// The path of the Prometheus endpoint, whose permission is configurable.
pub const METRICS_PATH: &str = "/metrics";

impl RouteSpec {
    /// The permission the server enforces for this route: the table's, except that
    /// [`ApiConfig::metrics_auth`] (`--metrics-auth`) makes `/metrics` admin-only.
    pub fn permission_in(&self, config: &ApiConfig) -> Permission {
        if self.path == METRICS_PATH && config.metrics_auth { Permission::Admin } else { self.permission }
    }
}

impl std::fmt::Debug for RouteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSpec")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("permission", &self.permission)
            .finish_non_exhaustive()
    }
}

macro_rules! routes {
    ($($method:ident $path:literal $permission:ident => $route:expr;)*) => {
        &[$(RouteSpec {
            method: Method::$method,
            path: $path,
            permission: Permission::$permission,
            handler: || $route,
        },)*]
    };
}

static ROUTES: &[RouteSpec] = {
    use routes::{audit, duplicates, health, indexes, ops, records, reembed, search, users};
    routes! {
        GET "/healthz" None => get(health::healthz);
        GET "/readyz" None => get(health::readyz);
        // Operations: the OpenAPI document, its interactive docs and Prometheus metrics
        // (`--metrics-auth` makes /metrics admin-only: see `RouteSpec::permission_in`).
        GET "/openapi.json" None => get(ops::openapi_json);
        GET "/docs" None => get(ops::docs);
        GET "/" None => get(ops::root);
        GET "/console" None => get(ops::console);
        GET "/metrics" None => get(ops::metrics);
        // Part 1: the published Face Search (1:N) API.
        GET "/face/index/details" Any => get(search::index_details);
        POST "/face/search" Search => post(search::search);
        GET "/media/file/download/{file_id}" Read => get(search::download);
        // Part 2: indexes and records.
        POST "/face/index" Admin => post(indexes::create);
        GET "/face/index/{index_id}" Read => get(indexes::get);
        PATCH "/face/index/{index_id}" Admin => patch(indexes::patch);
        DELETE "/face/index/{index_id}" Admin => delete(indexes::delete);
        POST "/face/index/{index_id}/records" Write => post(records::enrol);
        GET "/face/index/{index_id}/records" Read => get(records::list);
        GET "/face/index/{index_id}/records/{record_id}" Read => get(records::get);
        PATCH "/face/index/{index_id}/records/{record_id}" Write => patch(records::patch);
        DELETE "/face/index/{index_id}/records/{record_id}" Write => delete(records::delete);
        POST "/face/index/{index_id}/records/{record_id}/images" Write => post(records::add_image);
        // Part 2: moving an index to another model pack.
        POST "/face/index/{index_id}/reembed" Admin => post(reembed::start);
        GET "/face/index/{index_id}/reembed" Admin => get(reembed::get);
        // Part 2: duplicate-identity jobs.
        POST "/face/index/{index_id}/duplicates" Review => post(duplicates::start);
        GET "/face/index/{index_id}/duplicates/{job_id}" Review => get(duplicates::get);
        // Part 2: users. `/users/me` is a static segment, matched before `{username}`.
        GET "/users/me" Any => get(users::me);
        POST "/users" Admin => post(users::create);
        GET "/users" Admin => get(users::list);
        GET "/users/{username}" Admin => get(users::get);
        PATCH "/users/{username}" Admin => patch(users::patch);
        DELETE "/users/{username}" Admin => delete(users::delete);
        PUT "/users/{username}/grants/{index_id}" Admin => put(users::grant);
        DELETE "/users/{username}/grants/{index_id}" Admin => delete(users::revoke);
        // Part 2: the audit trail.
        GET "/audit" Auditor => get(audit::list);
    }
};

/// Every endpoint of the service with the least permission it needs (by default; see
/// [`RouteSpec::permission_in`]). Every one is documented in the OpenAPI document
/// ([`openapi::ApiDoc`]); `tests/openapi.rs` fails for one that is not.
pub fn route_table() -> &'static [RouteSpec] {
    ROUTES
}

/// Every route of the service, built from [`route_table`].
pub fn router(state: AppState) -> Router {
    let body_limit = body::limit_for(state.config().max_image_bytes);
    let mut router = Router::new();
    for spec in route_table() {
        // Layers run outermost (added last) first: the audit of refusals, then
        // authentication, then reading the body, then the user-change audit, then the
        // handler.
        let mut route = (spec.handler)();
        if spec.path.starts_with("/users") && spec.method != "GET" {
            route = route.route_layer(axum::middleware::from_fn_with_state(state.clone(), audit::user_change));
        }
        route = route.route_layer(axum::middleware::from_fn_with_state(state.clone(), body::read_body));
        let permission = spec.permission_in(state.config());
        if permission != Permission::None {
            route = route.route_layer(axum::middleware::from_fn_with_state((state.clone(), permission), auth::require));
            route = route.route_layer(axum::middleware::from_fn_with_state(state.clone(), audit::refusals));
        }
        // Routes of one path with different methods merge into one method router.
        router = router.route(spec.path, route);
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "this endpoint does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        // Every request's client address, for the throttle and the audit log.
        .layer(axum::middleware::from_fn_with_state(state.clone(), client::resolve))
        .with_state(state)
}
