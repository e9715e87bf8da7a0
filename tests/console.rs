//! The web console (`GET /console`) end to end, in headless Chromium driven over
//! WebDriver (HTTP + JSON) by the small client below: sign in, list indexes, enrol a
//! person through the form, search with a photo (the searched face boxed on it, with
//! its liveness verdict) and read the audit log.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium chromium-driver`), which
//! `.ci/run` installs when missing. Screenshots are written under
//! `CARGO_TARGET_TMPDIR/console-screenshots/`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use common::{ADMIN_PASSWORD, ADMIN_USER, Server};
use reqwest::blocking::Client;
use serde_json::{Value, json};

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long an element lookup waits for the element to appear (WebDriver's implicit
/// wait); a bounded loop of lookups covers results that take longer.
const IMPLICIT_WAIT_MS: u64 = 10_000;

fn chromedriver_path() -> PathBuf {
    for p in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("chromedriver")
}

fn chromium_path() -> String {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"] {
        if Path::new(p).is_file() {
            return p.to_string();
        }
    }
    panic!("no chromium binary found (install chromium and chromium-driver; .ci/run does)");
}

/// A `chromedriver` child process, killed on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let mut child = Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting chromedriver (install chromium-driver; .ci/run does)");
        let stdout = child.stdout.take().expect("chromedriver stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("started successfully") {
                    let _ = tx.send(());
                }
            }
        });
        let mut driver = Driver { child, base: format!("http://127.0.0.1:{port}") };
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = driver.child.kill();
            panic!("chromedriver did not start within 30 s");
        }
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
struct Browser {
    http: Client,
    session: String,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

impl Browser {
    fn start() -> Browser {
        let driver = Driver::start();
        let http = Client::builder().timeout(Duration::from_secs(120)).build().unwrap();
        let profile = common::temp_dir();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_path(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1366,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let v = call(&http, "POST", &format!("{}/session", driver.base), Some(caps));
        let session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session id in {v}")).to_string();
        let b = Browser { http, session, _profile: profile, _driver: driver };
        b.cmd("POST", "/timeouts", Some(json!({"implicit": IMPLICIT_WAIT_MS})));
        b
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(&self.http, method, &format!("{}/session/{}{path}", self._driver.base, self.session), body)
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// Signs in to `s`'s console as the admin and opens the search view with
    /// `index_id` chosen.
    fn search_view_as_admin(&self, s: &Server, index_id: &str) {
        self.goto(&s.url("/console"));
        self.type_into("#username", ADMIN_USER);
        self.type_into("#password", ADMIN_PASSWORD);
        self.click("#signin-button");
        self.wait_for("#whoami[data-role=\"admin\"]", "sign-in");
        self.click("#nav-search");
        self.wait_for(&format!("#search-indexes input[value=\"{index_id}\"]:checked"), "search index choice");
    }

    /// The element for a CSS selector, waiting up to the implicit wait; `None` if absent.
    fn try_find(&self, css: &str) -> Option<String> {
        let url = format!("{}/session/{}/element", self._driver.base, self.session);
        let r = self.http.post(&url).json(&json!({"using": "css selector", "value": css})).send().expect("WebDriver");
        let status = r.status();
        let v: Value = r.json().expect("WebDriver JSON");
        if status.is_success() {
            return Some(
                v["value"][ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element id in {v}")).to_string(),
            );
        }
        assert_eq!(v["value"]["error"], "no such element", "finding {css}: {v}");
        None
    }

    /// Waits (a bounded number of implicit waits) for an element to appear.
    fn wait_for(&self, css: &str, what: &str) -> String {
        for _ in 0..9 {
            if let Some(e) = self.try_find(css) {
                return e;
            }
        }
        let alert = self.try_find("#alert").map(|a| self.text(&a)).unwrap_or_default();
        self.screenshot("failure");
        panic!("{what}: no {css} after {} s (alert: {alert:?})", 9 * IMPLICIT_WAIT_MS / 1000);
    }

    fn find(&self, css: &str) -> String {
        self.try_find(css).unwrap_or_else(|| panic!("no element {css}"))
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({"text": text})));
    }

    fn choose_file(&self, css: &str, file: &Path) {
        let e = self.find(css);
        let abs = file.canonicalize().expect("an absolute photo path");
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({"text": abs.to_string_lossy()})));
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn text(&self, element: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/text"), None).as_str().unwrap_or_default().to_string()
    }

    fn attribute(&self, css: &str, name: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/attribute/{name}"), None).as_str().unwrap_or_default().to_string()
    }

