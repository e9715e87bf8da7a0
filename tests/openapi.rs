//! The OpenAPI document (`GET /openapi.json`) and the interactive docs (`GET /docs`)
//! of a running server: every route of `facesearch_api::route_table()` is documented
//! (so a new endpoint cannot be left out), with the security its permission implies
//! and error responses of the `{"error": {…}}` shape; the Part 1 response schemas carry
//! the published field names; the server's answers are their documented schemas, type
//! by type; `/docs` is a self-contained page with its own CSP.

mod common;

use std::collections::BTreeSet;
use std::sync::OnceLock;

use common::Server;
use facesearch_api::Permission;
use facesearch_api::openapi::conformance;
use serde_json::Value;

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(Server::start)
}

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let s = server();
        // No credentials: the document is public.
        let r = s.send("GET /openapi.json", s.http().get(s.url("/openapi.json")));
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"));
        assert!(r.json.is_object(), "not JSON: {}", r.text);
        r.json.clone()
    })
}

/// Follows `$ref`s into `components/schemas`; a `$ref` to nothing fails the test.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    let resolved = conformance::resolve(doc, schema);
    assert!(resolved.is_object(), "{schema} resolves to nothing (a dangling $ref or a cycle)");
    resolved
}

/// The properties of an object schema, with those of its `allOf` parts.
fn property_names(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let names: BTreeSet<String> = conformance::object_fields(doc, schema).0.into_keys().collect();
    assert!(!names.is_empty(), "schema without properties: {schema}");
    names
}

/// Asserts that the body of `r` is what the document says `method path` answers with
/// `r`'s status: every field documented, every required one sent, each of its type.
#[track_caller]
fn assert_documented(doc: &Value, path: &str, method: &str, r: &common::Resp) {
    let status = r.status.to_string();
    let schema = &doc["paths"][path][method]["responses"][status.as_str()]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} does not document a JSON {status}: {}", r.text);
    let out = conformance::departures(doc, schema, &r.json, &format!("{method} {path} {status}"));
    assert!(out.is_empty(), "{}\n{}", r.text, out.join("\n"));
}

/// The schema of `response` in the JSON body of an operation's response.
fn response_payload<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    let body = &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"];
    assert!(body.is_object(), "{method} {path} {status} has no JSON body schema");
    let envelope = resolve(doc, body);
    let payload = &envelope["properties"]["response"];
    assert!(payload.is_object(), "{method} {path} {status}: the body is not {{\"response\": …}}");
    assert!(
        envelope["required"].as_array().is_some_and(|r| r.iter().any(|f| f == "response")),
        "{method} {path} {status}: `response` is not required"
    );
    payload
}

#[test]
fn every_route_in_the_table_is_documented() {
    let doc = document();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "not OpenAPI 3.1: {}", doc["openapi"]);
    let paths = doc["paths"].as_object().expect("paths");
    let mut missing = Vec::new();
    for spec in facesearch_api::route_table() {
        let method = spec.method.as_str().to_ascii_lowercase();
        if paths.get(spec.path).is_none_or(|item| item.get(&method).is_none()) {
            missing.push(format!("{} {}", spec.method, spec.path));
        }
    }
    assert!(missing.is_empty(), "routes missing from /openapi.json: {missing:?}");
    // And nothing is documented that the server does not serve.
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            if !["get", "put", "post", "patch", "delete", "head", "options"].contains(&method.as_str()) {
                continue;
            }
            assert!(
                facesearch_api::route_table()
                    .iter()
                    .any(|s| s.path == path && s.method.as_str().eq_ignore_ascii_case(method)),
                "/openapi.json documents {method} {path}, which the route table does not have"
            );
        }
    }
    // Operation ids are unique (clients generate method names from them).
    let mut ids = BTreeSet::new();
    for item in paths.values() {
        for op in item.as_object().expect("path item").values() {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            }
        }
    }
}

