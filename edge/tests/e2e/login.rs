//! Users who sign in with a name and a password: `edge user add|passwd|scope|rm|list` (the
//! binary, through the running server's control socket), `POST /v1/login` over HTTP/2 with
//! the machine's curl, the token it gives, a wrong password, a lock-out and its end, and a
//! password change or removal ending the tokens issued before.

use crate::util::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const SCOPE: &str = "ports:read jobs:read";

/// `edge user ...` on the server's data dir, with `stdin` as standard input.
pub(crate) fn edge_user(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge"))
        .arg("user")
        .args(args)
        .env("EDGE_DATA_DIR", dir.join("data"))
        .env("EDGE_CERTS_DIR", dir.join("certs"))
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edge runs");
    let mut input = child.stdin.take().expect("piped");
    input.write_all(stdin.as_bytes()).expect("edge reads stdin");
    drop(input);
    child.wait_with_output().expect("edge ends")
}

fn ok(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A request over HTTP/2 with the machine's curl: the status and the body as JSON, and the
/// `Retry-After` header when there is one.
fn request(server: &TestServer, args: &[&str], path: &str) -> (u16, Value, Option<u64>) {
    let url = format!("https://127.0.0.1:{}{path}", server.addr.port());
    let out = Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "30", "--cacert"])
        .arg(server.ca())
        .args(["-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(&url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (rest, status) = text.rsplit_once('\n').expect("a status line");
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    let retry_after = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().parse().ok())?
    });
    let body = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    (status.trim().parse().expect("a status"), body, retry_after)
}

fn sign_in(server: &TestServer, name: &str, password: &str) -> (u16, Value, Option<u64>) {
    let body = serde_json::json!({"name": name, "password": password}).to_string();
    let args = [
        "-H",
        "content-type: application/json",
        "--data-binary",
        &body,
    ];
    request(server, &args, "/v1/login")
}