    fn text_of(&self, css: &str) -> String {
        self.text(&self.find(css))
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().expect("base64 PNG")).expect("base64");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let url = format!("{}/session/{}", self._driver.base, self.session);
        let _ = self.http.delete(url).send();
    }
}

/// One WebDriver command; returns its `value`, panicking on an error answer.
fn call(http: &Client, method: &str, url: &str, body: Option<Value>) -> Value {
    let req = match method {
        "GET" => http.get(url),
        "DELETE" => http.delete(url),
        _ => http.post(url).json(&body.unwrap_or_else(|| json!({}))),
    };
    let r = req.send().unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let status = r.status();
    let v: Value = r.json().unwrap_or_else(|e| panic!("WebDriver {method} {url}: not JSON: {e}"));
    assert!(status.is_success(), "WebDriver {method} {url}: {status} {v}");
    v["value"].clone()
}

#[test]
fn console_signs_in_enrols_searches_and_shows_the_audit() {
    let s = Server::start();
    let index_id = s.create_index_id("console-people");
    s.enrol_ok(
        &index_id,
        &common::eval("deepface/img1.jpg"),
        &[
            ("name", "Angelina Jolie"),
            ("dob", "1975-06-04"),
            ("nationality", "US"),
            ("id_no", "P1234567"),
            ("watch_list", "pep,vip"),
            ("reference", "cust-0001"),
        ],
    );

    let b = Browser::start();
    b.goto(&s.url("/console"));
    b.find("#signin-form");
    // A wrong password is shown as the API's error, `CODE: message`.
    b.type_into("#username", ADMIN_USER);
    b.type_into("#password", "not-the-password");
    b.click("#signin-button");
    let alert = b.wait_for("#alert:not(:empty)", "sign-in error");
    assert!(b.text(&alert).starts_with("UNAUTHORIZED: "), "{}", b.text(&alert));
    b.find("#session.hidden");
    b.type_into("#username", ADMIN_USER);
    b.type_into("#password", ADMIN_PASSWORD);
    b.screenshot("sign-in");
    b.click("#signin-button");
    b.wait_for("#whoami[data-role=\"admin\"]", "sign-in");
    assert_eq!(b.text_of("#whoami"), ADMIN_USER);

    // The index is listed.
    let row = b.wait_for("#index-list tr[data-index-name=\"console-people\"]", "index list");
    assert!(b.text(&row).contains("console-people"));

    // Enrol one more person through the form.
    let other = common::lfw_photos(&common::lfw_people()[0])[0].clone();
    b.click("#nav-enrol");
    b.wait_for(&format!("#enrol-index option[value=\"{index_id}\"]"), "enrol index choice");
    b.type_into("#enrol-name", "Console Person");
    // A value the API refuses: its code and message are shown beside the form.
    b.type_into("#enrol-nationality", "Britain");
    b.choose_file("#enrol-photo", &other);
    b.click("#enrol-button");
    let refused = b.wait_for("#enrol-result[data-status=\"refused\"]", "a refused enrolment");
    assert!(b.text(&refused).starts_with("INVALID_PARAMETER: "), "{}", b.text(&refused));
    assert!(b.text(&refused).contains("nationality"), "{}", b.text(&refused));
    assert_eq!(s.record_count(&index_id), 1);
    // Every record field of the API.
    b.type_into("#enrol-nationality", "GB");
    b.type_into("#enrol-gender", "M");
    b.type_into("#enrol-id-no", "GB-998877");
    b.type_into("#enrol-address", "1 Console Street, London");
    b.type_into("#enrol-watch-list", "vip");
    b.type_into("#enrol-additional-info", "enrolled through the console");
    b.type_into("#enrol-reference", "console-0002");
    b.click("#enrol-button");
    let done = b.wait_for("#enrol-result[data-status=\"created\"]", "enrolment");
    assert!(b.text(&done).contains("Console Person"), "{}", b.text(&done));
    assert_eq!(s.record_count(&index_id), 2);
    let record_id = b.attribute("#enrol-result [data-record-id]", "data-record-id");
    let response = s.get(&format!("/face/index/{index_id}/records/{record_id}"));
    let record = response.ok(200);
    for (field, value) in [
        ("gender", json!("M")),
        ("id_no", json!("GB-998877")),
        ("address", json!("1 Console Street, London")),
        ("watch_list", json!(["vip"])),
        ("additional_info", json!("enrolled through the console")),
        ("reference", json!("console-0002")),
        ("nationality", json!("GB")),
    ] {
        assert_eq!(record[field], value, "{field} in {record}");
    }
    // The banner was cleared by the successful enrolment.
    assert_eq!(b.text_of("#alert"), "");

    // Search with another photo of Angelina Jolie.
    b.click("#nav-search");
    b.wait_for(&format!("#search-indexes input[value=\"{index_id}\"]:checked"), "search index choice");
    b.choose_file("#search-photo", &common::eval("deepface/img2.jpg"));
    b.click("#search-button");
    b.wait_for("#search-results[data-done]", "search results");
    let name = b.text_of("#search-results .match:first-child .match-name");
    assert_eq!(name, "Angelina Jolie");
    let score: f64 = b.text_of("#search-results .match:first-child .match-score").parse().expect("a numeric score");
    assert!(score >= 70.0, "score {score}");
    // The enrolled image is shown (a data: URL from the download endpoint).
    b.wait_for("#search-results .match:first-child img[src^=\"data:image/\"]", "match image");
    b.wait_for("#probe-preview[src^=\"blob:\"]", "probe preview");
    // What was searched (the console asks for include=probe): the face's box drawn on
    // the photo, at the box the API reports for it, and the liveness verdict.
    let boxed = b.wait_for("#probe-box:not(.hidden)[data-box]", "the searched face's box");
    let api = s.search(&[&index_id], &common::eval("deepface/img2.jpg"), &[]);
    api.ok(200);
    assert_eq!(Some(b.attribute("#probe-box", "data-box").as_str()), api.header("x-face-box"));
    let rect = |element: &str| {
        let r = b.cmd("GET", &format!("/element/{element}/rect"), None);
        let n = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k} in {r}"));
        (n("x"), n("y"), n("width"), n("height"))
    };
    let (bx, by, bw, bh) = rect(&boxed);
    let (px, py, pw, ph) = rect(&b.find("#probe-preview"));
    assert!(bw > 10.0 && bh > 10.0, "box {bw}×{bh}");
    assert!(
        bx >= px - 1.0 && by >= py - 1.0 && bx + bw <= px + pw + 1.0 && by + bh <= py + ph + 1.0,
        "box outside the photo"
    );
    let liveness = b.wait_for("#probe-liveness[data-status=\"judged\"]", "the liveness verdict");
    let score: f64 = b.attribute("#probe-liveness", "data-score").parse().expect("a numeric liveness score");
    let header: f64 = api.header("x-liveness-score").expect("X-Liveness-Score").parse().expect("a number");
    assert!((score - header).abs() < 1e-9 && score >= 0.5, "console {score}, API {header}");
    assert!(b.text(&liveness).contains(&format!("{score:.4}")), "{}", b.text(&liveness));
    assert_eq!(b.attribute("#probe-faces", "data-faces-found"), "1");
    b.screenshot("search-results");

    // Open the record.
    b.click("#search-results .match:first-child .match-name");
    b.wait_for("#record-images img[src^=\"data:image/\"]", "record images");
    assert!(b.text_of("#record-view").contains("P1234567"));

    // The audit view shows the search.
    b.click("#nav-audit");
    let row = b.wait_for("#audit-list tr[data-action=\"face.search\"]", "audit entries");
    assert!(b.text(&row).contains("face.search"));
    b.screenshot("audit");

    // No error was shown along the way.
    assert_eq!(b.text_of("#alert"), "");
}

