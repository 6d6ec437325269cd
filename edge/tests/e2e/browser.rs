//! The web page (`GET /`, `web/`): its headers over HTTP/2 with the machine's curl, and the
//! page itself in a real headless Chromium driven by chromedriver, over HTTP/2 and over
//! HTTP/3: sign in with a token, upload `samples/ports.json` and a picture through the file
//! input, follow each to `done`, browse a port, the files and the jobs. What the page shows
//! is checked against the store through the API.
//!
//! The Chromium tests need Debian's `chromium` and `chromium-driver` (edge/build.rs probes
//! them: `has_chromium`). With `EDGE_SCREENSHOTS_DIR` set, the HTTP/2 tour saves screenshots
//! of the upload view and the files gallery at a desktop and a phone size there (those in
//! docs/screenshots/ were made so).

use crate::util::*;
use crate::webdriver::Browser;
use edge_client::api::Api;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("edge/ is in the repository")
        .to_owned()
}

fn origin(server: &TestServer) -> String {
    format!("https://127.0.0.1:{}", server.addr.port())
}

/// The base64 SHA-256 of the server certificate's SubjectPublicKeyInfo, which Chromium's
/// `--ignore-certificate-errors-spki-list` trusts (the dev CA is not in its store).
fn spki_hash(server: &TestServer) -> String {
    use base64::Engine as _;
    let pem = std::fs::read(server.dir.path().join("certs/server.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let spki = cert.tbs_certificate.subject_pki.raw;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Chromium's flags to reach the server over `protocol` (`h2` or `h3`).
fn flags(server: &TestServer, protocol: &str) -> Vec<String> {
    let mut flags = vec![format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_hash(server)
    )];
    if protocol == "h3" {
        flags.push("--enable-quic".into());
        flags.push(format!(
            "--origin-to-force-quic-on=127.0.0.1:{}",
            server.addr.port()
        ));
    } else {
        // Every answer says `Alt-Svc: h3`: without this Chromium could move to HTTP/3.
        flags.push("--disable-quic".into());
    }
    flags
}

/// Opens the page and signs in by pasting `token`.
fn sign_in_with_token(browser: &Browser, origin: &str, token: &str) {
    browser.goto(&format!("{origin}/"));
    browser.wait_for(
        "the sign-in form",
        "return !document.querySelector('#signin').hidden;",
        json!([]),
    );
    browser.type_into("#token-input", token);
    browser.click("#token-submit");
    wait_signed_in(browser);
}

/// Opens the page and signs in with a name and a password (`POST /v1/login`).
fn sign_in_with_password(browser: &Browser, origin: &str, name: &str, password: &str) {
    browser.goto(&format!("{origin}/"));
    browser.wait_for(
        "the sign-in form",
        "return !document.querySelector('#signin').hidden;",
        json!([]),
    );
    browser.type_into("#login-name", name);
    browser.type_into("#login-password", password);
    browser.click("#login-submit");
}

/// Waits until the page shows its views and whom it signed in; returns that name.
fn wait_signed_in(browser: &Browser) -> String {
    let who = browser.wait_for(
        "the page to sign in",
        "return !document.querySelector('#app').hidden && document.querySelector('#who').textContent;",
        json!([]),
    );
    who.as_str().unwrap_or_default().to_owned()
}

/// Picks `task` and uploads `file` through the file input; waits for its row to end and
/// returns `{state, committed, errors, summary, details, errorsShown, firstError, more}`.
fn upload(browser: &Browser, task: &str, file: &Path) -> Value {
    browser.click("#tab-upload");
    browser.click(&format!("#task option[value=\"{task}\"]"));
    let path = file.canonicalize().unwrap();
    browser.type_into("#files", &path.to_string_lossy());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    browser.wait_for(
        &format!("the upload of {name} to end"),
        "const row = document.querySelector(`li.upload[data-name=\"${arguments[0]}\"]`);
         if (!row || !['done', 'failed', 'refused'].includes(row.dataset.state)) return null;
         return {state: row.dataset.state, committed: Number(row.dataset.committed),
                 errors: Number(row.dataset.errors), summary: row.querySelector('.summary').textContent,
                 details: row.querySelector('.details').textContent,
                 errorsShown: row.querySelectorAll('.errors li').length,
                 firstError: (row.querySelector('.errors li') || {}).textContent || '',
                 more: row.querySelector('.more-errors').hidden ? '' : row.querySelector('.more-errors').textContent};",
        json!([name]),
    )
}

/// Waits for the files gallery's preview of `name` to have loaded; returns its width.
fn wait_preview(browser: &Browser, name: &str) -> Value {
    browser.wait_for(
        &format!("the preview of {name}"),
        "const img = document.querySelector(`#panel-blobs li.file[data-name=\"${arguments[0]}\"] img.preview`);
         return img && img.complete && img.naturalWidth > 0 ? img.naturalWidth : null;",
        json!([name]),
    )
}

/// The page's tour: every view, in the browser. Blocking (WebDriver).
fn tour(browser: &Browser, origin: &str, token: &str, protocol: &str, shots: Option<&Path>) {
    browser.viewport(1280, 900, false);
    sign_in_with_token(browser, origin, token);
    assert_eq!(wait_signed_in(browser), "tester");
    let expires = browser.run(
        "return document.querySelector('#expires').textContent;",
        json!([]),
    );
    assert!(expires.as_str().unwrap().starts_with("until "), "{expires}");
    let navigation = browser.run(
        "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
        json!([]),
    );
    assert_eq!(navigation, protocol, "the page came over {navigation}");

    // The tabs follow what the server has: a tab per task with read endpoints.
    let tabs = browser.run(
        "return [...document.querySelectorAll('[role=tab]')].map(t => t.id);",
        json!([]),
    );
    for tab in [
        "tab-upload",
        "tab-ports",
        "tab-blobs",
        "tab-jobs",
        "tab-health",
    ] {
        assert!(tabs.as_array().unwrap().contains(&json!(tab)), "{tabs}");
    }
    assert!(
        !tabs.as_array().unwrap().contains(&json!("tab-stats")),
        "stats keeps nothing to read: {tabs}"
    );
    // Tabs are keyboard-driven: an arrow moves to the next one and shows it.
    browser.click("#tab-upload");
    browser.type_into("#tab-upload", "\u{E014}");
    let moved = browser.run(
        "return [document.activeElement.id, document.activeElement.getAttribute('aria-selected'),
                 document.querySelector('#panel-upload').hidden];",
        json!([]),
    );
    assert_eq!(moved[1], "true", "{moved}");
    assert_eq!(moved[2], true, "{moved}");
    assert_ne!(moved[0], "tab-upload", "{moved}");

    // Every control has a name for assistive technology: a label, or an aria-label, or text.
    let unnamed = browser.run(
        "return [...document.querySelectorAll('input, select, textarea, button')]
             .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label')
                          && !(c.tagName === 'BUTTON' && c.textContent.trim()))
             .map(c => c.outerHTML);",
        json!([]),
    );
    assert_eq!(unnamed, json!([]), "controls without a name");

    let ports = upload(browser, "ports", &ports_json());
    assert_eq!(ports["state"], "done", "{ports}");
    assert_eq!(ports["committed"], 1634, "{ports}");
    assert_eq!(ports["errors"], 0, "{ports}");
    let summary = ports["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Done: 1,634 records, 1,634 committed, 0 errors"),
        "{summary}"
    );
    let details = ports["details"].as_str().unwrap();
    assert_eq!(details, "inserted 1634 · updated 0 · unchanged 0");

    // Bad records are listed as they come, up to 20, and the rest counted.
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed.ndjson");
    let good = synthetic_ports_ndjson(50);
    let mut body = Vec::new();
    for (i, line) in good.split_inclusive(|b| *b == b'\n').enumerate() {
        body.extend_from_slice(line);
        if i % 2 == 1 {
            body.extend_from_slice(b"{\"name\": broken\n");
        }
    }
    std::fs::write(&mixed, body).unwrap();
    let mixed = upload(browser, "ports", &mixed);
    assert_eq!(mixed["state"], "done", "{mixed}");
    assert_eq!(
        (&mixed["committed"], &mixed["errors"]),
        (&json!(50), &json!(25))
    );
    assert_eq!(mixed["errorsShown"], 20, "{mixed}");
    assert_eq!(mixed["more"], "and 5 more", "{mixed}");
    let first = mixed["firstError"].as_str().unwrap();
    assert!(first.starts_with("record 2 at byte "), "{first}");
    assert!(first.contains("invalid_json"), "{first}");

    let picture = repository().join("samples/edge.png");
    let blob = upload(browser, "blobs", &picture);
    assert_eq!(blob["state"], "done", "{blob}");
    assert_eq!(blob["committed"], 1, "{blob}");
    assert!(
        blob["details"]
            .as_str()
            .unwrap()
            .contains("content type image/png"),
        "{blob}"
    );
    if let Some(dir) = shots {
        // Tall enough to show the three rows under the form.
        browser.viewport(1280, 1500, false);
        browser.run(
            "document.activeElement.blur(); window.scrollTo(0, 0);",
            json!([]),
        );
        browser.save_screenshot(dir, "upload-desktop");
        browser.viewport(1280, 900, false);
    }

    // The files: the picture's preview, fetched with the token, has loaded.
    browser.click("#tab-blobs");
    assert_eq!(wait_preview(browser, "edge.png"), 32);
    if let Some(dir) = shots {
        browser.save_screenshot(dir, "files-desktop");
    }

    // A port, found by its code, with its (empty) change history; and a page of the list.
    browser.click("#tab-ports");
    browser.wait_for(
        "the first page of ports",
        "return document.querySelectorAll('#panel-ports tbody tr').length === 25;",
        json!([]),
    );
    browser.type_into("#ports-key", "AEAJM");
    browser.click("#panel-ports form.find button[type=submit]");
    let title = browser.wait_for(
        "the port AEAJM",
        "const title = document.querySelector('#panel-ports .detail-title');
         return title && document.querySelector('#panel-ports .history p, #panel-ports .history table')
             ? title.textContent : null;",
        json!([]),
    );
    assert_eq!(title, "AEAJM: Ajman");
    let detail = browser.run(
        "return document.querySelector('#panel-ports .detail').innerText;",
        json!([]),
    );
    let detail = detail.as_str().unwrap();
    assert!(detail.contains("United Arab Emirates"), "{detail}");
    assert!(detail.contains("No job has replaced it yet."), "{detail}");
    if let Some(dir) = shots {
        browser.run(
            "document.activeElement.blur(); window.scrollTo(0, 0);",
            json!([]),
        );
        browser.save_screenshot(dir, "ports-desktop");
    }

    // The jobs, most recent first; one of them, with its events replayed.
    browser.click("#tab-jobs");
    let jobs = browser.wait_for(
        "the three jobs",
        "const rows = [...document.querySelectorAll('#panel-jobs tbody tr[data-job]')];
         return rows.length === 3 ? rows.map(r => r.innerText) : null;",
        json!([]),
    );
    let first = jobs[0].as_str().unwrap();
    assert!(
        first.contains("done") && first.contains("blobs") && first.contains("edge.png"),
        "{jobs}"
    );
    let last = jobs[2].as_str().unwrap();
    assert!(
        last.contains("ports.json") && last.contains("1,634"),
        "{jobs}"
    );
    browser.click("#panel-jobs tbody tr:last-child button.link");
    let events = browser.wait_for(
        "the job's events",
        "const lines = [...document.querySelectorAll('#panel-jobs .events li')].map(l => l.textContent);
         return lines.some(l => l.includes('\"event\":\"done\"')) ? lines : null;",
        json!([]),
    );
    assert!(
        events[0]
            .as_str()
            .unwrap()
            .contains("\"event\":\"accepted\""),
        "{events}"
    );

    // A task that computes its items: the first page of primes.
    browser.click("#tab-primes");
    let primes = browser.wait_for(
        "the first primes",
        "const cells = [...document.querySelectorAll('#panel-primes tbody tr td:nth-child(2)')];
         return cells.length === 25 ? cells.slice(0, 5).map(c => c.textContent) : null;",
        json!([]),
    );
    assert_eq!(primes, json!(["2", "3", "5", "7", "11"]));

    browser.click("#tab-health");
    let health = browser.wait_for(
        "the health check",
        "return document.querySelector('#panel-health dd') && document.querySelector('#panel-health .facts').innerText;",
        json!([]),
    );
    let health = health.as_str().unwrap();
    assert!(health.contains("ok"), "{health}");
    assert!(health.contains("ports:write stats:write"), "{health}");

    // Every API call went over the same protocol as the page.
    let calls = browser.run(
        "return performance.getEntriesByType('resource')
             .filter(e => new URL(e.name).pathname.startsWith('/v1/') && e.nextHopProtocol)
             .map(e => [new URL(e.name).pathname, e.initiatorType, e.nextHopProtocol]);",
        json!([]),
    );
    let calls = calls.as_array().unwrap();
    assert!(calls.len() >= 8, "{calls:?}");
    for call in calls {
        assert_eq!(call[2], protocol, "{call}");
    }
    assert!(
        calls
            .iter()
            .any(|c| c[0] == "/v1/jobs/ports" && c[1] == "xmlhttprequest"),
        "the upload is among them: {calls:?}"
    );

    // Nothing broke the page's Content-Security-Policy, and nothing failed but the
    // requests for a job by its `ref` before the job existed (404 until it does).
    let console = browser.console();
    let unexpected: Vec<&String> = console
        .iter()
        .filter(|line| line.starts_with("SEVERE") || line.contains("Content Security Policy"))
        .filter(|line| !(line.contains("/v1/jobs/ref:") && line.contains("404")))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");

    if let Some(dir) = shots {
        browser.viewport(390, 844, true);
        browser.click("#tab-upload");
        browser.run(
            "document.activeElement.blur(); document.querySelector('#drop').scrollIntoView();",
            json!([]),
        );
        browser.save_screenshot(dir, "upload-phone");
        browser.click("#tab-blobs");
        wait_preview(browser, "edge.png");
        browser.save_screenshot(dir, "files-phone");
        browser.dark(true);
        browser.click("#tab-jobs");
        browser.wait_for(
            "the jobs",
            "return document.querySelectorAll('#panel-jobs tbody tr[data-job]').length === 3;",
            json!([]),
        );
        browser.run("document.activeElement.blur();", json!([]));
        browser.save_screenshot(dir, "jobs-phone-dark");
        browser.dark(false);
    }

    // Signing out forgets the token.
    browser.click("#signout");
    let kept = browser.wait_for(
        "the sign-in form again",
        "return !document.querySelector('#signin').hidden && [sessionStorage.getItem('edge.token')];",
        json!([]),
    );
    assert_eq!(kept, json!([null]));
}

