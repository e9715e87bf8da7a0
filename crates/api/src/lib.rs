//! The HTTP API of facesearch: Part 1 is the published Face Search (1:N) API, matched
//! to the letter; Part 2 manages the face databases. See `docs/API.md`.
//!
//! This crate only speaks HTTP: extractors validate input ([`extract`], [`validate`]),
//! [`auth`] decides who may do what, handlers in [`routes`] change data only through the
//! engine's `Service` (reading the store directly) and answer with the types of [`responses`] (each its own OpenAPI schema), and
//! [`error`] is the one place where failures become status codes and the error codes of
//! [`error_codes`]. The route table below is the one list of endpoints: the router and
//! the OpenAPI document ([`openapi`]) are both built from it.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod error_codes;
pub mod extract;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod responses;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod validate;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::routing::{MethodFilter, MethodRouter, on};

pub use auth::Permission;
pub use error::{ApiError, ErrorCode};
pub use server::{ServeOptions, ServerError, TlsFiles, bind, serve};
pub use state::{ApiConfig, AppState};

/// One endpoint: its method, its path template (axum syntax, `{param}`), the least
/// permission it needs, its handler, and the handler's OpenAPI description (its
/// `#[utoipa::path]`).
///
/// Every endpoint of the service is in [`route_table`] and nowhere else: [`router`]
/// builds the routes from it (and authenticates every route whose permission is not
/// [`Permission::None`], enforcing the role-only permissions before the handler
/// runs), [`openapi::document`] its paths, and `tests/authz_matrix.rs` fails for an
/// endpoint whose expected answers for every role it does not know.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
    handler: fn() -> MethodRouter<AppState>,
    doc: fn() -> openapi::RouteDoc,
}

/// The path of the Prometheus endpoint, whose permission is configurable.
pub const METRICS_PATH: &str = "/metrics";

impl RouteSpec {
    /// The permission the server enforces for this route: the table's, except that
    /// [`ApiConfig::metrics_auth`] (`--metrics-auth`) makes `/metrics` admin-only.
    pub fn permission_in(&self, config: &ApiConfig) -> Permission {
        if self.path == METRICS_PATH && config.metrics_auth { Permission::Admin } else { self.permission }
    }

    /// What the handler's `#[utoipa::path]` says of this route.
    pub fn doc(&self) -> openapi::RouteDoc {
        (self.doc)()
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

/// `METHOD "path" Permission => module::handler;`: the handler serves that method, and
/// its `#[utoipa::path]` (utoipa's `module::__path_handler`, named explicitly since a
/// declarative macro cannot make the name) describes it.
macro_rules! routes {
    ($($method:ident $path:literal $permission:ident => $module:ident::$handler:ident, $doc:ident;)*) => {
        &[$(RouteSpec {
            method: Method::$method,
            path: $path,
            permission: Permission::$permission,
            handler: || on(MethodFilter::$method, $module::$handler),
            doc: openapi::RouteDoc::of::<$module::$doc>,
        },)*]
    };
}

static ROUTES: &[RouteSpec] = {
    use routes::{audit, duplicates, health, indexes, ops, records, reembed, search, users};
    routes! {
        GET "/healthz" None => health::healthz, __path_healthz;
        GET "/readyz" None => health::readyz, __path_readyz;
        // Operations: the OpenAPI document, its interactive docs and Prometheus metrics
        // (`--metrics-auth` makes /metrics admin-only: see `RouteSpec::permission_in`).
        GET "/openapi.json" None => ops::openapi_json, __path_openapi_json;
        GET "/docs" None => ops::docs, __path_docs;
        GET "/" None => ops::root, __path_root;
        GET "/console" None => ops::console, __path_console;
        GET "/metrics" None => ops::metrics, __path_metrics;
        // Part 1: the published Face Search (1:N) API.
        GET "/face/index/details" Any => search::index_details, __path_index_details;
        POST "/face/search" Search => search::search, __path_search;
        GET "/media/file/download/{file_id}" Read => search::download, __path_download;
        // Part 2: indexes and records.
        POST "/face/index" Admin => indexes::create, __path_create;
        GET "/face/index/{index_id}" Read => indexes::get, __path_get;
        PATCH "/face/index/{index_id}" Admin => indexes::patch, __path_patch;
        DELETE "/face/index/{index_id}" Admin => indexes::delete, __path_delete;
        POST "/face/index/{index_id}/records" Write => records::enrol, __path_enrol;
        GET "/face/index/{index_id}/records" Read => records::list, __path_list;
        GET "/face/index/{index_id}/records/{record_id}" Read => records::get, __path_get;
        PATCH "/face/index/{index_id}/records/{record_id}" Write => records::patch, __path_patch;
        DELETE "/face/index/{index_id}/records/{record_id}" Write => records::delete, __path_delete;
        POST "/face/index/{index_id}/records/{record_id}/images" Write => records::add_image, __path_add_image;
        // Part 2: moving an index to another model pack.
        POST "/face/index/{index_id}/reembed" Admin => reembed::start, __path_start;
        GET "/face/index/{index_id}/reembed" Admin => reembed::get, __path_get;
        // Part 2: duplicate-identity jobs.
        POST "/face/index/{index_id}/duplicates" Review => duplicates::start, __path_start;
        GET "/face/index/{index_id}/duplicates/{job_id}" Review => duplicates::get, __path_get;
        // Part 2: users. `/users/me` is a static segment, matched before `{username}`.
        GET "/users/me" Any => users::me, __path_me;
        POST "/users" Admin => users::create, __path_create;
        GET "/users" Admin => users::list, __path_list;
        GET "/users/{username}" Admin => users::get, __path_get;
        PATCH "/users/{username}" Admin => users::patch, __path_patch;
        DELETE "/users/{username}" Admin => users::delete, __path_delete;
        PUT "/users/{username}/grants/{index_id}" Admin => users::grant, __path_grant;
        DELETE "/users/{username}/grants/{index_id}" Admin => users::revoke, __path_revoke;
        // Part 2: the audit trail.
        GET "/audit" Auditor => audit::list, __path_list;
    }
};

/// Every endpoint of the service with the least permission it needs (by default; see
/// [`RouteSpec::permission_in`]). The OpenAPI document's paths are these
/// ([`openapi::document`]).
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
        .fallback(|| async { limits::envelope_for(StatusCode::NOT_FOUND) })
        .method_not_allowed_fallback(|| async { limits::envelope_for(StatusCode::METHOD_NOT_ALLOWED) })
        .layer(DefaultBodyLimit::max(body_limit))
        // Every request's client address, for the throttle and the audit log.
        .layer(axum::middleware::from_fn_with_state(state.clone(), client::resolve))
        .with_state(state)
}
