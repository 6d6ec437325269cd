//! The `blobs` plugin through the pipeline, on a real store: uploads, reads, ranges,
//! replacement, the refusals, base64, and that nothing of a failed or cut-off upload remains.

use super::*;
use crate::pipeline::{run, Input, JobSpec, Report, Settings, Source};
use crate::store::StoreOptions;
use bytes::Bytes;
use edge_proto::Event;
use std::collections::VecDeque;
use std::time::Duration;

struct Script(VecDeque<Input>);

impl Source for Script {
    fn next(&mut self, _wait: Duration) -> Input {
        self.0.pop_front().unwrap_or(Input::End)
    }
}

fn chunks(body: &[u8], size: usize) -> Script {
    Script(
        body.chunks(size)
            .map(|c| Input::Chunk(Bytes::copy_from_slice(c)))
            .collect(),
    )
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("edge.redb"), &StoreOptions::default()).unwrap();
    (dir, store)
}

fn context(store: &Store, sub: &str) -> Context {
    Context::new(store.clone()).for_job(JobRef {
        id: format!("job-of-{sub}"),
        sub: sub.into(),
    })
}

fn upload(
    context: &Context,
    params: Value,
    source: &mut dyn Source,
) -> Result<(Report, Vec<Event>), ParamError> {
    let params = params.as_object().cloned().unwrap_or_default();
    let task = (PLUGIN.create)(&params, context)?;
    let spec = JobSpec {
        job: "j".into(),
        upload_stream: None,
        task: "blobs".into(),
        format: Some(Format::Json),
        name: None,
        size: None,
        source: None,
        unchanged: false,
        sha256: None,
        atomic: false,
    };
    let mut events = Vec::new();
    let report = run(
        &spec,
        &PLUGIN,
        task,
        source,
        &Settings::default(),
        &mut |e| events.push(e),
    );
    Ok((report, events))
}