#[test]
fn security_and_errors_follow_the_route_table() {
    let doc = document();
    assert_eq!(doc["components"]["securitySchemes"]["basic_auth"]["type"], "http");
    assert_eq!(doc["components"]["securitySchemes"]["basic_auth"]["scheme"], "basic");
    for spec in facesearch_api::route_table() {
        let what = format!("{} {}", spec.method, spec.path);
        let op = &doc["paths"][spec.path][spec.method.as_str().to_ascii_lowercase()];
        let security: Vec<&Value> = op["security"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
        let basic = security.iter().any(|s| s.get("basic_auth").is_some());
        let anonymous = security.is_empty() || security.iter().any(|s| s.as_object().is_some_and(|o| o.is_empty()));
        let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what}: no responses"));
        // `GET /` answers a redirect to the console.
        assert!(responses.keys().any(|k| k.starts_with('2') || k.starts_with('3')), "{what}: no success response");
        if spec.permission == Permission::None {
            assert!(anonymous, "{what} needs no credentials but is documented as needing them");
        } else {
            assert!(basic && !anonymous, "{what} needs credentials but its security is {security:?}");
        }
        if basic {
            assert!(responses.contains_key("401"), "{what}: 401 is not documented");
        }
        // A download the caller may not read is a 404, never a 403 (docs/API.md).
        let refuses_with_404 = spec.path == "/media/file/download/{file_id}";
        if spec.permission != Permission::None && spec.permission != Permission::Any && !refuses_with_404 {
            assert!(responses.contains_key("403"), "{what}: 403 is not documented");
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{what} {status}: the error body is not the ErrorBody schema"
                );
                assert!(
                    response["description"].as_str().is_some_and(|d| d.contains('`')),
                    "{what} {status}: the description names no error code"
                );
            }
        }
    }
    let error = property_names(doc, &doc["components"]["schemas"]["ErrorBody"]);
    assert_eq!(error, BTreeSet::from(["error".to_string()]));
    let inner = property_names(doc, &doc["components"]["schemas"]["ErrorBody"]["properties"]["error"]);
    assert!(inner.contains("code") && inner.contains("message"), "{inner:?}");
}