/// Runs [`tour`] over `protocol`, then checks the store through the API.
async fn tour_over(protocol: &'static str) {
    let server = TestServer::start().await;
    let token = server.token(ALL_SCOPES);
    let flags = flags(&server, protocol);
    let origin = origin(&server);
    // A relative directory is the repository's (nextest runs tests in edge/).
    let shots = std::env::var_os("EDGE_SCREENSHOTS_DIR")
        .filter(|_| protocol == "h2")
        .map(|dir| repository().join(dir));
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&flags);
        tour(&browser, &origin, &token, protocol, shots.as_deref());
    })
    .await
    .unwrap();

    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let port = api.get("/v1/ports/AEAJM").await.unwrap();
    assert_eq!(port.body["name"], "Ajman");
    for code in ["P000000", "P000049"] {
        let port = api.get(&format!("/v1/ports/{code}")).await.unwrap();
        assert_eq!(port.status, 200, "{code}: {port:?}");
    }
    let blob = api.get("/v1/blobs?prefix=edge.png").await.unwrap();
    let picture = std::fs::read(repository().join("samples/edge.png")).unwrap();
    assert_eq!(blob.body["items"][0]["size"], picture.len());
    assert_eq!(
        blob.body["items"][0]["digest"],
        blake3::hash(&picture).to_hex().as_str()
    );
    // The uploads went over the protocol the page came over.
    let jobs = api.get("/v1/jobs").await.unwrap();
    let jobs = jobs.body["items"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for job in &jobs {
        assert_eq!(job["transport"], protocol, "{job}");
        assert_eq!(job["outcome"], "done", "{job}");
        assert_eq!(job["sub"], "tester", "{job}");
    }
    api.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"
)]
async fn the_page_signs_in_uploads_and_browses_in_chromium_over_http2() {
    tour_over("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"
)]
async fn the_page_signs_in_uploads_and_browses_in_chromium_over_http3() {
    tour_over("h3").await;
}