fn read_all(store: &Store, name: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let mut content = stored::open(store, name).unwrap().unwrap();
    let mut out = Vec::new();
    content
        .read(range, &mut |b| {
            out.extend_from_slice(&b);
            true
        })
        .unwrap();
    out
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn failed_code(report: &Report) -> ErrorCode {
    match &report.last {
        Event::Failed { code, .. } => *code,
        other => panic!("expected failed, got {other:?}"),
    }
}

#[test]
fn a_blob_is_stored_in_chunks_and_read_back_whole_and_in_ranges() {
    let (_dir, store) = store();
    let data = body(2 * CHUNK_BYTES + 12_345);
    let (report, events) = upload(
        &context(&store, "ann"),
        json!({"name": "big.bin"}),
        &mut chunks(&data, 70_000),
    )
    .unwrap();
    let Event::Done {
        records,
        committed,
        summary,
        ..
    } = &report.last
    else {
        panic!("{:?}", report.last)
    };
    assert_eq!((*records, *committed), (1, 1));
    let digest = blake3::hash(&data).to_hex().to_string();
    assert_eq!(summary["digest"], json!(digest));
    assert_eq!(summary["size"], json!(data.len()));
    assert_eq!(summary["content_type"], json!("application/octet-stream"));
    assert_eq!(summary["replaced"], json!(false));
    assert!(matches!(
        events[0],
        Event::Accepted {
            format: Format::Raw,
            ..
        }
    ));
    assert_eq!(chunk_count(&store), 3, "two full chunks and the rest");

    let len = data.len() as u64;
    assert_eq!(read_all(&store, "big.bin", 0..len), data);
    let cut = CHUNK_BYTES as u64;
    for range in [0..1, cut - 3..cut + 5, len - 10..len, 5..2 * cut + 7] {
        let (from, to) = (range.start as usize, range.end as usize);
        assert_eq!(read_all(&store, "big.bin", range), &data[from..to]);
    }
    let info = stored::open(&store, "big.bin").unwrap().unwrap();
    assert_eq!(info.info().etag, digest);
    assert_eq!(stored::unpublished(&store).unwrap(), (0, 0));
    assert_eq!(stored::usage(&store, "ann").unwrap(), len);
}

#[test]
fn an_empty_body_and_a_named_file_with_a_sniffed_type() {
    let (_dir, store) = store();
    let mut ctx = context(&store, "ann");
    ctx.upload.name = Some("My Photo.png".into());
    let png = b"\x89PNG\r\n\x1a\n rest of a picture";
    let (report, _) = upload(&ctx, json!({}), &mut chunks(png, 3)).unwrap();
    let Event::Done { summary, .. } = &report.last else {
        panic!()
    };
    assert_eq!(summary["name"], json!("My_Photo.png"));
    assert_eq!(summary["content_type"], json!("image/png"));

    let (report, _) = upload(
        &context(&store, "ann"),
        json!({"name": "empty"}),
        &mut chunks(b"", 1),
    )
    .unwrap();
    let Event::Done { summary, .. } = &report.last else {
        panic!()
    };
    assert_eq!(summary["size"], json!(0));
    assert_eq!(read_all(&store, "empty", 0..0), b"");
}

#[test]
fn replacing_keeps_one_version_and_frees_the_old_chunks() {
    let (_dir, store) = store();
    let ctx = context(&store, "ann");
    let first = body(CHUNK_BYTES + 1);
    upload(&ctx, json!({"name": "a"}), &mut chunks(&first, 65_536)).unwrap();
    let second = b"short".to_vec();
    let (report, _) = upload(
        &ctx,
        json!({"name": "a", "content_type": "text/plain"}),
        &mut chunks(&second, 2),
    )
    .unwrap();
    let Event::Done { summary, .. } = &report.last else {
        panic!()
    };
    assert_eq!(summary["replaced"], json!(true));
    assert_eq!(summary["content_type"], json!("text/plain"));
    assert_eq!(read_all(&store, "a", 0..5), second);
    assert_eq!(chunk_count(&store), 1, "the old version's chunks are gone");
    assert_eq!(stored::usage(&store, "ann").unwrap(), 5);

    let (report, _) = upload(
        &ctx,
        json!({"name": "a", "if_absent": true}),
        &mut chunks(b"x", 1),
    )
    .unwrap();
    assert_eq!(failed_code(&report), ErrorCode::AlreadyExists);
    assert_eq!(read_all(&store, "a", 0..5), second);
}

#[test]
fn a_digest_mismatch_leaves_the_old_version_and_no_chunks() {
    let (_dir, store) = store();
    let ctx = context(&store, "ann");
    upload(&ctx, json!({"name": "a"}), &mut chunks(b"old", 3)).unwrap();
    let new = body(3 * CHUNK_BYTES);
    let wrong = blake3::hash(b"something else").to_hex().to_string();
    let (report, _) = upload(
        &ctx,
        json!({"name": "a", "digest": wrong}),
        &mut chunks(&new, 100_000),
    )
    .unwrap();
    assert_eq!(failed_code(&report), ErrorCode::DigestMismatch);
    let Event::Failed {
        message, committed, ..
    } = &report.last
    else {
        panic!()
    };
    assert!(message.contains("the old version stays"), "{message}");
    assert_eq!(*committed, 0);
    assert_eq!(read_all(&store, "a", 0..3), b"old");
    assert_eq!(stored::unpublished(&store).unwrap(), (0, 0));

    let right = blake3::hash(&new).to_hex().to_string().to_uppercase();
    let (report, _) = upload(
        &ctx,
        json!({"name": "a", "digest": format!("blake3:{right}")}),
        &mut chunks(&new, 100_000),
    )
    .unwrap();
    assert!(
        matches!(report.last, Event::Done { .. }),
        "{:?}",
        report.last
    );
}

#[test]
fn a_cut_off_upload_leaves_nothing() {
    let (_dir, store) = store();
    let ctx = context(&store, "ann");
    let data = body(5 * CHUNK_BYTES);
    let mut script = chunks(&data, 1 << 20);
    script.0.push_back(Input::Aborted {
        code: ErrorCode::UploadAborted,
        message: "cut".into(),
    });
    let (report, _) = upload(&ctx, json!({"name": "cut"}), &mut script).unwrap();
    assert_eq!(failed_code(&report), ErrorCode::UploadAborted);
    assert!(stored::meta(&store, "cut").unwrap().is_none());
    assert_eq!(stored::unpublished(&store).unwrap(), (0, 0));
    assert_eq!(chunk_count(&store), 0);
}

#[test]
fn staged_chunks_of_no_live_job_are_pruned() {
    let (_dir, store) = store();
    let ctx = context(&store, "ann");
    let params = json!({"name": "crash"}).as_object().cloned().unwrap();
    let mut task = (PLUGIN.create)(&params, &ctx).unwrap();
    task.bytes(&body(3 * CHUNK_BYTES)).unwrap();
    task.start_commit(None).unwrap();
    task.finish_commit(true).unwrap().unwrap();
    let (staged, loose) = stored::unpublished(&store).unwrap();
    assert_eq!((staged, loose), (1, 3));
    // Live: the prune leaves it alone.
    assert_eq!(
        prune(&ctx, std::time::SystemTime::now(), &|| false).unwrap(),
        0
    );
    // The job vanishes without cleaning up (as in a crash): its staging is an orphan.
    drop(task);
    assert_eq!(
        prune(&ctx, std::time::SystemTime::now(), &|| false).unwrap(),
        1
    );
    assert_eq!(stored::unpublished(&store).unwrap(), (0, 0));
}

#[test]
fn the_quota_holds_while_uploading_and_at_publishing() {
    let (_dir, store) = store();
    let mut ctx = context(&store, "ann");
    ctx.limits = ctx.limits.with_blob_bytes_per_sub(2 * CHUNK_BYTES as u64);
    upload(
        &ctx,
        json!({"name": "one"}),
        &mut chunks(&body(CHUNK_BYTES), 65_536),
    )
    .unwrap();
    let (report, _) = upload(
        &ctx,
        json!({"name": "two"}),
        &mut chunks(&body(3 * CHUNK_BYTES), 65_536),
    )
    .unwrap();
    assert_eq!(failed_code(&report), ErrorCode::LimitExceeded);
    let Event::Failed { message, bytes, .. } = &report.last else {
        panic!()
    };
    assert!(message.contains("limits.blob_bytes_per_sub"), "{message}");
    assert!(
        *bytes < 3 * CHUNK_BYTES as u64,
        "it stopped early, at {bytes}"
    );
    assert_eq!(stored::unpublished(&store).unwrap(), (0, 0));
    // Replacing its own blob counts the old version out.
    let (report, _) = upload(
        &ctx,
        json!({"name": "one"}),
        &mut chunks(&body(2 * CHUNK_BYTES), 65_536),
    )
    .unwrap();
    assert!(
        matches!(report.last, Event::Done { .. }),
        "{:?}",
        report.last
    );
    // Another subject has its own quota.
    let mut other = context(&store, "bob");
    other.limits = ctx.limits;
    let (report, _) = upload(&other, json!({"name": "two"}), &mut chunks(&body(10), 3)).unwrap();
    assert!(matches!(report.last, Event::Done { .. }));
}

#[test]
fn base64_bodies_are_decoded_as_they_arrive() {
    use ::base64::Engine as _;
    let (_dir, store) = store();
    let ctx = context(&store, "ann");
    let png = [&b"\x89PNG\r\n\x1a\n"[..], &body(300_000)].concat();
    let text = ::base64::engine::general_purpose::STANDARD.encode(&png);
    let data_url = format!("data:image/png;base64,{text}");
    let (report, _) = upload(
        &ctx,
        json!({"name": "p", "encoding": "base64"}),
        &mut chunks(data_url.as_bytes(), 999),
    )
    .unwrap();
    let Event::Done { summary, .. } = &report.last else {
        panic!("{:?}", report.last)
    };
    assert_eq!(summary["content_type"], json!("image/png"));
    assert_eq!(read_all(&store, "p", 0..png.len() as u64), png);

    let (report, _) = upload(
        &ctx,
        json!({"name": "q", "content_type": "image/png;base64"}),
        &mut chunks(b"aGVsbG8=", 3),
    )
    .unwrap();
    let Event::Done { summary, .. } = &report.last else {
        panic!()
    };
    assert_eq!(summary["size"], json!(5));
    let (report, _) = upload(
        &ctx,
        json!({"name": "r", "encoding": "base64"}),
        &mut chunks(b"aGV*bG8=", 3),
    )
    .unwrap();
    assert_eq!(failed_code(&report), ErrorCode::SyntaxError);
    assert!(stored::meta(&store, "r").unwrap().is_none());
}

#[test]
fn parameters_are_checked() {
    let (_dir, store) = store();
    let ctx = context(&store, "ann");
    for (params, expected) in [
        (json!({}), "name the blob"),
        (json!({"name": "../x"}), "letters, digits"),
        (json!({"name": "a", "encoding": "gzip"}), "`encoding`"),
        (json!({"name": "a", "digest": "abc"}), "64 hex digits"),
        (
            json!({"name": "a", "content_type": "png"}),
            "not a media type",
        ),
        (json!({"name": "a", "colour": "red"}), "takes name"),
        (json!({"name": "a", "if_absent": "maybe"}), "`if_absent`"),
    ] {
        let err = upload(&ctx, params.clone(), &mut chunks(b"", 1)).unwrap_err();
        assert!(err.0.contains(expected), "{params}: {err}");
    }
}

#[test]
fn listing_by_prefix_in_pages_and_deleting() {
    let (_dir, store) = store();
    let ctx = context(&store, "ann");
    for name in ["cat-1.jpg", "cat-2.jpg", "cat-3.jpg", "dog.jpg"] {
        upload(
            &ctx,
            json!({"name": name}),
            &mut chunks(b"\xFF\xD8\xFF pic", 4),
        )
        .unwrap();
    }
    let reads = PLUGIN.reads.unwrap();
    let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let page = reads
        .read_page(&ctx, &params(&[("prefix", "cat-"), ("limit", "2")]))
        .unwrap();
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cat-1.jpg", "cat-2.jpg"]);
    assert_eq!(page["next"], json!("cat-2.jpg"));
    let page = reads
        .read_page(&ctx, &params(&[("prefix", "cat-"), ("after", "cat-2.jpg")]))
        .unwrap();
    assert_eq!(page["items"][0]["name"], json!("cat-3.jpg"));
    assert_eq!(page["items"][0]["content_type"], json!("image/jpeg"));
    assert_eq!(page["next"], Value::Null);

    let by = JobRef {
        id: "del".into(),
        sub: "ann".into(),
    };
    let report = (reads.delete.unwrap())(&ctx, "dog.jpg", &by)
        .unwrap()
        .unwrap();
    assert_eq!(report["deleted"], json!("dog.jpg"));
    assert!((reads.delete.unwrap())(&ctx, "dog.jpg", &by)
        .unwrap()
        .is_none());
    assert_eq!(chunk_count(&store), 3);
    assert_eq!(stored::usage(&store, "ann").unwrap(), 3 * 7);
}
