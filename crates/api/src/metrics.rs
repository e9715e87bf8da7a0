//! Prometheus metrics, served at `GET /metrics` in the text exposition format 0.0.4.
//!
//! * `facesearch_http_requests_total{route,method,status}` and
//!   `facesearch_http_request_duration_seconds{route,method}`: every request, labelled
//!   with the route template (never the concrete path: ids and query strings stay out);
//!   requests that match no route are `route="unmatched"`.
//! * `facesearch_pipeline_stage_duration_seconds{analysis,stage}`: the face pipeline's
//!   stages (`decode`, `detect`, `align_embed`, `liveness`) per analysed photo, for
//!   searches and enrolments; `facesearch_vector_search_duration_seconds`: the
//!   in-memory vector scan of a search.
//! * `facesearch_liveness_rejections_total{outcome}`: `spoof` or `cannot_judge`.
//! * `facesearch_index_faces{index_id}` (vectors in memory; absent on PostgreSQL) and
//!   `facesearch_index_records{index_id}` (records in the store), read at scrape time.
//! * `facesearch_model_pack_info{pack,detector,embedder,liveness,dimension}`,
//!   `facesearch_build_info{version}` and `facesearch_ready` (models loaded).
//!
//! The registry belongs to the server (no process-global state); the engine reports
//! its timings through [`EngineObserver`].

use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use facesearch_engine::{Analysis, EngineObserver, LivenessRefusal};
use facesearch_face::{Pack, StageTimings};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `route` label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    analysis: &'static str,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IndexLabels {
    index_id: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 1 ms to about 65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn stage_histogram() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    stage_duration: HistogramFamily<StageLabels>,
    vector_search: Histogram,
    liveness_rejections: Family<OutcomeLabels, Counter>,
    index_faces: Family<IndexLabels, Gauge>,
    index_records: Family<IndexLabels, Gauge>,
    ready: Gauge,
    /// One scrape at a time refreshes the per-index gauges and encodes.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A method label of bounded cardinality.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    pub fn new(pack: Pack) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "facesearch_http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let request_duration: HistogramFamily<RouteLabels> = Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "facesearch_http_request_duration",
            "Time from receiving a request to sending its response headers, by route template and method",
            Unit::Seconds,
            request_duration.clone(),
        );
        let stage_duration: HistogramFamily<StageLabels> = Family::new_with_constructor(stage_histogram);
        registry.register_with_unit(
            "facesearch_pipeline_stage_duration",
            "Time of each face pipeline stage (decode, detect, align_embed, liveness) per analysed photo, \
             for searches and enrolments",
            Unit::Seconds,
            stage_duration.clone(),
        );
        // 50 µs to about 1.6 s.
        let vector_search = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register_with_unit(
            "facesearch_vector_search_duration",
            "Time of the in-memory vector search of one query",
            Unit::Seconds,
            vector_search.clone(),
        );
        let liveness_rejections = Family::<OutcomeLabels, Counter>::default();
        for outcome in [LivenessRefusal::Spoof, LivenessRefusal::CannotJudge] {
            // Present from the start (at 0), so that rate() and alerts work at once.
            liveness_rejections.get_or_create_owned(&OutcomeLabels { outcome: outcome.as_str() });
        }
        registry.register(
            "facesearch_liveness_rejections",
            "Search probes refused by the liveness check, by outcome (spoof, cannot_judge)",
            liveness_rejections.clone(),
        );
        let index_faces = Family::<IndexLabels, Gauge>::default();
        registry.register(
            "facesearch_index_faces",
            "Face vectors held in memory for searching, per index (the gallery size)",
            index_faces.clone(),
        );
        let index_records = Family::<IndexLabels, Gauge>::default();
        registry.register("facesearch_index_records", "Records in the store, per index", index_records.clone());
        let files = pack.files();
        let name = |i: usize| files.get(i).map_or_else(String::new, |f| f.name.to_string());
        registry.register(
            "facesearch_model_pack",
            "The model pack this server runs",
            Info::new(vec![
                ("pack".to_string(), pack.name().to_string()),
                ("detector".to_string(), name(0)),
                ("embedder".to_string(), name(1)),
                ("liveness".to_string(), name(2)),
                ("dimension".to_string(), pack.dimension().to_string()),
            ]),
        );
        registry.register(
            "facesearch_build",
            "The facesearch version",
            Info::new(vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        );
        let ready = Gauge::default();
        registry.register(
            "facesearch_ready",
            "1 once the face models are loaded and search is possible",
            ready.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            stage_duration,
            vector_search,
            liveness_rejections,
            index_faces,
            index_records,
            ready,
            scrape: Mutex::new(()),
        }
    }

    /// Counts one answered request.
    pub fn observe_request(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.requests.get_or_create(&RequestLabels { route: route.to_string(), method, status }).inc();
        self.request_duration
            .get_or_create(&RouteLabels { route: route.to_string(), method })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text, with the per-index gauges and readiness read now.
    pub async fn render(&self, state: &crate::AppState) -> String {
        let engine = state.engine().ok();
        let indexes = match state.store().list_indexes().await {
            Ok(list) => Some(list),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: could not list the indexes");
                None
            }
        };
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.ready.set(i64::from(engine.is_some()));
        self.index_faces.clear();
        self.index_records.clear();
        for index in indexes.iter().flatten() {
            let labels = IndexLabels { index_id: index.id.clone() };
            self.index_records.get_or_create(&labels).set(i64::try_from(index.record_count).unwrap_or(i64::MAX));
            // Searched in the database (PostgreSQL), no vectors are held in memory.
            if let Some(engine) = engine.filter(|e| e.index_origin() != facesearch_engine::IndexOrigin::Database) {
                let faces = engine.vectors_in(&index.id);
                self.index_faces.get_or_create(&labels).set(i64::try_from(faces).unwrap_or(i64::MAX));
            }
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "could not encode the metrics");
        }
        text
    }
}