/// A token the server refuses (here: expired) is refused on the page, with the reason, and
/// the page stays at sign-in; a view whose scope the token lacks says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"
)]
async fn the_page_refuses_a_token_the_server_refuses_and_says_why() {
    let server = TestServer::start().await;
    let expired = server.expired_token(ALL_SCOPES);
    let narrow = server.token("ports:read");
    let flags = flags(&server, "h2");
    let origin = origin(&server);
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&flags);
        browser.goto(&format!("{origin}/"));
        browser.type_into("#token-input", &expired);
        browser.click("#token-submit");
        let message = browser.wait_for(
            "the refusal",
            "return document.querySelector('#signin-message').textContent;",
            json!([]),
        );
        assert!(
            message
                .as_str()
                .unwrap()
                .starts_with("This token expired at"),
            "{message}"
        );
        assert_eq!(
            browser.run("return document.querySelector('#app').hidden;", json!([])),
            true
        );
        // A token without a view's scope: the view says so.
        browser.fill("#token-input", &narrow);
        browser.click("#token-submit");
        wait_signed_in(&browser);
        browser.click("#tab-jobs");
        let message = browser.wait_for(
            "the missing scope",
            "return document.querySelector('#panel-jobs .message').textContent;",
            json!([]),
        );
        let message = message.as_str().unwrap();
        assert!(
            message.starts_with("Your token does not allow this:") && message.contains("jobs:read"),
            "{message}"
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

/// The sign-in form's answer once it has one.
fn signin_message(browser: &Browser) -> String {
    let message = browser.wait_for(
        "the answer to a sign-in",
        "return document.querySelector('#signin-message').textContent !== 'Signing in…'
             && document.querySelector('#signin-message').textContent;",
        json!([]),
    );
    message.as_str().unwrap_or_default().to_owned()
}

/// Name and password sign-in from the page (`POST /v1/login`, a user added with `edge user
/// add`): a wrong password is refused, a second one locks the name, even the right password
/// is then refused until the lock ends, and then it signs in with the user's scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"
)]
async fn the_page_signs_in_with_a_name_and_password() {
    let server = TestServer::start_with(|config| {
        config.login.failure_delay_ms = 50;
        config.login.max_failures_per_name = 2;
        config.login.lockout_secs = 2;
    })
    .await;
    let dir = server.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let added = crate::login::edge_user(
            &dir,
            &["add", "tester", "--scope", "ports:read jobs:read"],
            "correct horse\n",
        );
        assert!(added.status.success(), "{added:?}");
    })
    .await
    .unwrap();
    let flags = flags(&server, "h2");
    let origin = origin(&server);
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&flags);
        sign_in_with_password(&browser, &origin, "tester", "wrong password");
        assert_eq!(signin_message(&browser), "wrong name or password");
        assert_eq!(
            browser.run("return document.querySelector('#app').hidden;", json!([])),
            true
        );
        sign_in_with_password(&browser, &origin, "tester", "wrong again");
        assert_eq!(signin_message(&browser), "wrong name or password");
        sign_in_with_password(&browser, &origin, "tester", "correct horse");
        let locked = signin_message(&browser);
        assert!(locked.contains("too many failed sign-ins"), "{locked}");
        std::thread::sleep(std::time::Duration::from_millis(2200));
        sign_in_with_password(&browser, &origin, "tester", "correct horse");
        assert_eq!(wait_signed_in(&browser), "tester");
        let scope = browser.run(
            "return document.querySelector('#expires').title;",
            json!([]),
        );
        assert_eq!(scope, "Scopes: ports:read jobs:read");
    })
    .await
    .unwrap();
    server.stop().await;
}

