//! Jobs over `edge/1`: uploads, records, events, refusals, concurrency.

use crate::util::*;
use edge_proto::{ErrorCode, Event, Format, JobHeader};
use serde_json::json;

#[tokio::test]
async fn the_real_ports_file_is_stored_and_a_second_upload_changes_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let body = std::fs::read(ports_json()).unwrap();

    let (result, events) = upload(&client, "ports", None, body.clone()).await;
    assert!(
        matches!(
            events.first(),
            Some(Event::Accepted {
                format: Format::Json,
                ..
            })
        ),
        "{events:?}"
    );
    let Event::Done {
        records,
        committed,
        errors,
        summary,
        bytes,
        ..
    } = done(&events)
    else {
        unreachable!()
    };
    assert_eq!((*records, *committed, *errors), (1634, 1634, 0));
    assert_eq!(*bytes, body.len() as u64);
    assert_eq!(
        summary,
        &json!({"inserted": 1634, "updated": 0, "unchanged": 0})
    );
    assert_eq!(&result.last, done(&events));

    let (_, events) = upload(&client, "ports", Some(Format::Json), body).await;
    let Event::Done {
        committed, summary, ..
    } = done(&events)
    else {
        unreachable!()
    };
    assert_eq!(*committed, 1634);
    assert_eq!(
        summary,
        &json!({"inserted": 0, "updated": 0, "unchanged": 1634})
    );
    client.close().await;

    let dir = server.stop().await;
    let ports = all_ports(&dir.path().join("data/edge.redb"));
    assert_eq!(ports.len(), 1634);
    let (_, ajman) = ports
        .iter()
        .find(|(k, _)| k == "AEAJM")
        .expect("AEAJM stored");
    assert_eq!(ajman.name, "Ajman");
    assert_eq!(ajman.coordinates, Some([55.5136433, 25.4052165]));
    assert_eq!(ajman.country.as_deref(), Some("United Arab Emirates"));
}

#[tokio::test]
async fn the_same_records_as_an_array_ndjson_and_csv_give_the_same_store() {
    let (array, ndjson) = ports_as_array_and_ndjson();
    let mut stores = Vec::new();
    let bodies = [
        (Some(Format::Json), array, Format::Json),
        (None, ndjson, Format::Ndjson),
        (None, ports_as_csv(), Format::Csv),
    ];
    for (format, body, expected) in bodies {
        let server = TestServer::start().await;
        let client = server.client().await;
        let (_, events) = upload(&client, "ports", format, body).await;
        let Event::Done {
            records, errors, ..
        } = done(&events)
        else {
            unreachable!()
        };
        assert_eq!((*records, *errors), (1634, 0));
        assert!(
            matches!(events.first(), Some(Event::Accepted { format, .. }) if *format == expected),
            "{expected} is chosen (sniffed when not named): {:?}",
            events.first()
        );
        client.close().await;
        let dir = server.stop().await;
        stores.push(all_ports(&dir.path().join("data/edge.redb")));
    }
    // Array, NDJSON and CSV records are keyed by `unlocs[0]`: 8 ports of the file share theirs.
    assert_eq!(stores[0].len(), 1626);
    assert_eq!(stores[0], stores[1]);
    assert_eq!(stores[0], stores[2]);
}