impl EngineObserver for Metrics {
    fn photo_analysed(&self, analysis: Analysis, timings: &StageTimings) {
        let analysis = analysis.as_str();
        let stage = |stage: &'static str, d: Duration| {
            self.stage_duration.get_or_create(&StageLabels { analysis, stage }).observe(d.as_secs_f64());
        };
        stage("decode", timings.decode);
        stage("detect", timings.detect);
        stage("align_embed", timings.align_embed);
        // Liveness runs for search probes that ask for it; a zero means it did not run.
        if !timings.liveness.is_zero() {
            stage("liveness", timings.liveness);
        }
    }

    fn vectors_searched(&self, elapsed: Duration) {
        self.vector_search.observe(elapsed.as_secs_f64());
    }

    fn liveness_refused(&self, refusal: LivenessRefusal) {
        self.liveness_rejections.get_or_create(&OutcomeLabels { outcome: refusal.as_str() }).inc();
    }
}

/// Middleware (added with `Router::layer`, so that the matched route is known): counts
/// and times every request by route template, method and status.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.observe_request(
        route.as_deref().unwrap_or(UNMATCHED),
        &method,
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_documented_names() {
        let m = Metrics::new(Pack::Open);
        m.observe_request("/face/search", &Method::POST, 200, Duration::from_millis(12));
        m.photo_analysed(
            Analysis::Search,
            &StageTimings {
                decode: Duration::from_millis(1),
                detect: Duration::from_millis(2),
                align_embed: Duration::from_millis(3),
                liveness: Duration::from_millis(4),
                ..StageTimings::default()
            },
        );
        m.vectors_searched(Duration::from_micros(80));
        m.liveness_refused(LivenessRefusal::Spoof);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &m.registry).unwrap();
        for needle in [
            "# TYPE facesearch_http_requests_total counter",
            "facesearch_http_requests_total{route=\"/face/search\",method=\"POST\",status=\"200\"} 1",
            "# TYPE facesearch_http_request_duration_seconds histogram",
            "facesearch_http_request_duration_seconds_count{route=\"/face/search\",method=\"POST\"} 1",
            "facesearch_pipeline_stage_duration_seconds_count{analysis=\"search\",stage=\"liveness\"} 1",
            "facesearch_vector_search_duration_seconds_count 1",
            "facesearch_liveness_rejections_total{outcome=\"spoof\"} 1",
            "facesearch_liveness_rejections_total{outcome=\"cannot_judge\"} 0",
            "facesearch_model_pack_info{pack=\"open\",",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "0.0.4 has no EOF marker");
    }
}
