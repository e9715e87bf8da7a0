//! The OpenAPI 3.1 document of the service, served at `GET /openapi.json`, and the
//! interactive documentation page served at `GET /docs`.
//!
//! Nothing here is a second description of the contract: the paths are those of
//! [`crate::route_table`], each described by its handler's `#[utoipa::path]`; the
//! schemas are generated from the types the handlers answer with
//! ([`crate::responses`]); the error codes, their statuses and meanings are the table
//! of [`crate::error_codes`]. The tests at the bottom hold sample answers of every
//! response type to their schemas, field by field and type by type.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error_codes::ErrorCode;
use crate::responses::error::error_response;

pub mod conformance;
use crate::responses::{ErrorBody, ErrorObject};

/// Tags: the groups of operations in the document and on `/docs`.
pub const TAG_SEARCH: &str = "Face search";
pub const TAG_INDEXES: &str = "Indexes";
pub const TAG_RECORDS: &str = "Records";
pub const TAG_USERS: &str = "Users";
pub const TAG_AUDIT: &str = "Audit";
pub const TAG_OPERATIONS: &str = "Operations";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "facesearch",
        description = "Self-hosted face search (1:N). Part 1 (tag \"Face search\") is the published Face Search \
                       (1:N) API, matched field for field; the rest manages the face databases, users and the audit \
                       log. Success bodies are `{\"response\": …}`; errors are `{\"error\": {\"code\": …, \
                       \"message\": …, …}}`, every one of them (a request that is not valid HTTP is \
                       `400 MALFORMED_REQUEST`). See docs/API.md for the full reference.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    // No `paths(...)`: the paths are the route table's (`document`).
    components(schemas(ErrorBody, ErrorObject, ErrorCode)),
    tags(
        (name = TAG_SEARCH, description = "Part 1: the published Face Search (1:N) API."),
        (name = TAG_INDEXES, description = "Face databases (indexes)."),
        (name = TAG_RECORDS, description = "Enrolled people (records) of an index and their images."),
        (name = TAG_USERS, description = "Users, roles and per-index grants."),
        (name = TAG_AUDIT, description = "The append-only audit log."),
        (name = TAG_OPERATIONS, description = "Health, readiness, metrics and this documentation."),
    )
)]
pub struct ApiDoc;

/// The OpenAPI side of one route of the table: what its handler's `#[utoipa::path]`
/// says, and the schemas its answers name.
pub struct RouteDoc {
    pub path: String,
    pub methods: Vec<HttpMethod>,
    pub operation: Operation,
    pub schemas: Vec<(String, RefOr<Schema>)>,
}

impl RouteDoc {
    /// The description of the handler whose `#[utoipa::path]` made `P`.
    ///
    /// utoipa's `OpenApi` derive does the same for the handlers listed in its
    /// `paths(...)`, through the same two traits of `utoipa::__dev` (hidden, but what its
    /// own derive and utoipa-axum use): the handler's tags are kept apart from its
    /// operation, and the schemas it names are listed by `SchemaReferences`.
    pub fn of<P>() -> Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences + utoipa::__dev::Tags<'static>,
    {
        let mut operation = P::operation();
        operation.tags.get_or_insert_with(Vec::new).extend(P::tags().into_iter().map(str::to_string));
        let mut schemas = Vec::new();
        P::schemas(&mut schemas);
        Self { path: P::path(), methods: P::methods(), operation, schemas }
    }
}

/// The document: [`ApiDoc`] with the paths of the route table, the schemas their
/// answers name, the security scheme and the answers to an oversized request head.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let mut schemas = Vec::new();
    for spec in crate::route_table() {
        let route = spec.doc();
        doc.paths.add_path_operation(&route.path, route.methods, route.operation);
        schemas.extend(route.schemas);
    }
    doc.components.get_or_insert_with(Default::default).schemas.extend(schemas);
    let modifiers: [&dyn Modify; 3] = [&BasicAuth, &RequestHeadErrors, &ErrorCodeTable];
    for modifier in modifiers {
        modifier.modify(&mut doc);
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// Describes the `ErrorCode` schema with the code table: status and meaning of each.
struct ErrorCodeTable;

impl Modify for ErrorCodeTable {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let schemas = &mut openapi.components.get_or_insert_with(Default::default).schemas;
        if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(ErrorCode::name().as_ref()) {
            object.description = Some(crate::error_codes::markdown_table());
        }
    }
}

