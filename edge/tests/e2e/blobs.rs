//! The `blobs` task over the real server: files uploaded as they are over edge/1 (the library
//! and the `edge-client` binary) and with a real HTTP/3 curl, served back with their headers,
//! ranges and entity tags, replaced atomically for a reader, refused by digest, name and
//! quota, and deleted under their own scope.

use crate::http3::{curl_as, url};
use crate::util::*;
use edge_client::api::Api;
use edge_proto::{ErrorCode, Event, JobHeader};
use serde_json::{json, Value};

/// A picture-like body: a JPEG signature, then `len` bytes that differ by `seed`.
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
    client: &edge_client::Client,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_up_over_edge1_and_comes_back_whole_with_its_digest() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // Several chunks of the store (each a little under 1 MiB), cut at odd places.
    let body = picture(3 * 1024 * 1024 + 4321, 7);
    let (result, events) = put(&client, "holiday.jpg", json!({}), body.clone()).await;
    let Event::Done {
        records,
        committed,
        summary,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!((*records, *committed), (1, 1));
    assert_eq!(summary["name"], "holiday.jpg");
    assert_eq!(summary["content_type"], "image/jpeg");
    assert_eq!(summary["size"], body.len());
    assert_eq!(summary["digest"], blake3_hex(&body));
    assert_eq!(summary["sub"], "tester");
    assert!(matches!(
        events.first(),
        Some(Event::Accepted {
            format: edge_proto::Format::Raw,
            ..
        })
    ));

    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let mut got = Vec::new();
    let etag = api
        .download("/v1/blobs/holiday.jpg", &mut |bytes| {
            got.extend_from_slice(bytes);
            Ok(())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(etag, blake3_hex(&body));
    assert_eq!(got, body);
    let listed = api.get("/v1/blobs?prefix=holi").await.unwrap();
    assert_eq!(listed.body["items"][0]["size"], body.len());
    let missing = api.get("/v1/blobs?prefix=zzz").await.unwrap();
    assert_eq!(missing.body["items"], json!([]));
    api.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_keeps_the_version_it_started_while_a_replacement_is_published() {
    let server = TestServer::start().await;
    reader_keeps_its_version(&server, || {}).await;
}

/// A 40 MiB download paused after its first 4 MiB while a new version is published (then
/// `replaced` runs): the download is the old version, whole; a later reader gets the new one.
pub(crate) async fn reader_keeps_its_version(server: &TestServer, replaced_then: impl FnOnce()) {
    let client = server.client().await;
    // Larger than what the QUIC windows and the server's read-ahead hold in flight, so
    // the server still reads the old version's last chunks after the replacement landed.
    let old = picture(40 * 1024 * 1024, 1);
    let new = picture(1024 * 1024, 2);
    put(&client, "swap.jpg", json!({}), old.clone()).await;

    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let (started, replaced) = (
        std::sync::Arc::new(tokio::sync::Notify::new()),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let (tell, seen) = (started.clone(), replaced.clone());
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let etag = api
            .download("/v1/blobs/swap.jpg", &mut |bytes| {
                if got.is_empty() {
                    tell.notify_one();
                }
                got.extend_from_slice(bytes);
                // Paused after its first 4 MiB until the replacement is published.
                if got.len() > 4 * 1024 * 1024 {
                    tokio::task::block_in_place(|| {
                        while !seen.load(std::sync::atomic::Ordering::SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    });
                }
                Ok(())
            })
            .await
            .unwrap()
            .unwrap();
        api.close().await;
        (etag, got)
    });
    started.notified().await;
    let (result, _) = put(&client, "swap.jpg", json!({}), new.clone()).await;
    assert!(
        matches!(result.last, Event::Done { .. }),
        "{:?}",
        result.last
    );
    replaced_then();
    replaced.store(true, std::sync::atomic::Ordering::SeqCst);
    let (etag, got) = reader.await.unwrap();
    assert_eq!(etag, blake3_hex(&old));
    assert!(got == old, "the download is the old version, whole");
    // What a later reader finds: the new version's description.
    let later = client_description(server, "swap.jpg").await;
    assert_eq!(later["digest"], blake3_hex(&new));
    client.close().await;
}

/// Blob `name`'s description, through the read API.
async fn client_description(server: &TestServer, name: &str) -> Value {
    let mut api = Api::connect(&server.client_config()).await.unwrap();
    let answer = api.get(&format!("/v1/blobs?prefix={name}")).await.unwrap();
    api.close().await;
    answer.body["items"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_the_old_version_and_nothing_staged() {
    let server =
        TestServer::start_with(|config| config.limits.blob_bytes_per_sub = 4_000_000).await;
    let client = server.client().await;
    let first = picture(1000, 3);
    put(&client, "keep.jpg", json!({}), first.clone()).await;

    let wrong = blake3_hex(b"not this");
    let (result, _) = put(
        &client,
        "keep.jpg",
        json!({"digest": wrong}),
        picture(2000, 4),
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
    assert!(matches!(
        result.last,
        Event::Failed {
            code: ErrorCode::AlreadyExists,
            ..
        }
    ));

    // Past the quota (4 MB for this subject): refused while it arrives, nothing kept.
    let (result, _) = put(&client, "huge.jpg", json!({}), picture(5_000_000, 6)).await;
    let Event::Failed { code, message, .. } = &result.last else {
        panic!("{:?}", result.last)
    };
    assert_eq!(*code, ErrorCode::LimitExceeded);
    assert!(message.contains("limits.blob_bytes_per_sub"), "{message}");

    let (result, _) = put(
        &client,
        "x",
        json!({"name": "../etc/passwd"}),
        b"x".to_vec(),
    )
    .await;
    let Event::Rejected { code, message, .. } = &result.last else {
        panic!("{:?}", result.last)
    };
    assert_eq!(*code, ErrorCode::BadParams);
    assert!(message.contains("letters, digits"), "{message}");

    let dir = server.stop().await;
    let store = edge_tasks::Store::open(
        &dir.path().join("data/edge.redb"),
        &edge_tasks::store::StoreOptions::default(),
    )
    .unwrap();
    assert_eq!(
        edge_tasks::blobs::stored::unpublished(&store).unwrap(),
        (0, 0),
        "no staged upload, no chunk of no blob"
    );
    let context = edge_tasks::Context::new(store);
    let reads = edge_tasks::blobs::PLUGIN.reads.unwrap();
    let kept = reads.read_one(&context, "keep.jpg").unwrap();
    assert_eq!(kept["digest"], blake3_hex(&first));
    assert!(reads.read_one(&context, "huge.jpg").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_client_uploads_saves_lists_and_removes_a_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("IMG 0001.jpg");
    let body = picture(1_500_000, 9);
    std::fs::write(&photo, &body).unwrap();
    let saved = dir.path().join("copy.jpg");
    let (address, ca, token) = (
        format!("https://127.0.0.1:{}", server.addr.port()),
        server.ca(),
        server.token("blobs:write blobs:read blobs:delete"),
    );
    let run = move |args: Vec<std::ffi::OsString>| run_client(&address, &ca, &token, args);
    let os = |args: &[&str]| {
        args.iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
    };
    let (up, get, list, rm, gone) = tokio::task::spawn_blocking({
        let (photo, saved) = (photo.clone(), saved.clone());
        move || {
            let mut upload = os(&["upload", "--task", "blobs"]);
            upload.push(photo.into());
            let mut get = os(&["blobs", "get", "IMG_0001.jpg", "-o"]);
            get.push(saved.into());
            (
                run(upload),
                run(get),
                run(os(&["blobs", "list"])),
                run(os(&["blobs", "rm", "IMG_0001.jpg"])),
                run(os(&["blobs", "get", "IMG_0001.jpg"])),
            )
        }
    })
    .await
    .unwrap();
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert_eq!(up.status.code(), Some(0), "{}", text(&up));
    assert!(text(&up).contains("done: 1 records"), "{}", text(&up));
    assert_eq!(get.status.code(), Some(0), "{}", text(&get));
    assert!(std::fs::read(&saved).unwrap() == body, "saved whole");
    assert!(text(&get).contains(&blake3_hex(&body)), "{}", text(&get));
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(listing.starts_with("NAME"), "{listing}");
    assert!(
        listing.contains("IMG_0001.jpg") && listing.contains("image/jpeg"),
        "{listing}"
    );
    assert_eq!(rm.status.code(), Some(0), "{}", text(&rm));
    assert!(text(&rm).contains("\"deleted\""), "{}", text(&rm));
    assert_ne!(gone.status.code(), Some(0));
    assert!(text(&gone).contains("not_found"), "{}", text(&gone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn curl_uploads_reads_ranges_revalidates_and_deletes_a_file() {
    let server = TestServer::start().await;
    let all = Some(server.token(ALL_SCOPES));
    // curl ARGS.. URL(path), with `token`; (status, body).
    let at = |token: &Option<String>, args: &[&str], path: &str| {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(url(&server, path));
        curl_as(&server, token.clone(), args)
    };
    let file = server.dir.path().join("notes.txt");
    let text = "line one\nline two\nline three\n".repeat(1000);
    std::fs::write(&file, &text).unwrap();
    let file = file.display().to_string();
    let (status, body) = at(&all, &["-T", &file], "/v1/jobs/blobs?name=notes.txt").await;
    assert_eq!(status, 200, "{body}");
    let done: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(done["event"], "done", "{body}");
    let digest = blake3_hex(text.as_bytes());
    assert_eq!(done["summary"]["digest"], digest.as_str());
    assert_eq!(done["summary"]["content_type"], "text/plain; charset=utf-8");

    // The whole file, with its headers.
    let blob = "/v1/blobs/notes.txt";
    let (status, out) = at(&all, &["-i"], blob).await;
    assert_eq!(status, 200);
    let (head, content) = out.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    for header in [
        "content-type: text/plain; charset=utf-8".to_owned(),
        format!("content-length: {}", text.len()),
        format!("etag: \"{digest}\""),
        "last-modified: ".to_owned(),
        "x-content-type-options: nosniff".to_owned(),
    ] {
        assert!(head.contains(&header), "{header} in {head}");
    }
    assert!(
        content == text,
        "the body is the file ({} bytes of {})",
        content.len(),
        text.len()
    );

    // One range, and one past the end.
    let (status, out) = at(&all, &["-i", "-r", "5-12"], blob).await;
    assert_eq!(status, 206, "{out}");
    let range = format!("content-range: bytes 5-12/{}", text.len());
    assert!(out.to_ascii_lowercase().contains(&range), "{out}");
    assert!(out.ends_with("\r\n\r\none\nline"), "{out}");
    assert_eq!(at(&all, &["-r", "99999999-"], blob).await.0, 416);

    // Revalidation, and HEAD.
    let tag = format!("if-none-match: \"{digest}\"");
    assert_eq!(at(&all, &["-H", &tag], blob).await, (304, String::new()));
    let (status, out) = at(&all, &["-I"], blob).await;
    assert_eq!(status, 200);
    assert!(out.to_ascii_lowercase().contains("etag:"), "{out}");

    // base64, as browsers send pictures.
    use base64::Engine as _;
    let png = [&b"\x89PNG\r\n\x1a\n"[..], &[0u8, 1, 2, 250, 251]].concat();
    let encoded = server.dir.path().join("png.b64");
    std::fs::write(
        &encoded,
        base64::engine::general_purpose::STANDARD.encode(&png),
    )
    .unwrap();
    let encoded = encoded.display().to_string();
    let base64_png = ["-H", "content-type: image/png;base64", "-T", &encoded];
    let (status, body) = at(&all, &base64_png, "/v1/jobs/blobs?name=dot.png").await;
    assert_eq!(status, 200, "{body}");
    let done: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(done["summary"]["content_type"], "image/png", "{body}");
    assert_eq!(done["summary"]["digest"], blake3_hex(&png).as_str());

    // Deleting takes its own scope.
    let delete = ["-X", "DELETE"];
    let (status, out) = at(&Some(server.token("blobs:read")), &delete, blob).await;
    assert_eq!(status, 403, "{out}");
    assert!(out.contains("blobs:delete"), "{out}");
    let (status, out) = at(&all, &delete, blob).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(at(&all, &[], blob).await.0, 404);
    let (status, out) = at(&all, &delete, blob).await;
    assert_eq!(status, 404, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_binary_saves_lists_and_removes_files_in_the_store_file() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let body = picture(2_500_000, 11);
    put(&client, "offline.jpg", json!({}), body.clone()).await;
    drop(client);
    let dir = server.stop().await;
    let saved = dir.path().join("saved.jpg");
    let run = |args: &[&str]| crate::binary::edge(dir.path(), args);
    let get = run(&["blobs", "get", "offline.jpg", "-o", saved.to_str().unwrap()]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(std::fs::read(&saved).unwrap() == body, "saved whole");
    let list = run(&["blobs", "list", "--prefix", "off"]);
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.contains("offline.jpg") && table.contains("2500004"),
        "{table}"
    );
    let rm = run(&["blobs", "rm", "offline.jpg"]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let gone = run(&["blobs", "get", "offline.jpg"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no blob `offline.jpg`"));
}
