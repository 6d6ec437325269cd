//! What is refused before anything is sent: loopback by address or by name, http, URLs with
//! credentials, deny rules.

use crate::server::{Origin, Reply, Transport};
use crate::{failure, policy, read_all, rule};
use edge_fetch::{FetchError, Range, Reason};

#[tokio::test]
async fn loopback_is_refused_by_default() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(200, "x")).await;
    let mut policy = policy(&origin);
    policy.allow.clear();
    let by_address = failure(&origin.url("/"), &policy).await;
    assert_eq!(
        by_address.to_string(),
        "127.0.0.1 is a loopback address: fetching it is refused \
         (add it to sources.allow to permit it)"
    );
    let port = origin.addr.port();
    let by_name = failure(&format!("https://localhost:{port}/"), &policy).await;
    match &by_name {
        FetchError::AddressRefused { host, addr, why } => {
            assert_eq!(host, "localhost");
            assert!(addr.is_loopback(), "{addr}");
            assert_eq!(*why, Reason::Range(Range::Loopback));
        }
        other => panic!("{other}"),
    }
    assert!(
        by_name.to_string().starts_with("localhost resolves to "),
        "{by_name}"
    );
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn an_allow_rule_for_the_name_permits_it() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(200, "by name")).await;
    let mut policy = policy(&origin);
    policy.allow = vec![rule("localhost")];
    let url = format!("https://localhost:{}/", origin.addr.port());
    let mut fetched = edge_fetch::fetch(&url, &policy, None)
        .await
        .expect("fetched");
    let (body, _) = read_all(&mut fetched.body).await.expect("the body");
    assert_eq!(body, b"by name");
    // The address itself is not allowed by the name's rule.
    let error = failure(&origin.url("/"), &policy).await;
    assert_eq!(error.code(), "address_refused", "{error}");
}

#[tokio::test]
async fn a_deny_rule_wins_over_an_allow_rule() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(200, "x")).await;
    let mut policy = policy(&origin);
    policy.allow = vec![rule("127.0.0.0/8"), rule("localhost")];
    policy.deny = vec![rule("*.internal"), rule("127.0.0.1")];
    let error = failure(&origin.url("/"), &policy).await;
    assert_eq!(
        error.to_string(),
        "127.0.0.1 is denied by the rule 127.0.0.1/32 in sources.deny: fetching it is \
         refused (remove the rule from sources.deny to permit it)"
    );
    assert!(origin.seen().is_empty());
}

#[tokio::test]
async fn http_is_refused_unless_allowed() {
    let origin = Origin::start(Transport::Http, |_| Reply::full(200, "plain")).await;
    let mut policy = policy(&origin);
    let error = failure(&origin.url("/"), &policy).await;
    assert_eq!(error.code(), "scheme_refused");
    assert!(error.to_string().contains("sources.allow_http"), "{error}");
    assert!(origin.seen().is_empty());
    policy.allow_http = true;
    let mut fetched = edge_fetch::fetch(&origin.url("/"), &policy, None)
        .await
        .expect("fetched");
    let (body, _) = read_all(&mut fetched.body).await.expect("the body");
    assert_eq!(body, b"plain");
}

#[tokio::test]
async fn credentials_in_the_url_are_refused() {
    let origin = Origin::start(Transport::Https, |_| Reply::full(200, "x")).await;
    let policy = policy(&origin);
    for url in [
        format!("https://user:pass@{}/", origin.addr),
        format!("https://user@{}/", origin.addr),
    ] {
        let error = failure(&url, &policy).await;
        assert_eq!(error.code(), "bad_url", "{url}");
        assert!(
            error.to_string().contains("user name or password"),
            "{error}"
        );
    }
    assert!(origin.seen().is_empty());
}