#[test]
fn part_one_schemas_carry_the_published_field_names() {
    let doc = document();
    let details = response_payload(doc, "/face/index/details", "get", "200");
    let index = resolve(doc, details)["items"].clone();
    let index_fields = property_names(doc, &index);
    for f in ["id", "index_name", "index_type", "record_count", "title", "description"] {
        assert!(index_fields.contains(f), "the index object lacks {f}: {index_fields:?}");
    }
    let matches = response_payload(doc, "/face/search", "post", "200");
    let m = resolve(doc, matches)["items"].clone();
    let match_fields = property_names(doc, &m);
    for f in [
        "match_score",
        "distance",
        "match_image_id",
        "name",
        "dob",
        "nationality",
        "gender",
        "id_no",
        "address",
        "watch_list",
        "additional_info",
        "index_name",
        "index_type",
    ] {
        assert!(match_fields.contains(f), "the match result lacks {f}: {match_fields:?}");
    }
    let (properties, _) = conformance::object_fields(doc, &m);
    assert_eq!(resolve(doc, properties["watch_list"])["type"], "array", "watch_list is an array");
    for f in ["match_score", "distance"] {
        assert_eq!(properties[f]["type"], "number", "{f} is a number");
    }
    let file = response_payload(doc, "/media/file/download/{file_id}", "get", "200");
    let file_fields = property_names(doc, file);
    for f in ["file_base64", "file_name", "file_type", "file_id"] {
        assert!(file_fields.contains(f), "the file object lacks {f}: {file_fields:?}");
    }
    // The search form and its query parameter.
    let search = &doc["paths"]["/face/search"]["post"];
    let form = resolve(doc, &search["requestBody"]["content"]["multipart/form-data"]["schema"]);
    let form_fields = property_names(doc, form);
    for f in ["source_image", "target_index_ids", "min_match_score", "max_results"] {
        assert!(form_fields.contains(f), "the search form lacks {f}");
    }
    let required: BTreeSet<&str> =
        form["required"].as_array().expect("required fields").iter().filter_map(Value::as_str).collect();
    assert_eq!(required, BTreeSet::from(["source_image", "target_index_ids"]));
    assert!(
        search["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "perform_liveness_check" && p["in"] == "query"),
        "perform_liveness_check is not documented"
    );
    for status in ["400", "403", "404", "413", "422"] {
        assert!(search["responses"].get(status).is_some(), "POST /face/search does not document {status}");
    }
    // The opt-in parts of a search answer (issue 16): parameters, body fields, headers.
    for name in ["include", "faces"] {
        let params = search["parameters"].as_array().expect("parameters");
        assert!(params.iter().any(|p| p["name"] == name && p["in"] == "query"), "{name} is not documented");
    }
    let ok = &search["responses"]["200"];
    let body = resolve(doc, &ok["content"]["application/json"]["schema"]);
    let fields = property_names(doc, body);
    for f in ["response", "probe", "faces"] {
        assert!(fields.contains(f), "the search body lacks {f}: {fields:?}");
    }
    let probe = property_names(doc, &body["properties"]["probe"]);
    for f in [
        "faces_found",
        "chosen_by",
        "face",
        "quality",
        "quality_failures",
        "liveness",
        "packs",
        "expected_false_matches",
    ] {
        assert!(probe.contains(f), "probe lacks {f}: {probe:?}");
    }
    for h in ["X-Faces-Found", "X-Face-Box", "X-Face-Quality", "X-Liveness-Score"] {
        assert!(ok["headers"].get(h).is_some(), "POST /face/search does not document {h}");
    }
    // Part 2 objects.
    let record = response_payload(doc, "/face/index/{index_id}/records/{record_id}", "get", "200");
    let record_fields = property_names(doc, record);
    for f in ["record_id", "index_id", "name", "watch_list", "reference", "image_ids", "created_at", "updated_at"] {
        assert!(record_fields.contains(f), "the record object lacks {f}");
    }
    let enrol = &doc["paths"]["/face/index/{index_id}/records"]["post"]["requestBody"]["content"];
    assert!(enrol.get("multipart/form-data").is_some(), "enrolment is not documented as multipart");
    let user = response_payload(doc, "/users/me", "get", "200");
    assert_eq!(
        property_names(doc, user),
        ["created_at", "grants", "role", "username"].iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()
    );
    let audit = response_payload(doc, "/audit", "get", "200");
    let events = &resolve(doc, audit)["properties"]["events"]["items"];
    let event_fields = property_names(doc, events);
    for f in ["id", "at", "actor", "action", "outcome", "index_ids", "record_ids", "details"] {
        assert!(event_fields.contains(f), "the audit event lacks {f}");
    }
}

#[test]
fn false_match_figures_are_documented_where_they_are_sent() {
    let doc = document();
    let search = &doc["paths"]["/face/search"]["post"]["responses"]["200"]["headers"];
    let header = search.get("X-Expected-False-Matches").unwrap_or_else(|| panic!("no header in {search}"));
    assert!(header["description"].as_str().is_some_and(|d| d.contains("<=")), "{header}");
    // Part 2 index objects carry the fields; the published details list does not.
    for (path, method, status) in [
        ("/face/index/{index_id}", "get", "200"),
        ("/face/index/{index_id}", "patch", "200"),
        ("/face/index", "post", "201"),
    ] {
        let fields = property_names(doc, response_payload(doc, path, method, status));
        for f in ["faces", "min_score_fpir_1e3", "expected_false_matches"] {
            assert!(fields.contains(f), "{method} {path} lacks {f}: {fields:?}");
        }
    }
    let get = &doc["paths"]["/face/index/{index_id}"]["get"];
    let params = get["parameters"].as_array().expect("parameters");
    assert!(params.iter().any(|p| p["name"] == "min_match_score" && p["in"] == "query"), "{params:?}");
    let details = response_payload(doc, "/face/index/details", "get", "200");
    let listed = property_names(doc, &resolve(doc, details)["items"].clone());
    assert!(!listed.contains("min_score_fpir_1e3") && !listed.contains("faces"), "{listed:?}");
}

#[test]
fn docs_page_is_self_contained_with_its_own_csp() {
    let s = server();
    let r = s.send("GET /docs", s.http().get(s.url("/docs")));
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/html"), "{:?}", r.headers);
    let csp = r.header("content-security-policy").expect("a CSP");
    for directive in
        ["default-src 'none'", "script-src 'self' 'unsafe-inline'", "style-src 'unsafe-inline'", "connect-src 'self'"]
    {
        assert!(csp.contains(directive), "the /docs CSP {csp:?} lacks {directive:?}");
    }
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let page = r.text.to_ascii_lowercase();
    for external in ["http://", "https://", "<link", "src=\"http", "src=\"/"] {
        assert!(!page.contains(external), "the docs page refers to {external:?}");
    }
    assert!(page.contains("/openapi.json"), "the page does not load the document");
    assert!(page.contains("<label"), "the page has no labelled inputs");
    // Every other response keeps the strict global policy.
    let r = s.send("GET /healthz", s.http().get(s.url("/healthz")));
    assert_eq!(r.header("content-security-policy"), Some("default-src 'none'; frame-ancestors 'none'"));
}

#[test]
fn console_page_is_self_contained_with_its_own_csp() {
    let s = server();
    let r = s.send("GET /console", s.http().get(s.url("/console")));
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/html"), "{:?}", r.headers);
    let csp = r.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "the /console CSP {csp:?} lacks {directive:?}");
    }
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let page = r.text.to_ascii_lowercase();
    for external in ["http://", "https://", "<link", "src=\"http", "src=\"/"] {
        assert!(!page.contains(external), "the console page refers to {external:?}");
    }
    assert!(page.contains("<label"), "the page has no labelled inputs");
    assert!(page.contains("role=\"alert\""), "the page has no alert region");
}