#[test]
fn console_says_what_the_minimum_score_means_beside_the_field() {
    let s = Server::start();
    let index_id = s.create_index_id("console-fpir");
    s.enrol_ok(&index_id, &common::eval("deepface/img1.jpg"), &[("name", "Angelina Jolie")]);
    let asked = |score: &str| s.get(&format!("/face/index/{index_id}?min_match_score={score}")).ok(200).clone();

    let b = Browser::start();
    b.search_view_as_admin(&s, &index_id);

    // At the default score: the expectation the API gives for this index at 70, and the
    // index's score for FPIR 1e-3.
    b.wait_for("#search-fpir-hint[data-score=\"70\"]", "the hint at the default score");
    let at70 = asked("70");
    let shown: f64 = b.attribute("#search-fpir-hint", "data-expected").parse().expect("a number");
    let api = at70["expected_false_matches"]["value"].as_f64().expect("a value");
    // JSON parsers may differ in the last binary digit.
    assert!((shown - api).abs() <= api * 1e-12, "{shown} vs {at70}");
    assert!(b.text_of("#search-expected-false-matches").contains("at score 70"));
    let item = format!("#search-fpir-scores li[data-index-id=\"{index_id}\"]");
    let hint: f64 = b.attribute(&item, "data-min-score-fpir-1e3").parse().expect("a measured score for one face");
    let api_hint = at70["min_score_fpir_1e3"].as_f64().expect("a measured score for one face");
    assert!((hint - api_hint).abs() < 1e-9, "{hint} vs {at70}");
    assert!(b.text_of(&item).contains("console-fpir: score for FPIR 1e-3 at 1 face"), "{}", b.text_of(&item));

    // Typing another score updates it beside the field.
    b.type_into("#search-min-score", "20");
    b.wait_for("#search-fpir-hint[data-score=\"20\"]", "the hint at the typed score");
    let shown: f64 = b.attribute("#search-fpir-hint", "data-expected").parse().expect("a number");
    let api = asked("20")["expected_false_matches"]["value"].as_f64().expect("a value");
    assert!((shown - api).abs() <= api * 1e-12, "{shown} vs {api}");
    assert!(b.text_of("#search-expected-false-matches").contains("at score 20"));
    b.screenshot("search-fpir-hint");
    assert_eq!(b.text_of("#alert"), "");
}

