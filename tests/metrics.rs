//! Prometheus metrics (`GET /metrics`) and the request log of a running server:
//! after an enrolment and searches, the counters, the latency histogram of
//! `/face/search`, the pipeline stage timings and the gallery size are there, labelled
//! by route template (never a concrete id or query string); `--metrics-auth` makes the
//! endpoint admin-only; `--log-json` writes one JSON line per request with its request
//! id, and no credentials, personal data or query strings.

mod common;

use common::{ADMIN_PASSWORD, ADMIN_USER, Resp, Server, ServerOptions, lfw_photos, temp_dir};
use serde_json::{Value, json};

fn scrape(s: &Server) -> Resp {
    let r = s.send("GET /metrics", s.http().get(s.url("/metrics")));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    r
}

/// The value of the sample `series` (`name{labels}` exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[track_caller]
fn at_least(text: &str, series: &str, min: f64) -> f64 {
    let v = sample(text, series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"));
    assert!(v >= min, "{series} is {v}, expected at least {min}");
    v
}

#[test]
fn metrics_show_requests_stages_and_gallery_sizes() {
    let s = Server::start();
    let photos = lfw_photos("Jiang_Zemin");
    let index = s.create_index_id("metrics-gallery");
    let record = s.enrol_ok(&index, &photos[0], &[("name", "Metrics Person"), ("reference", "m-1")]);
    let record_id = record["record_id"].as_str().expect("record id").to_string();
    let matches = s.search_ok(&[&index], &photos[1], &[("perform_liveness_check", "false"), ("min_match_score", "0")]);
    assert_eq!(matches.len(), 1, "{matches:?}");
    // With liveness: judged or refused, either way the liveness stage ran.
    let live = s.search(&[&index], &photos[1], &[("perform_liveness_check", "true")]);
    assert!(matches!(live.status, 200 | 422), "{}", live.text);
    // A refusal and an unknown path are counted too.
    s.search(&["no-such-index"], &photos[1], &[]).err(404, "INDEX_NOT_FOUND");
    s.get("/no/such/endpoint").err(404, "NOT_FOUND");

    let r = scrape(&s);
    let text = r.text.as_str();
    // Request counters and latency by route template.
    at_least(text, r#"facesearch_http_requests_total{route="/face/search",method="POST",status="200"}"#, 1.0);
    at_least(text, r#"facesearch_http_requests_total{route="/face/search",method="POST",status="404"}"#, 1.0);
    at_least(
        text,
        r#"facesearch_http_requests_total{route="/face/index/{index_id}/records",method="POST",status="201"}"#,
        1.0,
    );
    at_least(text, r#"facesearch_http_requests_total{route="unmatched",method="GET",status="404"}"#, 1.0);
    assert!(text.contains("# TYPE facesearch_http_request_duration_seconds histogram"), "{text}");
    let searches =
        at_least(text, r#"facesearch_http_request_duration_seconds_count{route="/face/search",method="POST"}"#, 3.0);
    at_least(
        text,
        r#"facesearch_http_request_duration_seconds_bucket{route="/face/search",method="POST",le="+Inf"}"#,
        searches,
    );
    at_least(text, r#"facesearch_http_request_duration_seconds_sum{route="/face/search",method="POST"}"#, 0.0);
    // Pipeline stages, for searches and enrolments, and the vector search.
    for stage in ["decode", "detect", "align_embed"] {
        at_least(
            text,
            &format!(r#"facesearch_pipeline_stage_duration_seconds_count{{analysis="search",stage="{stage}"}}"#),
            2.0,
        );
        at_least(
            text,
            &format!(r#"facesearch_pipeline_stage_duration_seconds_count{{analysis="enrol",stage="{stage}"}}"#),
            1.0,
        );
    }
    at_least(text, r#"facesearch_pipeline_stage_duration_seconds_count{analysis="search",stage="liveness"}"#, 1.0);
    assert!(
        sample(text, r#"facesearch_pipeline_stage_duration_seconds_count{analysis="enrol",stage="liveness"}"#)
            .is_none(),
        "enrolment runs no liveness check"
    );
    at_least(text, "facesearch_vector_search_duration_seconds_count", 1.0);
    // Liveness rejections by outcome, present even at zero.
    at_least(text, r#"facesearch_liveness_rejections_total{outcome="spoof"}"#, 0.0);
    at_least(text, r#"facesearch_liveness_rejections_total{outcome="cannot_judge"}"#, 0.0);
    // Gallery size from the in-memory index, and records from the store.
    assert_eq!(sample(text, &format!(r#"facesearch_index_faces{{index_id="{index}"}}"#)), Some(1.0), "{text}");
    assert_eq!(sample(text, &format!(r#"facesearch_index_records{{index_id="{index}"}}"#)), Some(1.0));
    // The model pack and readiness.
    assert!(
        text.lines().any(|l| l.starts_with(r#"facesearch_model_pack_info{pack="open","#) && l.ends_with(" 1")),
        "{text}"
    );
    assert_eq!(sample(text, "facesearch_ready"), Some(1.0));
    // Route templates only: no concrete ids, no query strings in the request metrics.
    for line in text.lines().filter(|l| l.starts_with("facesearch_http_")) {
        assert!(!line.contains(&index) && !line.contains(&record_id), "a concrete id in {line}");
        assert!(!line.contains('?') && !line.contains("perform_liveness_check"), "a query string in {line}");
    }

    // Another image grows the gallery; deleting the index removes its series.
    s.add_image(&index, &record_id, &photos[2]).ok(201);
    let text = scrape(&s).text;
    assert_eq!(sample(&text, &format!(r#"facesearch_index_faces{{index_id="{index}"}}"#)), Some(2.0));
    assert_eq!(s.delete(&format!("/face/index/{index}")).status, 204);
    let text = scrape(&s).text;
    assert!(!text.contains(&index), "the deleted index is still reported");
}

#[test]
fn metrics_auth_makes_metrics_admin_only() {
    let s = Server::start_with(ServerOptions::default().args(&["--metrics-auth"]));
    let anonymous = s.send("GET /metrics", s.http().get(s.url("/metrics")));
    anonymous.err(401, "UNAUTHORIZED");
    assert_eq!(anonymous.header("www-authenticate"), Some("Basic realm=\"facesearch\""));
    s.post_json("/users", &json!({"username": "scraper", "password": "scraper-Password-1", "role": "searcher"}))
        .ok(201);
    let searcher = s.send(
        "GET /metrics as searcher",
        s.http().get(s.url("/metrics")).basic_auth("scraper", Some("scraper-Password-1")),
    );
    searcher.err(403, "FORBIDDEN");
    let admin =
        s.send("GET /metrics as admin", s.http().get(s.url("/metrics")).basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD)));
    assert_eq!(admin.status, 200, "{}", admin.text);
    assert!(admin.text.contains("facesearch_http_requests_total"), "{}", admin.text);
    // The health checks and the documentation stay public.
    assert_eq!(s.send("GET /healthz", s.http().get(s.url("/healthz"))).status, 200);
    assert_eq!(s.send("GET /openapi.json", s.http().get(s.url("/openapi.json"))).status, 200);
}

#[test]
fn requests_are_logged_as_json_lines_with_request_ids_and_no_personal_data() {
    let dir = temp_dir();
    let log = dir.path().join("server.log");
    let s = Server::start_with(
        ServerOptions::default().args(&["--log-json"]).env("FACESEARCH_LOG", "info,ort=error").stderr_to(&log),
    );
    let photos = lfw_photos("Jiang_Zemin");
    let index = s.create_index_id("log-gallery");
    let record = s.enrol_ok(&index, &photos[0], &[("name", "Loggable Person"), ("id_no", "ID-SECRET-77")]);
    let record_id = record["record_id"].as_str().expect("record id").to_string();
    let request_id = "e2e-log-check-0001";
    let form = reqwest::blocking::multipart::Form::new()
        .part("source_image", common::file_part(&photos[1]))
        .text("target_index_ids", index.clone());
    let r = s.send(
        "POST /face/search with a request id",
        common::with_form(
            s.http()
                .post(s.url("/face/search?perform_liveness_check=false"))
                .basic_auth(ADMIN_USER, Some(ADMIN_PASSWORD))
                .header("x-request-id", request_id),
            form,
        ),
    );
    r.ok(200);
    assert_eq!(r.header("x-request-id"), Some(request_id));
    s.get(&format!("/face/index/{index}/records/{record_id}")).ok(200);
    // A failed login is logged (as such) within its request's span.
    let bad = s.send(
        "GET /users/me with a wrong password",
        s.http().get(s.url("/users/me")).basic_auth(ADMIN_USER, Some("wrong-password-xyz")),
    );
    assert_eq!(bad.status, 401);
    drop(s); // flushes and closes the log

    let text = std::fs::read_to_string(&log).expect("reading the server log");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}")))
        .collect();
    let requests: Vec<&Value> = lines.iter().filter(|l| l["fields"]["message"] == "request answered").collect();
    assert!(requests.len() >= 5, "too few request lines:\n{text}");
    for line in &requests {
        let span = &line["span"];
        assert!(span["method"].is_string() && span["route"].is_string(), "{line}");
        assert!(span["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
        assert!(line["fields"]["status"].is_u64() && line["fields"]["latency_ms"].is_number(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
    }
    let search = requests
        .iter()
        .find(|l| l["span"]["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no line for request {request_id}:\n{text}"));
    assert_eq!(search["span"]["route"], "/face/search");
    assert_eq!(search["span"]["method"], "POST");
    assert_eq!(search["fields"]["status"], 200);
    assert!(
        requests.iter().any(|l| l["span"]["route"] == "/face/index/{index_id}/records/{record_id}"),
        "the record read is not logged by its template:\n{text}"
    );
    // Exactly one line per request.
    assert_eq!(requests.iter().filter(|l| l["span"]["request_id"] == request_id).count(), 1);
    // No credentials, personal data, ids in paths or query strings anywhere in the log.
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN_USER}:{ADMIN_PASSWORD}"));
    for secret in [
        ADMIN_PASSWORD,
        "wrong-password-xyz",
        basic.as_str(),
        "Loggable Person",
        "ID-SECRET-77",
        "perform_liveness_check",
        record_id.as_str(),
        index.as_str(),
    ] {
        assert!(!text.contains(secret), "the log contains {secret:?}:\n{text}");
    }
}
