//! Redirects: followed and counted, capped, each new address checked before connecting,
//! nothing carried over.

use crate::server::{Origin, Reply, Transport};
use crate::{failure, policy, read_all};
use edge_fetch::{FetchError, Range, Reason};
use std::net::IpAddr;

#[tokio::test]
async fn relative_and_absolute_redirects_are_followed_and_counted() {
    let origin = Origin::start(Transport::Https, |seen| {
        match seen.path_and_query.as_str() {
            "/a/start" => Reply::redirect(302, "next?step=2"),
            "/a/next?step=2" => Reply::redirect(301, "/b/then"),
            "/b/then" => Reply::redirect(303, "../c/see-other"),
            "/c/see-other" => Reply::redirect(307, "temporary#fragment"),
            "/c/temporary" => Reply::redirect(308, &format!("https://{}/final", seen.local)),
            "/final" => Reply::full(200, "here"),
            _ => Reply::full(404, ""),
        }
    })
    .await;
    let mut fetched = edge_fetch::fetch(&origin.url("/a/start"), &policy(&origin), None)
        .await
        .expect("fetched");
    assert_eq!(fetched.redirects, 5);
    assert_eq!(fetched.final_url, origin.url("/final"));
    let (body, _) = read_all(&mut fetched.body).await.expect("the body");
    assert_eq!(body, b"here");
    let paths: Vec<String> = origin
        .seen()
        .into_iter()
        .map(|s| s.path_and_query)
        .collect();
    assert_eq!(
        paths,
        [
            "/a/start",
            "/a/next?step=2",
            "/b/then",
            "/c/see-other",
            "/c/temporary",
            "/final"
        ]
    );
}

#[tokio::test]
async fn nothing_is_carried_to_another_origin() {
    let other = Origin::start(Transport::Https, |_| Reply::full(200, "there")).await;
    let there = other.url("/landing");
    let first = Origin::start(Transport::Https, move |_| {
        Reply::redirect(302, &there)
            .header("set-cookie", "session=secret; Path=/")
            .header("www-authenticate", "Basic realm=\"x\"")
    })
    .await;
    let mut policy = policy(&first);
    policy.extra_roots.push(other.ca.clone());
    let mut fetched = edge_fetch::fetch(&first.url("/login"), &policy, None)
        .await
        .expect("fetched");
    assert_eq!(fetched.redirects, 1);
    assert_eq!(fetched.final_url, other.url("/landing"));
    read_all(&mut fetched.body).await.expect("the body");
    let seen = [first.seen(), other.seen()].concat();
    assert_eq!(seen.len(), 2);
    for request in seen {
        for absent in ["authorization", "cookie", "proxy-authorization"] {
            assert!(
                !request.headers.contains_key(absent),
                "{absent} sent to {}",
                request.path_and_query
            );
        }
    }
}

/// An origin where `/hop/N` redirects to `/hop/N-1` and `/hop/0` answers.
async fn hops() -> Origin {
    Origin::start(Transport::Https, |seen| {
        let n: u32 = seen
            .path_and_query
            .trim_start_matches("/hop/")
            .parse()
            .unwrap_or(0);
        match n {
            0 => Reply::full(200, "end"),
            n => Reply::redirect(302, &format!("/hop/{}", n - 1)),
        }
    })
    .await
}