/// The machine's curl over HTTP/2: `-D -` prints the head.
fn curl_head(server: &TestServer, args: &[&str], path: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--http2", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(server.ca())
        .args(args)
        .arg(format!("{}{path}", origin(server)))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().to_ascii_lowercase()
}

/// The value of header `name` (lowercase) in a head `curl -D -` printed.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_without_a_token_under_a_strict_policy() {
    let server = TestServer::start().await;
    let page = curl_head(&server, &[], "/");
    assert!(page.starts_with("http/2 200"), "{page}");
    assert_eq!(
        header(&page, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        header(&page, "content-security-policy"),
        Some(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    );
    assert_eq!(header(&page, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&page, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&page, "cache-control"), Some("no-cache"));
    let etag = header(&page, "etag").unwrap().to_owned();
    let html = std::fs::read(repository().join("web/index.html")).unwrap();
    assert_eq!(
        header(&page, "content-length"),
        Some(html.len().to_string().as_str())
    );

    let again = curl_head(&server, &["-H", &format!("If-None-Match: {etag}")], "/");
    assert!(again.starts_with("http/2 304"), "{again}");
    assert_eq!(header(&again, "etag"), Some(etag.as_str()));
    let changed = curl_head(&server, &["-H", "If-None-Match: \"other\""], "/");
    assert!(changed.starts_with("http/2 200"), "{changed}");

    for (path, file, media) in [
        ("/app.js", "web/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "web/app.css", "text/css; charset=utf-8"),
        ("/icon.svg", "web/icon.svg", "image/svg+xml; charset=utf-8"),
    ] {
        let head = curl_head(&server, &[], path);
        assert!(head.starts_with("http/2 200"), "{path}: {head}");
        assert_eq!(header(&head, "content-type"), Some(media), "{path}");
        let len = std::fs::metadata(repository().join(file)).unwrap().len();
        assert_eq!(
            header(&head, "content-length"),
            Some(len.to_string().as_str())
        );
        assert_ne!(header(&head, "etag"), Some(etag.as_str()), "{path}");
        assert!(header(&head, "content-security-policy").is_some(), "{path}");
    }
    let head = curl_head(&server, &["-I"], "/");
    assert!(head.starts_with("http/2 200"), "{head}");
    let post = curl_head(&server, &["-X", "POST"], "/");
    assert!(post.starts_with("http/2 405"), "{post}");
    assert_eq!(header(&post, "allow"), Some("get, head"));
    // Everything else still needs a token.
    let api = curl_head(&server, &[], "/v1/tasks");
    assert!(api.starts_with("http/2 401"), "{api}");
    let unknown = curl_head(&server, &[], "/app.jsx");
    assert!(unknown.starts_with("http/2 401"), "{unknown}");
    server.stop().await;
}

/// While a big file uploads, the page shows records committed: it follows the job through
/// `GET /v1/jobs/ref:<ref>/events`, since the upload's own response only shows once the body
/// is sent. Needs the server to know the job by the upload's `?ref=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"
)]
async fn the_page_shows_commits_while_the_file_is_still_uploading() {
    let server = TestServer::start().await;
    let token = server.token(ALL_SCOPES);
    let flags = flags(&server, "h2");
    let origin = origin(&server);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.ndjson");
    std::fs::write(&big, synthetic_ports_ndjson(150_000)).unwrap();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&flags);
        sign_in_with_token(&browser, &origin, &token);
        // Watch the row from inside the page, so that no moment is missed between two polls.
        browser.run(
            "window.liveCommits = 0;
             window.liveWatch = setInterval(() => {
               const row = document.querySelector('li.upload[data-name=\"big.ndjson\"]');
               if (row && row.dataset.state === 'uploading' && Number(row.dataset.committed) > 0) {
                 window.liveCommits = Math.max(window.liveCommits, Number(row.dataset.committed));
               }
             }, 10);",
            json!([]),
        );
        let row = upload(&browser, "ports", &big);
        assert_eq!(row["state"], "done", "{row}");
        assert_eq!(row["committed"], 150_000, "{row}");
        let live = browser.run("return window.liveCommits;", json!([]));
        assert!(
            live.as_u64().is_some_and(|n| n > 0),
            "no commit shown while uploading: {live}"
        );
        let watched = browser.wait_for(
            "the watch by ref to end",
            "return performance.getEntriesByType('resource')
                 .filter(e => e.name.includes('/v1/jobs/ref:') && e.responseStatus === 200).length;",
            json!([]),
        );
        assert_eq!(watched, 1, "the job was followed by its ref once");
    })
    .await
    .unwrap();
    server.stop().await;
}

