//! Shared state of the HTTP layer.

use std::sync::Arc;

use facesearch_engine::{Engine, Service};
use facesearch_face::Pack;
use facesearch_store::Store;

use crate::admission::{self, Slots, UploadBudget};
use crate::audit::RefusalLog;
use crate::auth::{CredentialCache, LoginThrottle};
use crate::error::ApiError;
use crate::jobs::DuplicateJobs;
use crate::metrics::Metrics;
use crate::server::ServerError;

/// The default of [`ApiConfig::max_search_faces`].
pub const DEFAULT_MAX_SEARCH_FACES: usize = 10;

/// Limits and defaults of the HTTP API. The serde fields are the server's settings
/// (flat keys of `facesearch serve`); the others are given by the server from its
/// other settings (`max_image_bytes` is the pipeline's decode limit, `pack` the
/// server's pack, the request slots default from `max_in_flight`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Largest accepted image, bytes.
    #[serde(skip)]
    pub max_image_bytes: usize,
    /// Largest `max_results` a search may ask for.
    pub max_results_cap: usize,
    /// Largest page of records.
    #[serde(skip)]
    pub max_page_size: usize,
    /// The model pack this server embeds with (new indexes hold its vectors).
    #[serde(skip)]
    pub pack: Pack,
    /// `/metrics` for admins only (`--metrics-auth`); by default it needs no credentials.
    pub metrics_auth: bool,
    /// Authenticated requests handled at once; beyond it new ones get 503 at once
    /// (backpressure instead of an unbounded queue).
    pub max_in_flight: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`--trusted-proxies`);
    /// from any other peer the header is ignored (see [`crate::client`]).
    #[serde(skip)]
    pub trusted_proxies: Vec<crate::client::IpNet>,
    /// Requests in flight one user may have at once (see [`crate::admission`]).
    #[serde(skip)]
    pub max_in_flight_per_user: usize,
    /// Of `max_in_flight`, the slots only admins may take.
    #[serde(skip)]
    pub admin_reserved_slots: usize,
    /// Bytes of request bodies held in memory at once, beyond
    /// [`crate::admission::FREE_BODY_BYTES`] per request; at least one whole body
    /// ([`crate::body::limit_for`]`(max_image_bytes)`), of which room for one whole
    /// body is kept for admins (see [`crate::admission::UploadBudget`]).
    #[serde(rename = "upload_budget_bytes")]
    pub upload_budget: usize,
    /// Liveness is mandatory for everyone but admins (`--require-liveness`): a search
    /// with `perform_liveness_check=false` from a non-admin is `403 LIVENESS_REQUIRED`.
    pub require_liveness: bool,
    /// Faces of one photo a `faces=all` search analyses and searches at most
    /// (`--max-search-faces`), largest first.
    pub max_search_faces: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_image_bytes: facesearch_face::DecodeLimits::default().max_bytes,
            max_results_cap: 100,
            max_page_size: 1000,
            pack: Pack::Open,
            metrics_auth: false,
            max_in_flight: 64,
            trusted_proxies: Vec::new(),
            max_in_flight_per_user: admission::default_per_user(64),
            admin_reserved_slots: admission::default_admin_reserve(64),
            upload_budget: admission::DEFAULT_UPLOAD_BUDGET,
            require_liveness: false,
            max_search_faces: DEFAULT_MAX_SEARCH_FACES,
        }
    }
}

impl ApiConfig {
    /// Refuses settings that cannot work together, naming them: the slots reserved
    /// for admins must leave at least one of `max_in_flight` to everyone else.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.admin_reserved_slots >= self.max_in_flight {
            return Err(ServerError::Setting {
                setting: "admin_reserved_slots",
                rule: format!("less than max_in_flight ({})", self.max_in_flight),
                value: self.admin_reserved_slots.to_string(),
            });
        }
        Ok(())
    }
}

struct Inner {
    store: Arc<dyn Store>,
    service: Arc<Service>,
    config: ApiConfig,
    credentials: CredentialCache,
    throttle: LoginThrottle,
    refusals: RefusalLog,
    metrics: Arc<Metrics>,
    slots: Arc<Slots>,
    uploads: UploadBudget,
    jobs: DuplicateJobs,
}

/// Cheap to clone; the engine arrives once the models are loaded.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        Self(Arc::new(Inner {
            service: Arc::new(Service::new(store.clone())),
            store,
            credentials: CredentialCache::new(),
            throttle: LoginThrottle::new(),
            refusals: RefusalLog::new(),
            metrics: Arc::new(Metrics::new(config.pack)),
            slots: Slots::new(config.max_in_flight, config.max_in_flight_per_user, config.admin_reserved_slots),
            uploads: UploadBudget::new(
                config.upload_budget,
                crate::body::limit_for(config.max_image_bytes).saturating_sub(admission::FREE_BODY_BYTES),
                admission::UPLOAD_BUDGET_WAIT,
            ),
            jobs: DuplicateJobs::default(),
            config,
        }))
    }

    /// Slots for authenticated requests in flight (per user, with a reserve for admins).
    pub fn slots(&self) -> &Arc<Slots> {
        &self.0.slots
    }

    /// The bytes of request bodies that may be held in memory at once.
    pub fn uploads(&self) -> &UploadBudget {
        &self.0.uploads
    }

    /// The one way to change data (see `facesearch_engine::Service`); the engine
    /// arrives in it once the models are loaded.
    pub fn service(&self) -> &Arc<Service> {
        &self.0.service
    }

    /// The engine; requests needing it get 503 until the models are loaded.
    pub fn engine(&self) -> Result<&Arc<Engine>, ApiError> {
        Ok(self.0.service.engine()?)
    }

    pub fn is_ready(&self) -> bool {
        self.0.service.is_ready()
    }

    /// The store, for reads: every write goes through [`AppState::service`].
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }

    pub fn config(&self) -> &ApiConfig {
        &self.0.config
    }

    pub fn credentials(&self) -> &CredentialCache {
        &self.0.credentials
    }

    /// The server's Prometheus metrics (the engine reports into them too).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// The duplicate-identity jobs (in memory).
    pub fn jobs(&self) -> &DuplicateJobs {
        &self.0.jobs
    }

    /// Failed-login counters per username and client address.
    pub fn throttle(&self) -> &LoginThrottle {
        &self.0.throttle
    }

    /// What keeps refused requests from flooding the audit log.
    pub fn refusals(&self) -> &RefusalLog {
        &self.0.refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_that_leaves_no_slot_to_others_is_refused_by_name() {
        assert!(ApiConfig::default().validate().is_ok());
        let config = |max_in_flight, admin_reserved_slots| ApiConfig {
            max_in_flight,
            admin_reserved_slots,
            ..ApiConfig::default()
        };
        assert!(config(4, 3).validate().is_ok());
        assert!(config(1, 0).validate().is_ok(), "no reserve on one slot");
        for reserve in [4, 5] {
            let e = config(4, reserve).validate().expect_err("refused");
            assert_eq!(
                e.to_string(),
                format!("admin_reserved_slots must be less than max_in_flight (4), not {reserve}")
            );
        }
    }
}
