//! Change history for ports over the real server: a sequence of real uploads, the versions
//! each replaced (`GET /v1/ports/{code}/history`, `edge-client ports history`), and undoing
//! one of them (`POST /v1/jobs/{id}/revert` with curl, `edge ports revert --job` offline).

use crate::binary::edge;
use crate::http3::{curl, curl_as, url};
use crate::util::*;
use edge_client::Client;
use edge_proto::{Event, Format};
use serde_json::{json, Value};
use std::process::Command;

/// Uploads NDJSON ports `(code, name)` as one job; returns its id.
pub(crate) async fn ports_job(client: &Client, ports: &[(&str, &str)]) -> String {
    let body: String = ports
        .iter()
        .map(|(code, name)| format!("{{\"name\":\"{name}\",\"unlocs\":[\"{code}\"]}}\n"))
        .collect();
    let (result, _) = upload(client, "ports", Some(Format::Ndjson), body.into_bytes()).await;
    match result.last {
        Event::Done { job, errors: 0, .. } => job,
        other => panic!("{other:?}"),
    }
}

fn names(server_dir: &std::path::Path) -> Vec<(String, String)> {
    all_ports(&server_dir.join("data/edge.redb"))
        .into_iter()
        .map(|(code, port)| (code, port.name))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_client_shows_a_ports_history_and_edge_reverts_a_job_offline() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let first = ports_job(&client, &[("AAAAA", "a1"), ("BBBBB", "b1")]).await;
    let second = ports_job(
        &client,
        &[("AAAAA", "a2"), ("BBBBB", "b1"), ("CCCCC", "c2")],
    )
    .await;
    client.close().await;

    let out = Command::new(client_binary())
        .args(["ports", "history", "AAAAA", "--json", "--server"])
        .arg(format!("https://127.0.0.1:{}", server.addr.port()))
        .arg("--ca")
        .arg(server.ca())
        .args(["--token", &server.token("ports:read")])
        .env_remove("EDGE_SERVER")
        .env_remove("EDGE_CA")
        .env_remove("EDGE_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["job"], json!(second));
    assert_eq!(items[0]["sub"], "tester");
    assert_eq!(items[0]["was"], "a1");
    assert_eq!(items[0]["replaced"]["name"], "a1");
    assert!(items[0]["time"].as_str().unwrap().ends_with('Z'), "{page}");

    let dir = server.stop().await;
    let out = edge(dir.path(), &["ports", "revert", "--job", &second]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &report["restored"],
            &report["removed"],
            &report["left_alone"]
        ),
        (&json!(1), &json!(1), &json!(0)),
        "{report}"
    );
    assert_eq!(
        names(dir.path()),
        pairs(&[("AAAAA", "a1"), ("BBBBB", "b1")])
    );
    // The first job inserted both: reverting it empties the store.
    let out = edge(dir.path(), &["ports", "revert", "--job", &first]);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed"], 2, "{report}");
    // AAAAA was restored by the revert above, which came later: it is left alone.
    assert_eq!(report["left_alone"], 0, "{report}");
    assert!(names(dir.path()).is_empty());

    let out = edge(
        dir.path(),
        &["ports", "revert", "--job", "0000000000000000"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no job"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn an_admin_reverts_an_upload_over_http3_and_later_changes_are_left_alone() {
    let server = TestServer::start().await;
    let client = server.client().await;
    ports_job(&client, &[("AAAAA", "a1"), ("BBBBB", "b1")]).await;
    let bad = ports_job(
        &client,
        &[("AAAAA", "oops"), ("BBBBB", "oops"), ("CCCCC", "oops")],
    )
    .await;
    let later = ports_job(&client, &[("BBBBB", "b3")]).await;
    let (stats, _) = upload(&client, "stats", Some(Format::Lines), b"1\n".to_vec()).await;
    let Event::Done { job: stats_job, .. } = stats.last else {
        panic!("{:?}", stats.last)
    };
    client.close().await;

    let (status, body) = curl(&server, vec![url(&server, "/v1/ports/BBBBB/history")]).await;
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    let jobs: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, [later.as_str(), bad.as_str()], "newest first");

    let revert = |job: &str| {
        vec![
            "-X".to_owned(),
            "POST".to_owned(),
            url(&server, &format!("/v1/jobs/{job}/revert")),
        ]
    };
    // Reverting takes `admin`.
    let (status, body) = curl(&server, revert(&bad)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("`admin`"), "{body}");

    let admin = Some(server.token("admin"));
    let (status, body) = curl_as(&server, admin.clone(), revert(&bad)).await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            &report["restored"],
            &report["removed"],
            &report["left_alone"]
        ),
        (&json!(1), &json!(1), &json!(1)),
        "{report}"
    );
    assert_eq!(
        report["left_alone_codes"],
        json!([{"code": "BBBBB", "changed_by": [later]}])
    );

    let (status, body) = curl_as(&server, admin.clone(), revert(&stats_job)).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("keeps nothing to revert"), "{body}");
    let (status, _) = curl_as(&server, admin.clone(), revert("0000000000000000")).await;
    assert_eq!(status, 404);
    let (status, _) = curl_as(
        &server,
        admin,
        vec![url(&server, &format!("/v1/jobs/{bad}/revert"))],
    )
    .await;
    assert_eq!(status, 405, "GET is not a revert");

    let dir = server.stop().await;
    assert_eq!(
        names(dir.path()),
        pairs(&[("AAAAA", "a1"), ("BBBBB", "b3")])
    );
}