/// Several files picked at once upload side by side; those the server refuses because the
/// subject runs too many jobs (`429 rate_limited`, here past one job at a time) wait as the
/// server says and go again, until every one is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"
)]
async fn the_page_uploads_several_files_and_retries_those_refused_as_rate_limited() {
    let server = TestServer::start_with(|config| config.limits.max_jobs_per_sub = 1).await;
    let token = server.token(ALL_SCOPES);
    let flags = flags(&server, "h2");
    let origin = origin(&server);
    let dir = tempfile::tempdir().unwrap();
    let names = ["first.json", "second.json", "third.json"];
    let paths: Vec<String> = names
        .iter()
        .map(|name| {
            let path = dir.path().join(name);
            std::fs::copy(ports_json(), &path).unwrap();
            path.to_string_lossy().into_owned()
        })
        .collect();
    let rows = tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&flags);
        sign_in_with_token(&browser, &origin, &token);
        browser.click("#task option[value=\"ports\"]");
        browser.type_into("#files", &paths.join("\n"));
        browser.wait_for(
            "three uploads done",
            "const rows = [...document.querySelectorAll('li.upload')];
             return rows.length === 3 && rows.every(r => ['done', 'failed', 'refused'].includes(r.dataset.state))
                 ? rows.map(r => ({name: r.dataset.name, state: r.dataset.state,
                                   committed: Number(r.dataset.committed), attempts: Number(r.dataset.attempts)}))
                 : null;",
            json!([]),
        )
    })
    .await
    .unwrap();
    let rows = rows.as_array().unwrap();
    for row in rows {
        assert_eq!(row["state"], "done", "{rows:?}");
        assert_eq!(row["committed"], 1634, "{rows:?}");
    }
    assert!(
        rows.iter().any(|row| row["attempts"].as_u64() > Some(1)),
        "one job at a time: some upload was refused and tried again: {rows:?}"
    );
    server.stop().await;
}