#[tokio::test]
async fn the_csv_sample_holds_five_ports_of_the_json_sample_unchanged() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let json = std::fs::read(samples.join("ports.json")).unwrap();
    let (result, _) = upload(&client, "ports", Some(Format::Json), json).await;
    assert!(
        matches!(
            result.last,
            Event::Done {
                committed: 1634,
                ..
            }
        ),
        "{:?}",
        result.last
    );
    let csv = std::fs::read(samples.join("ports.csv")).unwrap();
    let (result, _) = upload(&client, "ports", None, csv).await;
    let Event::Done {
        records,
        errors,
        summary,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!((*records, *errors), (5, 0));
    assert_eq!(
        serde_json::to_value(summary).unwrap(),
        json!({"inserted": 0, "updated": 0, "unchanged": 5}),
        "the CSV rows are the JSON's ports, every field the same"
    );
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_ports_csv_with_unknown_columns_fails_once_naming_them_and_the_known_ones() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut body = String::from("name,colour,unlocs,harbour_depth\n");
    for i in 0..500 {
        body.push_str(&format!("Port {i},red,XX{i:03},12\n"));
    }
    let (result, events) = upload(&client, "ports", Some(Format::Csv), body.into_bytes()).await;
    let Event::Failed {
        code,
        message,
        committed,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!(*code, ErrorCode::SyntaxError);
    assert_eq!(*committed, 0);
    assert!(
        message.contains("`colour`, `harbour_depth`")
            && message.contains("name, city, country, alias, regions, coordinates, lon, lat"),
        "{message}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::RecordError { .. })),
        "one failure, not an error per row: {events:?}"
    );
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn stats_gives_exact_figures_for_a_known_series() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let body: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let (_, events) = upload(&client, "stats", None, body.into_bytes()).await;
    assert!(
        matches!(
            events.first(),
            Some(Event::Accepted {
                format: Format::Lines,
                ..
            })
        ),
        "{events:?}"
    );
    let Event::Done {
        summary,
        records,
        errors,
        ..
    } = done(&events)
    else {
        unreachable!()
    };
    assert_eq!((*records, *errors), (1000, 0));
    assert_eq!(summary["count"], 1000);
    assert_eq!(summary["min"], 1.0);
    assert_eq!(summary["max"], 1000.0);
    let close = |got: &serde_json::Value, want: f64| {
        let got = got.as_f64().expect("a number");
        assert!(((got - want) / want).abs() < 1e-9, "{got} vs {want}");
    };
    close(&summary["mean"], 500.5);
    close(&summary["variance"], 1000.0 * 1001.0 / 12.0);
    close(&summary["stddev"], (1000.0f64 * 1001.0 / 12.0).sqrt());
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Task { task, .. } if task == "stats")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_committed_while_the_upload_is_still_running() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start().await;
    let client = server.client().await;
    let body = synthetic_ports_ndjson(150_000); // ~30 MB
                                                // The first tenth goes out, and the upload stays open until a commit is reported: the
                                                // server commits what it has without waiting for the end (jobs.commit_interval_ms).
    let split = body[..body.len() / 10]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let first_records = body[..split].iter().filter(|&&b| b == b'\n').count() as u64;
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let mut header = JobHeader::new("ports");
    header.format = Some(Format::Ndjson);
    let events = Events::new();
    let sink = events.sink();
    let job = tokio::spawn(async move {
        let job = edge_client::UploadJob::new(header, Box::new(reader));
        client.upload(job, sink).await.unwrap().last
    });
    writer.write_all(&body[..split]).await.unwrap();
    events
        .until(
            "committed while the upload is open",
            |e| matches!(e, Event::Committed { records, .. } if *records > 0),
        )
        .await;
    let Some(Event::Committed { records: early, .. }) = events
        .all()
        .into_iter()
        .find(|e| matches!(e, Event::Committed { .. }))
    else {
        unreachable!("waited for it above")
    };
    assert!(
        early <= first_records,
        "{early} of the {first_records} sent"
    );
    writer.write_all(&body[split..]).await.unwrap();
    drop(writer);
    let Event::Done { committed, .. } = job.await.unwrap() else {
        panic!("{:?}", events.all().last())
    };
    assert_eq!(committed, 150_000);
}

#[tokio::test]
async fn an_invalid_record_is_reported_and_the_rest_are_stored() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut body = Vec::new();
    for i in 0..100 {
        let record = if i == 50 {
            json!({"city": "Nowhere", "unlocs": ["BAD50"]})
        } else {
            json!({"name": format!("Port {i}"), "unlocs": [format!("OK{i:03}")]})
        };
        body.extend_from_slice(record.to_string().as_bytes());
        body.push(b'\n');
    }
    let (result, events) = upload(&client, "ports", Some(Format::Ndjson), body).await;
    let record_errors: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::RecordError { .. }))
        .collect();
    assert_eq!(record_errors.len(), 1, "{events:?}");
    let Event::RecordError {
        index,
        code,
        message,
        key,
        offset,
    } = record_errors[0]
    else {
        unreachable!()
    };
    assert_eq!(*index, 50);
    assert_eq!(*code, ErrorCode::InvalidRecord);
    assert!(
        message.contains("name"),
        "the message names the field: {message}"
    );
    assert_eq!(key.as_deref(), Some("BAD50"));
    assert!(*offset > 0);
    let Event::Done {
        committed,
        errors,
        records,
        ..
    } = &result.last
    else {
        panic!()
    };
    assert_eq!((*records, *committed, *errors), (100, 99, 1));
}

