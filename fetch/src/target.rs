//! Where one hop goes: the URL checked (scheme, no credentials), its host resolved once, and
//! every address checked against the policy before anything connects. The connection then
//! goes to these addresses only.

use crate::error::FetchError;
use crate::policy::Policy;
use std::net::{IpAddr, SocketAddr};
use url::Url;

/// A URL whose every address passed the policy.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) url: Url,
    /// The host as the URL names it: a domain (IDNA form) or an address (no brackets).
    pub(crate) host: String,
    pub(crate) tls: bool,
    /// The checked addresses, in the resolver's order.
    pub(crate) addrs: Vec<SocketAddr>,
}

/// Parses `text` as a URL to fetch: http(s), a host, no user name or password; the fragment
/// (never sent) dropped.
pub(crate) fn parse(text: &str, policy: &Policy) -> Result<Url, FetchError> {
    let url = Url::parse(text).map_err(|e| FetchError::BadUrl {
        url: text.to_owned(),
        why: e.to_string(),
    })?;
    check(url, policy)
}

/// Checks a URL to fetch (the first or a redirect's): http(s) as the policy allows, a host,
/// no credentials; drops the fragment.
pub(crate) fn check(mut url: Url, policy: &Policy) -> Result<Url, FetchError> {
    let bad = |url: &Url, why: &str| FetchError::BadUrl {
        url: url.to_string(),
        why: why.to_owned(),
    };
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => return Err(FetchError::SchemeRefused {
            scheme: "http".into(),
            fix:
                "only https is fetched (use an https URL, or set sources.allow_http to permit http)",
        }),
        other => {
            return Err(FetchError::SchemeRefused {
                scheme: other.to_owned(),
                fix: "only https (and http where allowed) is fetched",
            })
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        // The message goes to logs and job errors: without the password.
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        return Err(bad(
            &shown,
            "URLs with a user name or password are refused, credentials are never sent (remove the part before '@')",
        ));
    }
    if url.host().is_none() {
        return Err(bad(&url, "it has no host"));
    }
    url.set_fragment(None);
    Ok(url)
}

/// Resolves the URL's host (an address is taken as it is) and checks every address: one
/// refused address refuses the hop.
pub(crate) async fn resolve(url: Url, policy: &Policy) -> Result<Target, FetchError> {
    let port = url.port_or_known_default().unwrap_or(443);
    let (host, addrs) = match url.host() {
        Some(url::Host::Ipv4(v4)) => (v4.to_string(), vec![SocketAddr::new(IpAddr::V4(v4), port)]),
        Some(url::Host::Ipv6(v6)) => (v6.to_string(), vec![SocketAddr::new(IpAddr::V6(v6), port)]),
        Some(url::Host::Domain(domain)) => (domain.to_owned(), lookup(domain, port).await?),
        None => {
            return Err(FetchError::BadUrl {
                url: url.to_string(),
                why: "it has no host".into(),
            })
        }
    };
    for addr in &addrs {
        policy
            .check(&host, addr.ip())
            .map_err(|why| FetchError::AddressRefused {
                host: host.clone(),
                addr: addr.ip(),
                why,
            })?;
    }
    tracing::debug!(%url, ?addrs, "addresses checked");
    let tls = url.scheme() == "https";
    Ok(Target {
        url,
        host,
        tls,
        addrs,
    })
}

/// The addresses of `domain`, each once.
async fn lookup(domain: &str, port: u16) -> Result<Vec<SocketAddr>, FetchError> {
    let found = tokio::net::lookup_host((domain, port))
        .await
        .map_err(|source| FetchError::Resolve {
            host: domain.to_owned(),
            source,
        })?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(FetchError::NoAddress {
            host: domain.to_owned(),
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str, policy: &Policy) -> String {
        match parse(text, policy) {
            Ok(url) => panic!("{text} was taken as {url}"),
            Err(e) => e.code().to_owned(),
        }
    }

    #[test]
    fn schemes_and_credentials() {
        let https_only = Policy::default();
        let with_http = Policy {
            allow_http: true,
            ..Policy::default()
        };
        assert_eq!(
            refusal("http://example.org/", &https_only),
            "scheme_refused"
        );
        assert!(parse("http://example.org/", &with_http).is_ok());
        assert_eq!(refusal("ftp://example.org/", &with_http), "scheme_refused");
        assert_eq!(refusal("file:///etc/passwd", &with_http), "scheme_refused");
        assert_eq!(
            refusal("https://user:pass@example.org/", &https_only),
            "bad_url"
        );
        assert_eq!(refusal("https://user@example.org/", &https_only), "bad_url");
        assert_eq!(
            refusal("https://:pass@example.org/", &https_only),
            "bad_url"
        );
        let shown = parse("https://user:secret@example.org/", &https_only)
            .expect_err("refused")
            .to_string();
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(refusal("not a url", &https_only), "bad_url");
        assert_eq!(refusal("https://", &https_only), "bad_url");
        let url = parse("https://Example.org:443/a/../b?q=1#part", &https_only).expect("a URL");
        assert_eq!(url.as_str(), "https://example.org/b?q=1");
    }

    #[tokio::test]
    async fn address_literals_in_any_form_are_checked() {
        let policy = Policy::default();
        for text in [
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:7f00:1]/",
            "https://0/",
            "https://169.254.169.254/latest/meta-data/",
            "https://[fd00:ec2::254]/",
            "https://10.0.0.1:8443/",
        ] {
            let url = parse(text, &policy).expect("a URL");
            let refused = resolve(url, &policy).await;
            assert!(
                matches!(refused, Err(FetchError::AddressRefused { .. })),
                "{text}: {refused:?}"
            );
        }
    }
}