/// The files gallery downloads a file (fetched with the token, saved through an object URL)
/// and deletes one after asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs chromium and chromedriver: apt-get install chromium chromium-driver"
)]
async fn the_files_gallery_downloads_and_deletes_a_file() {
    let server = TestServer::start().await;
    let token = server.token(ALL_SCOPES);
    let flags = flags(&server, "h2");
    let origin = origin(&server);
    let downloads = tempfile::tempdir().unwrap();
    let saved = downloads.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&flags);
        browser.downloads_to(&saved);
        sign_in_with_token(&browser, &origin, &token);
        let picture = repository().join("samples/edge.png");
        assert_eq!(upload(&browser, "blobs", &picture)["state"], "done");
        browser.click("#tab-blobs");
        wait_preview(&browser, "edge.png");
        browser.click("#panel-blobs li.file[data-name=\"edge.png\"] button[aria-label=\"Download edge.png\"]");
        let file = saved.join("edge.png");
        let until = std::time::Instant::now() + crate::webdriver::WAIT;
        while !file.is_file() {
            assert!(std::time::Instant::now() < until, "no download in {saved:?}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Whole once Chromium renamed it from its partial name.
        assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&picture).unwrap());

        browser.click("#panel-blobs li.file[data-name=\"edge.png\"] button[aria-label=\"Delete edge.png\"]");
        let asked = browser.accept_dialog();
        assert_eq!(asked, "Delete edge.png? This cannot be undone.");
        browser.wait_for(
            "the card to go",
            "return document.querySelector('#panel-blobs li.file[data-name=\"edge.png\"]') === null;",
            json!([]),
        );
    })
    .await
    .unwrap();
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let gone = api.get("/v1/blobs/edge.png").await.unwrap();
    assert_eq!(gone.status, 404, "{gone:?}");
    api.close().await;
    server.stop().await;
}
