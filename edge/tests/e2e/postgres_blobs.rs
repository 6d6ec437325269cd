//! The `blobs` task on the PostgreSQL store, against a real PostgreSQL server and a real
//! edge server: a file of several chunks goes up over edge/1 and comes back byte for byte
//! (whole, a range, revalidated), is listed and deleted; a download keeps the version it
//! started with while a replacement is published; the quota of a subject holds across two
//! nodes sharing the database, even for uploads racing on both; a digest mismatch leaves
//! nothing staged; and `edge store copy` carries blobs over from redb.
//!
//! Each test makes a database of its own (see [`crate::postgres`]); skipped where there is no
//! PostgreSQL.

use crate::http3::raw_h3_connection;
use crate::postgres::{on_postgres, open, piped};
use crate::util::*;
use edge_client::api::Api;
use edge_client::{Client, ClientConfig, UploadJob};
use edge_pg::cluster::Database;
use edge_proto::{ErrorCode, Event, JobHeader};
use serde_json::{json, Value};

/// A picture-like body: a JPEG signature, then `len` bytes that differ by `seed` (as in
/// [`crate::blobs`]).
fn picture(len: usize, seed: u8) -> Vec<u8> {
    let mut bytes = b"\xFF\xD8\xFF\xE0".to_vec();
    bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    bytes
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Uploads `body` as blob `name` (with more `params`) over edge/1.
async fn put(
    client: &Client,
    name: &str,
    params: Value,
    body: Vec<u8>,
) -> (edge_client::JobResult, Vec<Event>) {
    let mut header = JobHeader::new("blobs");
    header.name = Some(name.into());
    header.size = Some(body.len() as u64);
    if let Value::Object(params) = params {
        header.params = params;
    }
    upload_with(client, header, Box::new(std::io::Cursor::new(body))).await
}

/// The whole blob `name` through the read API: (its ETag, its bytes).
async fn download(config: &ClientConfig, name: &str) -> (String, Vec<u8>) {
    let mut api = Api::connect(config).await.unwrap();
    let mut got = Vec::new();
    let etag = api
        .download(&format!("/v1/blobs/{name}"), &mut |bytes| {
            got.extend_from_slice(bytes);
            Ok(())
        })
        .await
        .unwrap()
        .unwrap_or_else(|answer| panic!("{name}: {}", answer.error_message()));
    api.close().await;
    (etag, got)
}

/// `GET path` over HTTP/3 with extra request `headers`: (status, response headers, body).
async fn get_with(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    use bytes::Buf;
    let (_endpoint, connection) = raw_h3_connection(server).await;
    let (mut driver, mut requests) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let uri = format!("https://localhost:{}{path}", server.addr.port());
    let mut request = http::Request::get(uri).header(
        "authorization",
        format!("Bearer {}", server.token(ALL_SCOPES)),
    );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut stream = requests
        .send_request(request.body(()).unwrap())
        .await
        .unwrap();
    stream.finish().await.unwrap();
    let response = stream.recv_response().await.unwrap();
    let mut body = Vec::new();
    while let Some(mut data) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&data.copy_to_bytes(data.remaining()));
    }
    (response.status().as_u16(), response.headers().clone(), body)
}