#[tokio::test]
async fn five_redirects_are_followed_and_a_sixth_is_refused() {
    let origin = hops().await;
    let policy = policy(&origin);
    assert_eq!(policy.max_redirects, 5);
    let fetched = edge_fetch::fetch(&origin.url("/hop/5"), &policy, None)
        .await
        .expect("fetched");
    assert_eq!(fetched.redirects, 5);
    drop(fetched);
    let before = origin.seen().len();
    let error = failure(&origin.url("/hop/6"), &policy).await;
    assert!(
        matches!(error, FetchError::TooManyRedirects { max: 5 }),
        "{error}"
    );
    assert_eq!(error.code(), "too_many_redirects");
    // The sixth Location was never requested.
    assert_eq!(origin.seen().len() - before, 6);
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_refused_before_connecting() {
    let origin = Origin::start(Transport::Https, |seen| {
        let to = seen.path_and_query.trim_start_matches("/to/");
        Reply::redirect(302, &to.replace("PORT", &seen.local.port().to_string()))
    })
    .await;
    let policy = policy(&origin);
    let table: [(&str, &str, Reason); 8] = [
        (
            "https://127.0.0.2:PORT/",
            "127.0.0.2",
            Reason::Range(Range::Loopback),
        ),
        (
            "https://10.0.0.1/",
            "10.0.0.1",
            Reason::Range(Range::Private),
        ),
        (
            "https://192.168.1.1:PORT/",
            "192.168.1.1",
            Reason::Range(Range::Private),
        ),
        (
            "https://[::ffff:127.0.0.1]:PORT/",
            "::ffff:127.0.0.1",
            Reason::Embedded {
                via: edge_fetch::Embedding::Mapped,
                v4: "127.0.0.1".parse().expect("an address"),
                range: Range::Loopback,
            },
        ),
        (
            "https://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
            Reason::Range(Range::Metadata),
        ),
        ("https://[::1]:PORT/", "::1", Reason::Range(Range::Loopback)),
        (
            "https://0x7f.0.0.2:PORT/",
            "127.0.0.2",
            Reason::Range(Range::Loopback),
        ),
        (
            "https://100.100.100.200/",
            "100.100.100.200",
            Reason::Range(Range::Metadata),
        ),
    ];
    for (to, addr, reason) in table {
        let before = origin.seen().len();
        let error = failure(&origin.url(&format!("/to/{to}")), &policy).await;
        let expected: IpAddr = addr.parse().expect("an address");
        match &error {
            FetchError::AddressRefused { addr, why, .. } => {
                assert_eq!(*addr, expected, "{to}");
                assert_eq!(*why, reason, "{to}");
            }
            other => panic!("{to}: {other}"),
        }
        assert_eq!(error.code(), "address_refused");
        assert!(error.to_string().contains("sources.allow"), "{error}");
        assert_eq!(origin.seen().len() - before, 1, "{to}");
    }
}

#[tokio::test]
async fn a_redirect_from_https_to_http_needs_allow_http() {
    let plain = Origin::start(Transport::Http, |_| Reply::full(200, "plain")).await;
    let there = plain.url("/");
    let origin = Origin::start(Transport::Https, move |_| Reply::redirect(301, &there)).await;
    let mut policy = policy(&origin);
    let error = failure(&origin.url("/"), &policy).await;
    assert_eq!(error.code(), "scheme_refused", "{error}");
    assert!(plain.seen().is_empty());
    policy.allow_http = true;
    let mut fetched = edge_fetch::fetch(&origin.url("/"), &policy, None)
        .await
        .expect("fetched");
    assert_eq!(fetched.final_url, plain.url("/"));
    let (body, _) = read_all(&mut fetched.body).await.expect("the body");
    assert_eq!(body, b"plain");
}

#[tokio::test]
async fn a_redirect_without_location_fails() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(302, "")).await;
    let error = failure(&origin.url("/"), &policy(&origin)).await;
    assert_eq!(error.code(), "bad_redirect", "{error}");
}

#[tokio::test]
async fn a_refused_address_is_never_connected_to() {
    // A listener on 127.0.0.2 (loopback, not on the allow-list): it must see no connection.
    let trap = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("a port on 127.0.0.2");
    let trap_url = format!("https://{}/", trap.local_addr().expect("an address"));
    let origin = Origin::start(Transport::Https, move |_| Reply::redirect(302, &trap_url)).await;
    let error = failure(&origin.url("/"), &policy(&origin)).await;
    assert_eq!(error.code(), "address_refused", "{error}");
    let accepted = tokio::time::timeout(std::time::Duration::from_millis(200), trap.accept()).await;
    assert!(accepted.is_err(), "the refused address was connected to");
}