/// Adds the `basic_auth` security scheme that the operations name.
struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic_auth", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
    }
}

/// Adds to every operation the answers to a request head over the limits, which any
/// endpoint may give before its handler runs: `414 URI_TOO_LONG` and
/// `431 HEADERS_TOO_LARGE` (a request that is not HTTP at all is `400 MALFORMED_REQUEST`,
/// said in the document's description).
struct RequestHeadErrors;

impl Modify for RequestHeadErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let uri = format!(
            "`URI_TOO_LONG`: the URL (path and query string) is longer than {} KiB.",
            crate::limits::MAX_URI_BYTES / 1024
        );
        let head = format!(
            "`HEADERS_TOO_LARGE`: more than {} request headers, or more than {} KiB of them.",
            crate::limits::MAX_HEADERS,
            crate::limits::MAX_HEADER_BYTES / 1024
        );
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                responses.entry("414".into()).or_insert_with(|| error_response(&uri, &[]));
                responses.entry("431".into()).or_insert_with(|| error_response(&head, &[]));
            }
        }
    }
}

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        document().to_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "could not serialise the OpenAPI document");
            "{}".to_string()
        })
    })
}

/// The interactive documentation page: plain HTML and JavaScript, no external resources.
pub const DOCS_HTML: &str = include_str!("docs.html");

/// The `/docs` page's own Content-Security-Policy: its inline script and style, and
/// requests to this server only (the global policy is `default-src 'none'`).
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                            connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn docs_response() -> Response {
    html_page(DOCS_HTML, DOCS_CSP)
}

/// A self-contained HTML page under its own Content-Security-Policy.
fn html_page(html: &'static str, csp: &'static str) -> Response {
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], html).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    response
}

/// The web console: one self-contained page of plain HTML, CSS and JavaScript that
/// uses the JSON API with credentials typed into the page.
pub const CONSOLE_HTML: &str = include_str!("console.html");

/// The console's own Content-Security-Policy: its inline script and style, images from
/// `data:` and `blob:` URLs (enrolled images and the probe photo), requests to this
/// server only.
pub const CONSOLE_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; \
                               img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                               frame-ancestors 'none'";

pub fn console_response() -> Response {
    html_page(CONSOLE_HTML, CONSOLE_CSP)
}

// ---------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------

/// `multipart/form-data` of `POST /face/search`.
// The request forms are read part by part (`crate::extract::Form`), not deserialised:
// these three types are their documentation only.
#[derive(Debug, ToSchema)]
pub struct SearchForm {
    /// The photo (JPEG, PNG, WebP, BMP, GIF, TIFF, ICO, PGM/PPM); the largest face is searched.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub source_image: Vec<u8>,
    /// Comma-separated index ids (at most 100).
    pub target_index_ids: String,
    /// 0–100, default 70.
    #[schema(minimum = 0, maximum = 100, default = 70)]
    pub min_match_score: Option<f64>,
    /// 1 to the server's cap (`--max-results-cap`, default 100), default 5.
    #[schema(minimum = 1, default = 5)]
    pub max_results: Option<u32>,
}

/// `multipart/form-data` of `POST /face/index/{index_id}/records`.
#[derive(Debug, ToSchema)]
pub struct EnrolForm {
    /// The photo; it must show one clear face.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
    pub name: Option<String>,
    /// `YYYY-MM-DD`.
    pub dob: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub nationality: Option<String>,
    pub gender: Option<String>,
    pub id_no: Option<String>,
    pub address: Option<String>,
    /// Comma-separated categories.
    pub watch_list: Option<String>,
    pub additional_info: Option<String>,
    /// The client's own id, unique per index: enrolling it again returns the existing record.
    pub reference: Option<String>,
}

/// `multipart/form-data` of `POST /face/index/{index_id}/records/{record_id}/images`.
#[derive(Debug, ToSchema)]
pub struct ImageForm {
    /// Another photo of the person; it must show one clear face.
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
}

#[cfg(test)]
mod tests;