fn get_with(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let auth = format!("authorization: Bearer {token}");
    let (status, body, _) = request(server, &["-H", &auth], path);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_sign_in_get_their_scopes_and_lose_their_tokens_when_changed() {
    let server = TestServer::start_with(|config| {
        config.login.failure_delay_ms = 50;
        config.login.max_failures_per_name = 3;
        config.login.lockout_secs = 2;
    })
    .await;
    let dir = server.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let added = ok(edge_user(
            &dir,
            &["add", "ana", "--scope", SCOPE],
            "first password\n",
        ));
        assert!(added.contains("added ana"), "{added}");
        let again = edge_user(&dir, &["add", "ana", "--scope", SCOPE], "other password\n");
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
        let typo = edge_user(
            &dir,
            &["add", "bo", "--scope", "port:read"],
            "a password!\n",
        );
        assert!(String::from_utf8_lossy(&typo.stderr).contains("unknown scope"));
        let short = edge_user(&dir, &["add", "bo", "--scope", SCOPE], "short\n");
        assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8"));
        let list: Value =
            serde_json::from_str(&ok(edge_user(&dir, &["list", "--json"], ""))).unwrap();
        assert_eq!(list[0]["name"], "ana");
        assert_eq!(list[0]["scope"], SCOPE);
        assert!(list[0].get("hash").is_none(), "no hash leaves the store");
    })
    .await
    .unwrap();

    // The right password: a token with the user's scopes, which the API takes.
    let (status, body, _) = sign_in(&server, "ana", "first password");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], "ana");
    assert_eq!(body["scope"], SCOPE);
    let first = body["token"].as_str().expect("a token").to_owned();
    assert_eq!(get_with(&server, &first, "/v1/ports?limit=1").0, 200);
    let (status, body) = get_with(&server, &first, "/v1/blobs?limit=1");
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &Value::from("forbidden"))
    );

    // A form works too; a body that is neither is a 400 that says what to send.
    let form = [
        "--data-urlencode",
        "name=ana",
        "--data-urlencode",
        "password=first password",
    ];
    assert_eq!(request(&server, &form, "/v1/login").0, 200);
    let (status, body, _) = request(&server, &["--data-binary", "hello"], "/v1/login");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("password"));
    let (status, _, _) = request(&server, &[], "/v1/login");
    assert_eq!(status, 405, "GET /v1/login");

    // A wrong password and an unknown name get the very same answer.
    let (status, wrong, _) = sign_in(&server, "ana", "not her password");
    assert_eq!(status, 401);
    let (status, unknown, _) = sign_in(&server, "nobody", "not her password");
    assert_eq!(status, 401);
    assert_eq!(wrong, unknown);

    // Two more failures lock the name: even the right password is refused, with Retry-After,
    // until the lock ends.
    for _ in 0..2 {
        assert_eq!(sign_in(&server, "ana", "guess guess").0, 401);
    }
    let (status, body, retry_after) = sign_in(&server, "ana", "first password");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    assert_eq!(sign_in(&server, "ana", "first password").0, 200);

    // A new password ends the tokens issued before (also in the same second); the old
    // password no longer works.
    let dir = server.dir.path().to_owned();
    let changed = tokio::task::spawn_blocking(move || {
        ok(edge_user(&dir, &["passwd", "ana"], "second password\n"))
    })
    .await
    .unwrap();
    assert!(changed.contains("no longer work"), "{changed}");
    let (status, body) = get_with(&server, &first, "/v1/ports?limit=1");
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &Value::from("token_revoked"))
    );
    assert_eq!(sign_in(&server, "ana", "first password").0, 401);
    let (status, body, _) = sign_in(&server, "ana", "second password");
    assert_eq!(status, 200);
    let second = body["token"].as_str().unwrap().to_owned();
    assert_eq!(get_with(&server, &second, "/v1/ports?limit=1").0, 200);

    // Removing the user ends their tokens and their sign-ins.
    let dir = server.dir.path().to_owned();
    tokio::task::spawn_blocking(move || ok(edge_user(&dir, &["rm", "ana"], "")))
        .await
        .unwrap();
    assert_eq!(get_with(&server, &second, "/v1/ports?limit=1").0, 401);
    assert_eq!(sign_in(&server, "ana", "second password").0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_user_stays_refused_after_a_restart() {
    let server = TestServer::start().await;
    let dir = server.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        ok(edge_user(
            &dir,
            &["add", "cy", "--scope", SCOPE],
            "cys password\n",
        ))
    })
    .await
    .unwrap();
    let (status, body, _) = sign_in(&server, "cy", "cys password");
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let dir = server.dir.path().to_owned();
    tokio::task::spawn_blocking(move || ok(edge_user(&dir, &["rm", "cy"], "")))
        .await
        .unwrap();
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let (status, body) = get_with(&server, &token, "/v1/ports?limit=1");
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &Value::from("token_revoked"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn signing_in_works_over_http3_too() {
    use crate::http3::{curl_as, url};
    let server = TestServer::start().await;
    let dir = server.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        ok(edge_user(
            &dir,
            &["add", "dee", "--scope", SCOPE],
            "dees password\n",
        ))
    })
    .await
    .unwrap();
    let login = |password: &str| {
        let body = serde_json::json!({"name": "dee", "password": password}).to_string();
        vec![
            "-H".to_owned(),
            "content-type: application/json".to_owned(),
            "--data-binary".to_owned(),
            body,
            url(&server, "/v1/login"),
        ]
    };
    let (status, body) = curl_as(&server, None, login("dees password")).await;
    assert_eq!(status, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let (status, _) = curl_as(&server, Some(token), vec![url(&server, "/v1/jobs")]).await;
    assert_eq!(status, 200);
    let (status, body) = curl_as(&server, None, login("not dees password")).await;
    assert_eq!(status, 401, "{body}");
}