#[test]
fn every_response_carries_a_request_id() {
    let s = server();
    let r = s.send("GET /healthz", s.http().get(s.url("/healthz")));
    let id = r.header("x-request-id").expect("an x-request-id");
    assert_eq!(id.len(), 36, "not a UUID: {id}");
    // A client's plain id is kept (to correlate with a proxy's logs)...
    let r = s.send("GET /healthz", s.http().get(s.url("/healthz")).header("x-request-id", "proxy-1234.abc"));
    assert_eq!(r.header("x-request-id"), Some("proxy-1234.abc"));
    // ...anything else is replaced.
    let r = s.send("GET /healthz", s.http().get(s.url("/healthz")).header("x-request-id", "has spaces {}"));
    let id = r.header("x-request-id").expect("an x-request-id");
    assert_ne!(id, "has spaces {}");
    assert_eq!(id.len(), 36);
    // Errors too, also for unknown paths.
    let r = s.send("GET /nope", s.http().get(s.url("/no/such/endpoint")));
    assert_eq!(r.status, 404);
    assert!(r.header("x-request-id").is_some());
}

/// The record examples of docs/API.md show the fields a record has today: each record
/// object in the examples' transcript has exactly the keys the server returns, nested
/// image quality included.
#[test]
fn the_documented_record_examples_match_the_server() {
    fn keys(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let Some(map) = v.as_object() {
            for (k, child) in map {
                let path = format!("{prefix}{k}");
                out.insert(path.clone());
                let child = child.as_array().and_then(|a| a.first()).unwrap_or(child);
                keys(child, &format!("{path}."), out);
            }
        }
    }
    let s = server();
    let index = s.create_index_id("docs-record-example");
    let created = s.enrol_ok(&index, &common::eval("deepface/img1.jpg"), &[("name", "Example")]);
    let record = s.get(&format!("/face/index/{index}/records/{}", created["record_id"].as_str().unwrap()));
    let mut served = BTreeSet::new();
    keys(record.ok(200), "", &mut served);

    let doc = include_str!("../docs/API.md");
    let transcript = doc.split("## Examples").nth(1).expect("an Examples section");
    let mut documented = 0;
    for line in transcript.lines().filter(|l| l.starts_with("{\"response\":")) {
        // (The download example is cut short with `head -c`.)
        let Ok(value) = serde_json::from_str::<Value>(line) else { continue };
        let response = &value["response"];
        let candidates: Vec<&Value> = match response.get("records") {
            Some(list) => list.as_array().unwrap().iter().collect(),
            None => vec![response],
        };
        for candidate in candidates.into_iter().filter(|r| r.get("record_id").is_some() && r.get("image_ids").is_some())
        {
            let mut shown = BTreeSet::new();
            keys(candidate, "", &mut shown);
            assert_eq!(shown, served, "docs/API.md shows a record with other fields than the server's: {line}");
            documented += 1;
        }
    }
    assert!(documented >= 3, "the examples show records ({documented} found)");
}