#[tokio::test]
async fn jobs_run_concurrently_on_one_connection_and_across_connections() {
    let server = TestServer::start().await;
    let first = server.client().await;
    let second = server.client().await;
    let job = |n: usize| {
        let body: String = (0..n).map(|i| format!("{i}\n")).collect();
        body.into_bytes()
    };
    let (a, b, c, d) = tokio::join!(
        upload(&first, "stats", Some(Format::Lines), job(10_000)),
        upload(&first, "stats", Some(Format::Lines), job(20_000)),
        upload(
            &first,
            "ports",
            Some(Format::Ndjson),
            synthetic_ports_ndjson(5_000)
        ),
        upload(&second, "stats", Some(Format::Lines), job(30_000)),
    );
    for ((_, events), want) in [(a, 10_000u64), (b, 20_000), (c, 5_000), (d, 30_000)] {
        let Event::Done { records, .. } = done(&events) else {
            unreachable!()
        };
        assert_eq!(*records, want);
        // Each job's events came on its own stream: its accepted event is first.
        assert!(matches!(events.first(), Some(Event::Accepted { .. })));
    }
}

#[tokio::test]
async fn refused_jobs_get_a_rejected_event_with_a_code() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (result, events) = upload(&client, "nonesuch", None, b"1\n".to_vec()).await;
    let Event::Rejected {
        code,
        message,
        committed,
        ..
    } = &result.last
    else {
        panic!("{events:?}")
    };
    assert_eq!(*code, ErrorCode::UnknownTask);
    assert!(
        message.contains("ports") && message.contains("stats"),
        "{message}"
    );
    assert_eq!(*committed, 0);

    let (result, _) = upload(&client, "ports", Some(Format::Lines), b"x\n".to_vec()).await;
    assert!(
        matches!(
            &result.last,
            Event::Rejected {
                code: ErrorCode::UnknownFormat,
                ..
            }
        ),
        "{:?}",
        result.last
    );

    // Sniffed as lines, which `ports` does not read.
    let (result, _) = upload(&client, "ports", None, b"hello\nworld\n".to_vec()).await;
    assert!(
        matches!(
            &result.last,
            Event::Rejected {
                code: ErrorCode::UnknownFormat,
                ..
            }
        ),
        "{:?}",
        result.last
    );

    // The connection still works after refusals.
    let (_, events) = upload(&client, "stats", None, b"1\n2\n".to_vec()).await;
    assert!(matches!(done(&events), Event::Done { records: 2, .. }));
}

