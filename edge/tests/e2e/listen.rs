//! Where the server listens: a loopback `listen` serves both loopback addresses (so that
//! `https://localhost:4433` works for clients that try `::1` first, as curl does), and a port
//! that is taken is one clear error.

use crate::util::*;
use edge_client::{Client, ClientConfig};
use edge_proto::{Event, Format};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_listen_address_also_serves_the_other_loopback_address() {
    // TestServer listens on 127.0.0.1:0, as `listen = "127.0.0.1:4433"` does on its port.
    let server = TestServer::start().await;
    assert!(server.addr.ip().is_loopback() && server.addr.is_ipv4());
    let over_ipv6 = ClientConfig {
        server: format!("https://[::1]:{}", server.addr.port()),
        ..server.client_config()
    };
    let client = Client::connect(&over_ipv6)
        .await
        .expect("the server answers on [::1] too, on the same port");
    let (result, _) = upload(&client, "stats", Some(Format::Lines), b"1\n2\n".to_vec()).await;
    assert!(
        matches!(result.last, Event::Done { committed: 2, .. }),
        "{:?}",
        result.last
    );
    client.close().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_listen_address_is_not_doubled() {
    // Any address that is not loopback is served as it is; here the unspecified IPv4 address
    // (which takes 127.0.0.1 as well, but not ::1).
    let server = TestServer::start_with(|config| {
        config.listen = "0.0.0.0:0".parse().unwrap();
    })
    .await;
    let over_ipv6 = ClientConfig {
        server: format!("https://[::1]:{}", server.addr.port()),
        ..server.client_config()
    };
    let attempt = tokio::time::timeout(Duration::from_secs(20), Client::connect(&over_ipv6)).await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "nothing listens on [::1] for a 0.0.0.0 server"
    );
    server.stop().await;
}

#[test]
fn a_port_in_use_is_one_error_naming_the_address_once_with_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["serve", "--listen", &addr.to_string()])
        .env("EDGE_DATA_DIR", dir.path().join("data"))
        .env("EDGE_CERTS_DIR", dir.path().join("certs"))
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edge starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edge serve on a taken port did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "names the address: {stderr}"
    );
    assert_eq!(
        stderr.matches("os error").count(),
        1,
        "the OS error once: {stderr}"
    );
    drop(taken);
}
