//! Receive windows over a long path: through the benchmark's UDP delay forwarder (50 ms
//! round trip), an upload of a few MB finishes and its connection's window grows past its
//! start, charged to the server-wide budget, which is whole again once the connection closes.

use crate::util::*;
use edge_client::{Client, ClientConfig};
use edge_proto::{Event, Format};
use std::time::Duration;

/// The benchmark's forwarder, compiled into these tests too (one copy of the code).
#[allow(dead_code)]
#[path = "../../../bench/src/forwarder.rs"]
pub(crate) mod forwarder;

const KIB: u64 = 1024;

/// The admin listener's metric `name`.
async fn admin_metric(admin: std::net::SocketAddr, name: &'static str) -> f64 {
    let (_, body) = tokio::task::spawn_blocking(move || admin_get(admin, "/metrics"))
        .await
        .unwrap();
    metric(&body, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_50_ms_path_the_receive_window_grows_within_its_budget() {
    // A small start (128 KiB) makes the window, not the debug-build pipeline, what limits
    // the upload at 50 ms: 128 KiB per round trip is 2.6 MB/s.
    let server = TestServer::start_with(|config| {
        config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
        config.transport.connection_receive_window = 128 * KIB;
        config.transport.connection_receive_window_max = 2048 * KIB;
        config.transport.receive_window_budget = 1024 * KIB;
    })
    .await;
    let admin = server.admin.expect("the admin listener is on");
    let path = forwarder::Forwarder::start(server.addr, Duration::from_millis(25)).unwrap();
    let client = Client::connect(&ClientConfig {
        server: format!("https://{}", path.addr()),
        ..server.client_config()
    })
    .await
    .unwrap();
    let records = 20_000;
    let body = synthetic_ports_ndjson(records);
    assert!(body.len() > 2_500_000, "a few MB: {}", body.len());
    let (_, events) = upload(&client, "ports", Some(Format::Ndjson), body).await;
    assert!(
        matches!(done(&events), Event::Done { committed, errors: 0, .. } if *committed == records as u64),
        "{events:?}"
    );
    let grown = admin_metric(admin, "edge_receive_window_grown_total").await;
    let held = admin_metric(admin, "edge_receive_window_held_bytes").await;
    assert!(grown >= 1.0, "the window never grew over a 50 ms path");
    assert!(held > 0.0, "a grown window is charged to the budget");
    assert!(
        held <= (1024 * KIB) as f64,
        "held {held} is over the budget"
    );
    // Once the connection is gone, its share goes back to the budget.
    client.close().await;
    let mut held = held;
    for _ in 0..100 {
        held = admin_metric(admin, "edge_receive_window_held_bytes").await;
        if held == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, 0.0, "a closed connection still holds window bytes");
    drop(path);
    server.stop().await;
}