/// The results pane of the search: with the minimum score lowered, results below the
/// default threshold (70) are listed after a separator, muted and labelled as not
/// matches; a refused search shows its code, message and what to do in the pane
/// itself, not only in the banner.
#[test]
fn console_sets_apart_results_below_the_threshold_and_explains_a_refusal() {
    let s = Server::start();
    let index_id = s.create_index_id("console-threshold");
    s.enrol_ok(&index_id, &common::eval("deepface/img1.jpg"), &[("name", "Angelina Jolie")]);
    for person in common::lfw_people().iter().take(3) {
        s.enrol_ok(&index_id, &common::lfw_photos(person)[0], &[("name", person.as_str())]);
    }

    let b = Browser::start();
    b.search_view_as_admin(&s, &index_id);

    // Everything down to score 0: one match, then the others set apart.
    b.type_into("#search-min-score", "0");
    b.click("#search-liveness");
    b.choose_file("#search-photo", &common::eval("deepface/img2.jpg"));
    b.click("#search-button");
    b.wait_for("#search-results[data-done=\"4\"]", "search results");
    assert_eq!(b.attribute("#search-results", "data-below"), "3");
    assert_eq!(b.text_of("#search-results .match:not(.below-threshold) .match-name"), "Angelina Jolie");
    // The separator comes right after the match and before every result below 70.
    let separator = b.find("#search-results .match:not(.below-threshold) + .threshold-separator");
    assert!(b.text(&separator).contains("not matches"), "{}", b.text(&separator));
    b.find("#search-results .threshold-separator + .match.below-threshold");
    let below = b.find("#search-results .match.below-threshold:last-child");
    assert!(b.text(&below).contains("below the default threshold — not a match"), "{}", b.text(&below));
    let score: f64 =
        b.text_of("#search-results .match.below-threshold:last-child .match-score").parse().expect("a score");
    assert!(score < 70.0, "{score}");
    assert!(
        b.text_of("#search-status").contains("3 results below the default threshold"),
        "{}",
        b.text_of("#search-status")
    );
    assert_eq!(b.attribute("#search-refusal", "class"), "hidden");
    b.screenshot("search-below-threshold");

    // A photo without a face: the refusal is in the results pane, with what to do.
    b.choose_file("#search-photo", &common::eval("compreface/sample_images/017_0.jpg"));
    b.click("#search-button");
    let refusal = b.wait_for("#search-refusal[data-code=\"NO_FACE_DETECTED\"]", "the refusal in the results pane");
    let text = b.text(&refusal);
    assert!(text.starts_with("NO_FACE_DETECTED: "), "{text}");
    assert!(text.contains("What to do: "), "{text}");
    assert!(b.try_find("#search-results .match").is_none(), "the earlier results are gone");
    assert!(b.text_of("#alert").starts_with("NO_FACE_DETECTED: "), "{}", b.text_of("#alert"));
    b.screenshot("search-refused");

    // A search that succeeds again clears the refusal.
    b.choose_file("#search-photo", &common::eval("deepface/img2.jpg"));
    b.type_into("#search-min-score", "70");
    b.click("#search-button");
    b.wait_for("#search-results[data-done=\"1\"]", "search results");
    assert_eq!(b.attribute("#search-refusal", "class"), "hidden");
    assert!(b.try_find("#search-results .threshold-separator").is_none());
}