/// What a running server sends is what the document says, field by field and type by
/// type: the answers of the main operations, successes and errors, compared with the
/// schema documented for their status.
#[test]
fn the_servers_answers_are_their_documented_schemas() {
    let doc = document();
    let s = server();
    let photo = common::eval("deepface/img1.jpg");
    let health = s.send("GET /healthz", s.http().get(s.url("/healthz")));
    assert_documented(doc, "/healthz", "get", &health);
    let created =
        s.post_json("/face/index", &serde_json::json!({"index_name": "schema-check", "index_type": "EXTERNAL"}));
    assert_documented(doc, "/face/index", "post", &created);
    let index = created.ok(201)["id"].as_str().expect("an index id").to_string();
    let taken = s.post_json("/face/index", &serde_json::json!({"index_name": "schema-check"}));
    assert_documented(doc, "/face/index", "post", &taken);
    for query in ["", "?min_match_score=70"] {
        let r = s.get(&format!("/face/index/{index}{query}"));
        assert_documented(doc, "/face/index/{index_id}", "get", &r);
    }
    assert_documented(doc, "/face/index/{index_id}", "get", &s.get("/face/index/no-such-index"));
    let enrolled = s.enrol(&index, &photo, &[("name", "Schema"), ("watch_list", "a,b"), ("reference", "ref-1")]);
    assert_documented(doc, "/face/index/{index_id}/records", "post", &enrolled);
    let record = enrolled.ok(201)["record_id"].as_str().expect("a record id").to_string();
    let image = enrolled.ok(201)["image_ids"][0].as_str().expect("an image id").to_string();
    let r = s.get(&format!("/face/index/{index}/records/{record}"));
    assert_documented(doc, "/face/index/{index_id}/records/{record_id}", "get", &r);
    let r = s.get(&format!("/face/index/{index}/records?limit=1"));
    assert_documented(doc, "/face/index/{index_id}/records", "get", &r);
    assert_documented(doc, "/face/index/details", "get", &s.get("/face/index/details"));
    let found = s.search(&[index.as_str()], &photo, &[("perform_liveness_check", "false")]);
    assert_documented(doc, "/face/search", "post", &found);
    assert!(!found.ok(200).as_array().expect("matches").is_empty(), "the enrolled face is found");
    let detailed = s.search(&[index.as_str()], &photo, &[("perform_liveness_check", "false"), ("include", "probe")]);
    assert_documented(doc, "/face/search", "post", &detailed);
    let refused = s.search(&[index.as_str()], &photo, &[("min_match_score", "101")]);
    assert_documented(doc, "/face/search", "post", &refused);
    assert_documented(doc, "/media/file/download/{file_id}", "get", &s.download(&image));
    assert_documented(doc, "/users/me", "get", &s.get("/users/me"));
    assert_documented(doc, "/users", "get", &s.get("/users"));
    assert_documented(doc, "/audit", "get", &s.get("/audit?limit=5"));
    let job = s.post_json(&format!("/face/index/{index}/duplicates?wait=0"), &Value::Null);
    assert_documented(doc, "/face/index/{index_id}/duplicates", "post", &job);
    let r = s.get(&format!("/face/index/{index}/reembed"));
    assert_documented(doc, "/face/index/{index_id}/reembed", "get", &r);
}
