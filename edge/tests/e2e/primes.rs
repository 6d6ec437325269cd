//! The `primes` task over the real server: answers stream back as `result` events while the
//! upload still runs (edge/1, the `edge-client` binary, a real HTTP/3 curl), and
//! `GET /v1/primes/{n}` answers one `n` under its own scope.

use crate::http3::{curl, curl_as, url};
use crate::util::*;
use edge_proto::{ErrorCode, Event, Format, JobHeader};
use serde_json::{json, Value};
use std::process::Command;
use tokio::io::AsyncWriteExt;

/// The first `count` primes, by trial division (a reference that shares nothing with the
/// server's sieve).
fn first_primes(count: usize) -> Vec<u64> {
    let mut primes: Vec<u64> = Vec::with_capacity(count);
    let mut candidate = 2;
    while primes.len() < count {
        if primes
            .iter()
            .take_while(|&&p| p * p <= candidate)
            .all(|&p| candidate % p != 0)
        {
            primes.push(candidate);
        }
        candidate += 1;
    }
    primes
}

/// The `result` events among `events`, as (index, fields).
fn results(events: &[Event]) -> Vec<(u64, Value)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Result { index, fields } => Some((*index, Value::Object(fields.clone()))),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_good_record_is_answered_in_order_and_bad_ones_are_reported() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let reference = first_primes(5_000);
    // n = 5000, 4999, ..., 1, with three bad records among them.
    let mut body = String::new();
    for n in (1..=5_000).rev() {
        body.push_str(&format!("{n}\n"));
        if n == 2_500 {
            body.push_str("0\nseven\n-4\n");
        }
    }
    let (result, events) = upload(&client, "primes", Some(Format::Lines), body.into_bytes()).await;
    let Event::Done {
        records,
        errors,
        summary,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!((*records, *errors), (5_003, 3));
    assert_eq!(summary["answered"], 5_000);
    assert_eq!(summary["largest_prime"], reference[4_999]);

    let answers = results(&events);
    assert_eq!(answers.len(), 5_000);
    let mut last_index = None;
    for (index, fields) in &answers {
        assert!(last_index < Some(*index), "answers come in record order");
        last_index = Some(*index);
        let n = fields["n"].as_u64().expect("n");
        // Record i holds n = 5000 - i before the three bad ones, 5000 - i + 3 after them.
        let expected_n = if *index < 2_501 {
            5_000 - index
        } else {
            5_003 - index
        };
        assert_eq!(n, expected_n, "record {index}");
        assert_eq!(fields["prime"], reference[n as usize - 1], "p({n})");
    }
    let refused: Vec<(u64, ErrorCode)> = events
        .iter()
        .filter_map(|e| match e {
            Event::RecordError { index, code, .. } => Some((*index, *code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [
            (2_501, ErrorCode::InvalidRecord),
            (2_502, ErrorCode::InvalidRecord),
            (2_503, ErrorCode::InvalidRecord)
        ]
    );
    // Answers precede the final event.
    assert!(matches!(events.last(), Some(Event::Done { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_arrives_while_the_upload_is_still_open() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (mut writer, reader) = tokio::io::duplex(1024);
    let mut header = JobHeader::new("primes");
    header.format = Some(Format::Lines);
    let events = Events::new();
    let sink = events.sink();
    let job = tokio::spawn(async move {
        let job = edge_client::UploadJob::new(header, Box::new(reader));
        client.upload(job, sink).await.unwrap().last
    });
    writer.write_all(b"10000\n").await.unwrap();
    events
        .until(
            "result for the first record",
            |e| matches!(e, Event::Result { index: 0, fields } if fields["prime"] == 104_729),
        )
        .await;
    writer.write_all(b"3\n").await.unwrap();
    events
        .until(
            "result for the second record",
            |e| matches!(e, Event::Result { index: 1, fields } if fields["prime"] == 5),
        )
        .await;
    drop(writer);
    let last = job.await.unwrap();
    assert!(matches!(last, Event::Done { records: 2, .. }), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_maximum_refuses_larger_n_by_name() {
    let server = TestServer::start_with(|config| config.limits.max_prime_n = 1_000).await;
    let client = server.client().await;
    let (result, events) = upload(
        &client,
        "primes",
        Some(Format::Json),
        b"[1000, 1001]".to_vec(),
    )
    .await;
    assert!(
        matches!(result.last, Event::Done { errors: 1, .. }),
        "{:?}",
        result.last
    );
    assert_eq!(results(&events), [(0, json!({"n": 1000, "prime": 7919}))]);
    let message = events
        .iter()
        .find_map(|e| match e {
            Event::RecordError {
                index: 1, message, ..
            } => Some(message.clone()),
            _ => None,
        })
        .expect("n = 1001 is refused");
    assert!(message.contains("limits.max_prime_n"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_client_prints_the_answers_on_stdout() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.txt");
    std::fs::write(&file, "1\n6\n100\n").unwrap();
    let (address, ca, token) = (
        format!("https://127.0.0.1:{}", server.addr.port()),
        server.ca(),
        server.token("primes:write"),
    );
    let run = move |json: bool| {
        let mut command = Command::new(client_binary());
        command
            .args(["upload", "--task", "primes", "--server", &address])
            .arg("--ca")
            .arg(&ca)
            .args(["--token", &token])
            .arg(&file)
            .env_remove("EDGE_SERVER")
            .env_remove("EDGE_CA")
            .env_remove("EDGE_TOKEN");
        if json {
            command.arg("--json");
        }
        command.output().expect("edge-client runs")
    };
    let out = tokio::task::spawn_blocking(move || (run(false), run(true)))
        .await
        .unwrap();
    let (plain, json) = out;
    assert_eq!(
        plain.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        "{\"n\":1,\"prime\":2}\n{\"n\":6,\"prime\":13}\n{\"n\":100,\"prime\":541}\n"
    );
    assert!(String::from_utf8_lossy(&plain.stderr).contains("n.txt: done: 3 records"));

    let lines: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let answers: Vec<&Value> = lines.iter().filter(|l| l["event"] == "result").collect();
    assert_eq!(
        answers[2],
        &json!({"event": "result", "index": 2, "n": 100, "prime": 541})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(has_h3curl),
    ignore = "needs an HTTP/3 curl: set EDGE_TEST_CURL (see README)"
)]
async fn curl_uploads_numbers_and_reads_the_answers_and_one_prime() {
    let server = TestServer::start().await;
    let file = server.dir.path().join("n.txt");
    std::fs::write(&file, "5\n10000000\n").unwrap();
    let (status, body) = curl(
        &server,
        vec![
            "-T".into(),
            file.display().to_string(),
            url(&server, "/v1/jobs/primes"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let answers: Vec<&Value> = lines.iter().filter(|l| l["event"] == "result").collect();
    assert_eq!(
        answers,
        [
            &json!({"event": "result", "index": 0, "n": 5, "prime": 11}),
            &json!({"event": "result", "index": 1, "n": 10_000_000, "prime": 179_424_673u64}),
        ]
    );
    assert_eq!(lines.last().map(|l| &l["event"]), Some(&json!("done")));

    let (status, body) = curl(&server, vec![url(&server, "/v1/primes/1000000")]).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"n": 1_000_000, "prime": 15_485_863}))
    );
    let (status, body) = curl(&server, vec![url(&server, "/v1/primes/0")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at least 1"), "{body}");
    let (status, body) = curl(&server, vec![url(&server, "/v1/primes?after=3&limit=3")]).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page,
        json!({"items": [{"n": 4, "prime": 7}, {"n": 5, "prime": 11}, {"n": 6, "prime": 13}], "next": "6"})
    );
    // The read has its own scope.
    let (status, body) = curl_as(
        &server,
        Some(server.token("ports:read primes:write")),
        vec![url(&server, "/v1/primes/10")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("primes:read"), "{body}");
}