#[tokio::test]
async fn an_empty_upload_is_a_done_job_with_no_records() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (result, _) = upload(&client, "ports", None, Vec::new()).await;
    assert!(
        matches!(
            &result.last,
            Event::Done {
                records: 0,
                committed: 0,
                errors: 0,
                ..
            }
        ),
        "{:?}",
        result.last
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_running_jobs_finish_in_the_grace_period_and_new_ones_are_refused() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(|config| config.jobs.shutdown_grace_secs = 20).await;
    let client = std::sync::Arc::new(server.client().await);
    let (mut writer, reader) = tokio::io::duplex(1024);
    writer.write_all(b"1\n").await.unwrap();
    let mut header = JobHeader::new("stats");
    header.format = Some(Format::Lines);
    let events = Events::new();
    let running = {
        let (client, sink) = (client.clone(), events.sink());
        tokio::spawn(async move {
            let job = edge_client::UploadJob::new(header, Box::new(reader));
            client.upload(job, sink).await.unwrap()
        })
    };
    events
        .until("accepted", |e| matches!(e, Event::Accepted { .. }))
        .await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(server.stop());
    events
        .until("draining", |e| matches!(e, Event::Draining { .. }))
        .await;

    // Draining: a new job is refused, the running one is told and goes on.
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"2\n".to_vec()).await;
    assert!(
        matches!(
            result.last,
            Event::Rejected {
                code: edge_proto::ErrorCode::ShuttingDown,
                ..
            }
        ),
        "{:?}",
        result.last
    );
    writer.write_all(b"3\n").await.unwrap();
    drop(writer);
    let result = running.await.unwrap();
    assert!(
        matches!(result.last, Event::Done { records: 2, .. }),
        "a job that ends within the grace period is done: {:?}",
        result.last
    );
    assert!(events.all().contains(&Event::Draining { grace_secs: 20 }));
    stopping.await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the server stops once its jobs have ended, not at the end of the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_real_upload() {
    let server = TestServer::start_with(|config| {
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        config.jobs.commit_records = 500;
    })
    .await;
    let admin = server.admin.expect("the admin listener is on");
    let (status, body) = tokio::task::spawn_blocking(move || admin_get(admin, "/healthz"))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");
    assert!(
        health["certificate"]["days_left"].as_i64().unwrap() > 300,
        "the dev certificate's expiry is reported: {body}"
    );
    let client = server.client().await;
    let (_, events) = upload(&client, "ports", None, std::fs::read(ports_json()).unwrap()).await;
    assert!(matches!(
        done(&events),
        Event::Done {
            committed: 1634,
            ..
        }
    ));
    let (_, events) = upload(&client, "stats", Some(Format::Lines), b"1\nx\n".to_vec()).await;
    assert!(matches!(done(&events), Event::Done { errors: 1, .. }));
    let bad = edge_client::ClientConfig {
        token: Some("garbage".into()),
        ..server.client_config()
    };
    let stranger = edge_client::Client::connect(&bad).await.unwrap();
    let (result, _) = upload(&stranger, "stats", Some(Format::Lines), b"1\n".to_vec()).await;
    assert!(matches!(result.last, Event::Rejected { .. }));

    let (status, text) = tokio::task::spawn_blocking(move || admin_get(admin, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(metric(&text, "edge_jobs_started_total"), 2.0);
    assert_eq!(metric(&text, "edge_jobs_running"), 0.0);
    assert_eq!(metric(&text, "edge_records_committed_total"), 1635.0);
    assert_eq!(metric(&text, "edge_record_errors_total"), 1.0);
    assert_eq!(metric(&text, "edge_records_decoded_total"), 1636.0);
    let file = std::fs::metadata(ports_json()).unwrap().len() as f64;
    assert_eq!(metric(&text, "edge_bytes_received_total"), file + 4.0);
    assert_eq!(
        metric(
            &text,
            "edge_jobs_finished_total{outcome=\"done\",code=\"\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&text, "edge_auth_failures_total{reason=\"unauthorized\"}"),
        1.0
    );
    // At least one commit per job; how many the ports job made depends on how fast the
    // store returned (the next batch grows while one is written).
    assert!(metric(&text, "edge_commit_duration_seconds_count") >= 2.0);
    assert!(metric(&text, "edge_store_size_bytes") > 0.0);
    assert!(metric(&text, "edge_connections_open") >= 1.0);
    let (status, _) = tokio::task::spawn_blocking(move || admin_get(admin, "/v1/ports"))
        .await
        .unwrap();
    assert_eq!(
        status, "HTTP/1.1 404 Not Found",
        "the API stays HTTP/3 only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_at_most_its_cap_of_connections_at_once() {
    use std::io::{Read, Write};
    let server = TestServer::start_with(|config| {
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        config.admin.max_connections = 2;
    })
    .await;
    let admin = server.admin.expect("the admin listener is on");
    tokio::task::spawn_blocking(move || {
        // Two connections that send nothing take both slots.
        let mut idle: Vec<std::net::TcpStream> = (0..2)
            .map(|_| std::net::TcpStream::connect(admin).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // A third is not served while they are open (the kernel queues it, unaccepted).
        let mut third = std::net::TcpStream::connect(admin).unwrap();
        write!(third, "GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
        third
            .set_read_timeout(Some(std::time::Duration::from_millis(700)))
            .unwrap();
        let mut byte = [0u8; 1];
        let waited = third.read(&mut byte);
        assert!(
            matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "served beyond the cap: {waited:?}"
        );
        // Once one of them goes, the third is served.
        drop(idle.remove(0));
        third
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut response = String::new();
        third.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        // The other idle one is cut off after its read timeout (5 s), freeing its slot.
        idle[0]
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        assert_eq!(idle[0].read_to_end(&mut rest).unwrap(), 0, "closed unanswered");
        let (status, _) = admin_get(admin, "/healthz");
        assert_eq!(status, "HTTP/1.1 200 OK");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_upload_is_cut_off_while_a_normal_one_beside_it_completes() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start_with(|config| {
        config.jobs.min_upload_bytes_per_sec = 1_000;
        config.jobs.upload_rate_window_secs = 1;
        config.jobs.commit_interval_ms = 20;
    })
    .await;
    let slow_client = server.client().await;
    let (mut writer, reader) = tokio::io::duplex(1024);
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            if writer.write_all(format!("{i}\n").as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let mut header = JobHeader::new("stats");
    header.format = Some(Format::Lines);
    let started = std::time::Instant::now();
    let slow = tokio::spawn(async move {
        let job = edge_client::UploadJob::new(header, Box::new(reader));
        slow_client.upload(job, |_| {}).await.unwrap()
    });
    let normal = server.client().await;
    let (_, events) = upload(&normal, "ports", None, std::fs::read(ports_json()).unwrap()).await;
    assert!(matches!(
        done(&events),
        Event::Done {
            committed: 1634,
            ..
        }
    ));

    let result = slow.await.unwrap();
    trickle.abort();
    let Event::Failed {
        code,
        message,
        committed,
        ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!(*code, edge_proto::ErrorCode::TooSlow, "{message}");
    assert!(message.contains("min_upload_bytes_per_sec"), "{message}");
    assert!(*committed > 0, "what came before is committed");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "cut off after about one window, not when the client gives up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_prunes_old_job_history_in_the_background() {
    use edge_tasks::history::{self, JobRecord, Sync};
    use std::time::{Duration, SystemTime};

    // A store from a server that ran long ago: 5 jobs that ended 200 days ago, 3 recent ones.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    {
        let store = edge_tasks::Store::open(
            &dir.path().join("data/edge.redb"),
            &edge_tasks::store::StoreOptions::default(),
        )
        .unwrap();
        for i in 0..8 {
            let days = if i < 5 { 200 } else { 1 };
            let at = SystemTime::now() - Duration::from_secs(days * 86_400);
            let at = humantime::format_rfc3339_millis(at).to_string();
            let mut record =
                JobRecord::start(&format!("j{i}"), Some("tester"), "ports", "h3", None, None);
            (record.started, record.finished) = (at.clone(), Some(at));
            record.outcome = "done".into();
            history::submit(&store, &record, Sync::Now)
                .answer()
                .await
                .unwrap();
        }
    }
    let server = TestServer::start_in(dir, |config| {
        config.jobs.history_keep_days = 30;
    })
    .await;
    let mut api = edge_client::api::Api::connect(&server.client_config())
        .await
        .unwrap();
    // The server prunes as it starts, in the background: watch the history until it has.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let answer = api.get("/v1/jobs?limit=100").await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        let ids: Vec<String> = answer.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["job"].as_str().unwrap().to_owned())
            .collect();
        if ids.len() < 8 || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        kept,
        ["j7", "j6", "j5"],
        "the jobs of the last 30 days stay"
    );
    api.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_on_the_previous_ones_final_event_is_not_refused_by_the_limit() {
    // One job at once per subject: the place is given back before the final event leaves, so
    // a client that starts its next job on that event (as edge-client's queue does) gets in.
    let server = TestServer::start_with(|config| config.limits.max_jobs_per_sub = 1).await;
    let client = server.client().await;
    for i in 0..20 {
        let (result, events) =
            upload(&client, "stats", Some(Format::Lines), b"1\n2\n".to_vec()).await;
        assert_eq!(result.last.name(), "done", "job {i}: {events:?}");
    }
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_reset_with_cancelled_ends_the_job_at_once_as_cancelled() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    let mut header = JobHeader::new("ports");
    header.format = Some(Format::Ndjson);
    let events = Events::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    let job = {
        let (client, sink, cancel) = (client.clone(), events.sink(), cancel.clone());
        let mut sink = sink;
        tokio::spawn(async move {
            client
                .upload_until(
                    edge_client::UploadJob::new(header, Box::new(rx)),
                    &cancel,
                    |event, _| sink(event),
                )
                .await
        })
    };
    tokio::io::AsyncWriteExt::write_all(&mut tx, &synthetic_ports_ndjson(500))
        .await
        .unwrap();
    events
        .until("committed 500", |e| {
            matches!(e, Event::Committed { records: 500, .. })
        })
        .await;
    let cancelled = std::time::Instant::now();
    cancel.cancel();
    let result = job.await.unwrap().expect("the final event came");
    assert!(
        cancelled.elapsed() < edge_client::upload::CANCEL_WAIT,
        "at once: {:?}",
        cancelled.elapsed()
    );
    let Event::Failed {
        code, committed, ..
    } = &result.last
    else {
        panic!("{:?}", result.last)
    };
    assert_eq!((*code, *committed), (ErrorCode::Cancelled, 500));
    client.close().await;
    let dir = server.stop().await;
    let store =
        edge_tasks::Store::open(&dir.path().join("data/edge.redb"), &Default::default()).unwrap();
    let (jobs, _) = edge_tasks::history::list(&store, None, 10, None).unwrap();
    let job = &jobs[0];
    assert_eq!(
        (job.outcome.as_str(), job.code, job.committed),
        ("failed", Some(ErrorCode::Cancelled), 500),
        "{job:?}"
    );
}