/// The done event's summary, or a panic with how the job ended.
fn done_summary(result: &edge_client::JobResult) -> &Value {
    match &result.last {
        Event::Done { summary, .. } => summary,
        other => panic!("the job must be done: {other:?}"),
    }
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_several_chunks_goes_up_comes_back_by_range_and_is_listed_and_deleted() {
    let db = Database::new().unwrap();
    let server = TestServer::start_with(|c| on_postgres(c, db.url())).await;
    let client = server.client().await;
    // Several chunks of the store (each a little under 1 MiB), cut at odd places.
    let body = picture(5 * 1024 * 1024 + 4321, 7);
    let (result, _) = put(&client, "holiday.jpg", json!({}), body.clone()).await;
    let summary = done_summary(&result);
    assert_eq!(summary["size"], body.len());
    assert_eq!(summary["digest"], blake3_hex(&body));
    assert_eq!(summary["content_type"], "image/jpeg");
    assert_eq!(summary["replaced"], false);
    let small = picture(100, 8);
    put(&client, "holiday-2.jpg", json!({}), small.clone()).await;
    put(&client, "other.jpg", json!({}), small.clone()).await;
    client.close().await;

    // Whole, byte for byte.
    let (etag, got) = download(&server.client_config(), "holiday.jpg").await;
    assert_eq!(etag, blake3_hex(&body));
    assert!(got == body, "the download is the upload, byte for byte");

    // A range across a chunk boundary: 206 with those bytes.
    let chunk = edge_tasks::blobs::stored::CHUNK_BYTES;
    let (start, end) = (chunk - 1000, 2 * chunk + 500);
    let range = format!("bytes={start}-{end}");
    let (status, headers, part) =
        get_with(&server, "/v1/blobs/holiday.jpg", &[("range", &range)]).await;
    assert_eq!(status, 206);
    assert_eq!(
        headers["content-range"],
        format!("bytes {start}-{end}/{}", body.len()).as_str()
    );
    assert!(part == body[start..=end], "the range's bytes");
    // The last bytes, and a range past the end.
    let (status, _, tail) =
        get_with(&server, "/v1/blobs/holiday.jpg", &[("range", "bytes=-10")]).await;
    assert_eq!((status, tail.as_slice()), (206, &body[body.len() - 10..]));
    let past = format!("bytes={}-", body.len());
    let (status, _, _) = get_with(&server, "/v1/blobs/holiday.jpg", &[("range", &past)]).await;
    assert_eq!(status, 416);
    // Revalidation.
    let tag = format!("\"{}\"", blake3_hex(&body));
    let (status, _, nothing) =
        get_with(&server, "/v1/blobs/holiday.jpg", &[("if-none-match", &tag)]).await;
    assert_eq!((status, nothing.len()), (304, 0));

    // The list, in name order, by prefix and in pages.
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = api.get("/v1/blobs?prefix=holi").await.unwrap();
    assert_eq!(names(&listed.body), ["holiday-2.jpg", "holiday.jpg"]);
    assert_eq!(listed.body["items"][1]["size"], body.len());
    let first = api.get("/v1/blobs?limit=1").await.unwrap();
    assert_eq!(names(&first.body), ["holiday-2.jpg"]);
    let next = first.body["next"].as_str().unwrap().to_owned();
    let rest = api.get(&format!("/v1/blobs?after={next}")).await.unwrap();
    assert_eq!(names(&rest.body), ["holiday.jpg", "other.jpg"]);
    assert_eq!(rest.body["next"], Value::Null);

    // Deleted: gone from reads and from the store, chunks too.
    let deleted = api.delete("/v1/blobs/holiday.jpg").await.unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.error_message());
    assert_eq!(deleted.body["size"], body.len());
    assert_eq!(api.get("/v1/blobs/holiday.jpg").await.unwrap().status, 404);
    assert_eq!(
        api.delete("/v1/blobs/holiday.jpg").await.unwrap().status,
        404
    );
    api.close().await;
    let _ = server.stop().await;
    nothing_left(db.url());
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_keeps_the_version_it_started_while_a_replacement_is_published() {
    let db = Database::new().unwrap();
    let server = TestServer::start_with(|c| on_postgres(c, db.url())).await;
    // The download reads from its own transaction: the old version's chunks are already
    // gone from the tables for every later reader.
    let store = open(db.url());
    crate::blobs::reader_keeps_its_version(&server, || {
        assert_eq!(
            edge_tasks::blobs::stored::unpublished(&store).unwrap(),
            (0, 0),
            "the old version's chunks are gone from the tables"
        );
    })
    .await;
    let _ = server.stop().await;
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subjects_quota_holds_across_two_nodes_sharing_the_database() {
    use tokio::io::AsyncWriteExt;
    const QUOTA: u64 = 5_000_000;
    let db = Database::new().unwrap();
    let a = TestServer::start_with(|c| {
        on_postgres(c, db.url());
        c.limits.blob_bytes_per_sub = QUOTA;
    })
    .await;
    // Node B shares node A's certs dir: its CA, and its token keys (the same subject).
    let (b, b_client) =
        crate::postgres::second_node(&a, db.url(), |c| c.limits.blob_bytes_per_sub = QUOTA).await;
    let configs = [a.client_config(), b_client];

    // Two uploads of 3 MB, one on each node, both under way before either ends: each starts
    // with 0 bytes used, so only the publish (which counts under the usage row's lock) can
    // refuse one.
    let body = picture(3_000_000, 4);
    let mut pipes = Vec::new();
    let mut jobs = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let (writer, reader) = piped();
        let events = Events::new();
        let sink = events.sink();
        let config = config.clone();
        let mut header = JobHeader::new("blobs");
        header.name = Some(format!("race-{i}.jpg"));
        header.size = Some(body.len() as u64);
        jobs.push(tokio::spawn(async move {
            let client = Client::connect(&config).await.unwrap();
            let result = client
                .upload(UploadJob::new(header, reader), sink)
                .await
                .unwrap();
            client.close().await;
            result
        }));
        pipes.push((writer, events));
    }
    for (writer, events) in &mut pipes {
        writer.write_all(&body[..2_000_000]).await.unwrap();
        events
            .until("accepted", |e| matches!(e, Event::Accepted { .. }))
            .await;
    }
    for (writer, _) in &mut pipes {
        writer.write_all(&body[2_000_000..]).await.unwrap();
        writer.shutdown().await.unwrap();
    }
    let mut outcomes = Vec::new();
    for job in jobs {
        outcomes.push(job.await.unwrap().last);
    }
    let done = outcomes
        .iter()
        .filter(|e| matches!(e, Event::Done { .. }))
        .count();
    let refused: Vec<&String> = outcomes
        .iter()
        .filter_map(|e| match e {
            Event::Failed {
                code: ErrorCode::LimitExceeded,
                message,
                ..
            } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(
        (done, refused.len()),
        (1, 1),
        "one stored, one refused: {outcomes:?}"
    );
    assert!(
        refused[0].contains("keeps 3000004 bytes"),
        "counts the other node's blob: {}",
        refused[0]
    );

    // Then a third, on the other node than the stored one: refused before its body (the
    // usage is the database's, not a node's).
    let client = Client::connect(&configs[1]).await.unwrap();
    let (result, _) = put(&client, "third.jpg", json!({}), picture(2_500_000, 5)).await;
    assert!(
        matches!(
            &result.last,
            Event::Failed {
                code: ErrorCode::LimitExceeded,
                ..
            }
        ),
        "{:?}",
        result.last
    );
    // Within the quota, it is stored.
    let (result, _) = put(&client, "fits.jpg", json!({}), picture(1_000_000, 6)).await;
    done_summary(&result);
    client.close().await;
    let _ = a.stop().await;
    let _ = b.stop().await;
    let store = open(db.url());
    assert_eq!(
        edge_tasks::blobs::stored::unpublished(&store).unwrap(),
        (0, 0),
        "the refused uploads left nothing"
    );
    let context = edge_tasks::Context::new(store);
    let reads = edge_tasks::blobs::PLUGIN.reads.unwrap();
    let mut stored = 0;
    for name in ["race-0.jpg", "race-1.jpg", "third.jpg", "fits.jpg"] {
        if let Ok(item) = reads.read_one(&context, name) {
            stored += item["size"].as_u64().unwrap();
        }
    }
    assert_eq!(stored, 3_000_004 + 1_000_004, "within the quota of {QUOTA}");
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_leaves_the_old_version_and_nothing_staged() {
    let db = Database::new().unwrap();
    let server = TestServer::start_with(|c| on_postgres(c, db.url())).await;
    let client = server.client().await;
    let first = picture(1000, 3);
    put(&client, "keep.jpg", json!({}), first.clone()).await;
    // Several stage writes' worth (4 MiB each) before the digest is known.
    let (result, _) = put(
        &client,
        "keep.jpg",
        json!({"digest": blake3_hex(b"not this")}),
        picture(10 * 1024 * 1024, 4),
    )
    .await;
    let Event::Failed { code, message, .. } = &result.last else {
        panic!("{:?}", result.last)
    };
    assert_eq!(*code, ErrorCode::DigestMismatch);
    assert!(message.contains("the old version stays"), "{message}");
    let (result, _) = put(
        &client,
        "keep.jpg",
        json!({"if_absent": true}),
        picture(10, 5),
    )
    .await;
    assert!(
        matches!(
            result.last,
            Event::Failed {
                code: ErrorCode::AlreadyExists,
                ..
            }
        ),
        "{:?}",
        result.last
    );
    client.close().await;
    let (etag, got) = download(&server.client_config(), "keep.jpg").await;
    assert_eq!(etag, blake3_hex(&first));
    assert!(got == first);
    let _ = server.stop().await;
    nothing_left(db.url());
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_store_copy_carries_blobs_from_redb_to_postgres() {
    let db = Database::new().unwrap();
    let redb = TestServer::start().await;
    let client = redb.client().await;
    // More than one copying transaction's worth (64 MiB), and a small one.
    let big = picture(70 * 1024 * 1024, 21);
    let small = picture(5000, 22);
    put(&client, "big.jpg", json!({}), big.clone()).await;
    put(&client, "small.jpg", json!({}), small.clone()).await;
    client.close().await;
    let dir = redb.stop().await;
    let root = dir.path().to_owned();
    let from = format!("redb:{}", root.join("data").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["store", "copy", "--from", &from, "--to", db.url()])
        .env("EDGE_DATA_DIR", root.join("data"))
        .env("EDGE_CERTS_DIR", root.join("certs"))
        .current_dir(&root)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blobs_line = report
        .lines()
        .find(|line| line.contains("blobs (task plugin)"))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        blobs_line.split_whitespace().take(2).collect::<Vec<_>>(),
        ["copied", "2"],
        "{report}"
    );
    assert!(
        !report
            .lines()
            .any(|line| line.contains("blobs") && !line.starts_with("copied")),
        "nothing of the blobs stays behind: {report}"
    );
    nothing_left(db.url());

    // The same deployment on PostgreSQL serves them, whole, and counts them to their owner.
    let server = TestServer::start_in(dir, |c| {
        on_postgres(c, db.url());
        c.limits.blob_bytes_per_sub = big.len() as u64 + small.len() as u64 + 10;
    })
    .await;
    let (etag, got) = download(&server.client_config(), "big.jpg").await;
    assert_eq!(etag, blake3_hex(&big));
    assert!(got == big, "the big blob, byte for byte");
    let (etag, got) = download(&server.client_config(), "small.jpg").await;
    assert_eq!(etag, blake3_hex(&small));
    assert!(got == small);
    let total = big.len() + small.len();
    let more = |server: &TestServer| {
        let config = server.client_config();
        async move {
            let client = Client::connect(&config).await.unwrap();
            let (result, _) = put(&client, "more.jpg", json!({}), picture(100, 23)).await;
            client.close().await;
            match result.last {
                Event::Failed {
                    code: ErrorCode::LimitExceeded,
                    message,
                    ..
                } => message,
                other => panic!("the copied blobs count to the quota: {other:?}"),
            }
        }
    };
    let refused = more(&server).await;
    assert!(
        refused.contains(&format!("keeps {total} bytes")),
        "{refused}"
    );

    // Copied again (as a copy cut off is run again): the same blobs, nothing counted twice,
    // nothing of the first copy's versions left.
    let dir = server.stop().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["store", "copy", "--from", &from, "--to", db.url()])
        .env("EDGE_DATA_DIR", dir.path().join("data"))
        .env("EDGE_CERTS_DIR", dir.path().join("certs"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        edge_tasks::blobs::stored::unpublished(&open(db.url())).unwrap(),
        (0, 0),
        "the first copy's chunks went with its versions"
    );
    let server = TestServer::start_in(dir, |c| {
        on_postgres(c, db.url());
        c.limits.blob_bytes_per_sub = big.len() as u64 + small.len() as u64 + 10;
    })
    .await;
    let refused = more(&server).await;
    assert!(
        refused.contains(&format!("keeps {total} bytes")),
        "{refused}"
    );
    let (etag, got) = download(&server.client_config(), "big.jpg").await;
    assert_eq!(etag, blake3_hex(&big));
    assert!(got == big, "the big blob, byte for byte, again");
    let _ = server.stop().await;
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_prunes_its_own_cut_off_uploads_at_start_and_leaves_other_nodes_ones() {
    let db = Database::new().unwrap();
    let store = open(db.url());
    // Two uploads cut off (as by a crash): one of node A, one of node B, each with a chunk.
    let pg = edge_tasks::store::Pg::connect(&edge_tasks::store::PgOptions::new(db.url())).unwrap();
    pg.block(|pg| async move {
        let client = pg.client().await?;
        for (id, node) in [(900_001i64, "node-a"), (900_002, "node-b")] {
            let staged = json!({"name": "cut.jpg", "job": "j", "sub": "tester",
                "started_ms": 1, "node": node})
            .to_string();
            client
                .execute(
                    "INSERT INTO blob_staging (id, node, staged) VALUES ($1, $2, $3::text::json)",
                    &[&id, &node, &staged],
                )
                .await
                .map_err(pg.query("stage"))?;
            client
                .execute(
                    "INSERT INTO blob_chunks (id, n, data) VALUES ($1, 0, $2)",
                    &[&id, &vec![7u8; 1000]],
                )
                .await
                .map_err(pg.query("write a chunk"))?;
        }
        Ok::<(), edge_pg::PgError>(())
    })
    .unwrap();
    let unpublished = || edge_tasks::blobs::stored::unpublished(&store).unwrap();
    assert_eq!(unpublished(), (2, 2));

    // Node A starts again: its prune (at start) drops its upload, not node B's.
    let server = TestServer::start_with(|c| {
        on_postgres(c, db.url());
        c.store.node = Some("node-a".into());
    })
    .await;
    let started = std::time::Instant::now();
    while unpublished() != (1, 1) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "node A pruned nothing: {:?}",
            unpublished()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Its own uploads work on, beside node B's staged one.
    let client = server.client().await;
    let body = picture(2_000_000, 9);
    let (result, _) = put(&client, "after.jpg", json!({}), body.clone()).await;
    done_summary(&result);
    client.close().await;
    let _ = server.stop().await;
    assert_eq!(
        unpublished(),
        (1, 1),
        "node B's upload is node B's to prune"
    );
}

#[cfg_attr(not(has_postgres), ignore = "no PostgreSQL here (see edge/build.rs)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_while_the_database_is_away_fails_store_unavailable_and_the_next_one_works() {
    // A cluster of its own: the test stops and starts it.
    let cluster = edge_pg::cluster::Cluster::start().unwrap();
    let url = cluster.url("postgres");
    let server = TestServer::start_with(|c| on_postgres(c, &url)).await;
    let client = server.client().await;
    let body = picture(3_000_000, 12);

    cluster.stop().unwrap();
    let (result, _) = put(&client, "away.jpg", json!({}), body.clone()).await;
    let Event::Failed { code, message, .. } = &result.last else {
        panic!("the job must fail: {:?}", result.last);
    };
    assert_eq!(*code, ErrorCode::StoreUnavailable, "{message}");
    assert!(
        message.contains("127.0.0.1"),
        "names the database: {message}"
    );

    cluster.start_again().unwrap();
    let (result, _) = put(&client, "away.jpg", json!({}), body.clone()).await;
    done_summary(&result);
    client.close().await;
    let (etag, got) = download(&server.client_config(), "away.jpg").await;
    assert_eq!(etag, blake3_hex(&body));
    assert!(got == body);
    let _ = server.stop().await;
    nothing_left(&url);
}

/// Checks that the database holds no staged upload and no chunk of no blob.
fn nothing_left(url: &str) {
    assert_eq!(
        edge_tasks::blobs::stored::unpublished(&open(url)).unwrap(),
        (0, 0),
        "no staged upload, no chunk of no blob"
    );
}
