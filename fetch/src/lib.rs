//! Fetches a URL for a job, safely: `edge` turns a user's `source=https://...` into a
//! stream of body bytes with [`fetch`], under a [`Policy`] from its configuration.
//!
//! # Threat model
//!
//! The URL comes from a user with a token, not from the server's operator. The server sits
//! inside a network (a home box, a cloud VM) and can reach what the user cannot: its own
//! loopback services (the admin port), the LAN, the cloud's instance metadata endpoint (which
//! hands out credentials). Server-side request forgery is making the server fetch those for
//! the user; the answer's body, status, timing or error would leak what is there. A hostile
//! origin can also try to exhaust the server: an endless or slow body, a gzip bomb, a
//! redirect loop. So:
//!
//! - **What a URL may be** (`target`): `https`, or `http` only with
//!   [`Policy::allow_http`]; no user name or password (credentials are never sent); a host.
//!   URLs are parsed as browsers parse them (WHATWG), so `https://0x7f.1/` is 127.0.0.1.
//! - **Where a connection may go** (`target` and `policy`): the host is resolved once, by
//!   this crate, and *every* address it resolves to is checked before anything connects; one
//!   refused address refuses the URL (naming it). An address literal is checked the same way.
//!   The connection then goes only to those checked addresses (`client` connects to the
//!   `SocketAddr`s, with the URL's host as the TLS server name), so no second lookup can
//!   answer differently (DNS rebinding). Refused unless an allow rule permits them: loopback,
//!   private, link-local, CGNAT, multicast, unspecified, broadcast, documentation,
//!   benchmarking and reserved ranges, IPv6 forms that carry an IPv4 address (checked by that
//!   address: IPv4-mapped, NAT64) or tunnel to one (IPv4-compatible, Teredo, 6to4), and the
//!   cloud metadata addresses, which only a rule naming exactly that address permits (see
//!   `ranges`). Deny rules refuse hosts or networks, public ones too, and win over allow
//!   rules.
//! - **Redirects** (`redirect`): followed here, at most [`Policy::max_redirects`], each new
//!   URL checked and resolved and its addresses checked like the first (so https → http is
//!   refused unless http is allowed). Nothing carries over from one hop to the next but the
//!   conditional headers: no cookies are kept, no `Authorization` is ever sent.
//! - **What is sent**: a GET with `User-Agent: edge-fetch/<version>`, `Accept-Encoding: gzip,
//!   deflate, br`, and `If-None-Match` / `If-Modified-Since` when asked; nothing else.
//! - **Caps** (`timing`, `body`): a connect timeout (resolving, TCP and TLS of a hop), a
//!   first-byte timeout (request sent → response head), an idle timeout (between body
//!   pieces), a total timeout (the whole fetch, body included); [`Policy::max_bytes`] on the
//!   decoded body, enforced as it streams (a gzip bomb stops at the cap, never decoded whole),
//!   and up front when an unencoded body's `Content-Length` is past it. The body is never held
//!   whole, in memory or on disk: [`Body::chunk`] hands out pieces of at most 64 KiB as the
//!   decoder yields them.
//! - **TLS**: rustls with the ring provider; the system's root certificates plus
//!   [`Policy::extra_roots`]; ALPN picks HTTP/2 or HTTP/1.1.
//!
//! Not covered: what the body says (that is the task's decoders' job), and an allow rule
//! that permits a host name permits whatever that name resolves to (its DNS is trusted).
//!
//! # Layout
//!
//! `policy` (the policy, rules and the decision for one address), `ranges` (the refused
//! address ranges), `target` (URL checks, resolving, checking addresses), `client` (one
//! connection and one GET), `redirect`, `body` (decoding, caps), `timing` (the time caps),
//! `tls`, `error`.

mod body;
mod client;
mod error;
mod policy;
mod ranges;
mod redirect;
mod target;
mod timing;
mod tls;

pub use body::Body;
pub use error::{FetchError, Timeout};
pub use policy::{Net, Policy, Reason, Rule, RuleError};
pub use ranges::{Embedding, Range};

use body::{Coding, Limits};
use http::header::{self, HeaderMap};
use http::StatusCode;
use hyper::body::Incoming;
use target::Target;
use timing::Deadline;

/// The validators of an earlier fetch of the same URL, sent as `If-None-Match` and
/// `If-Modified-Since`: an origin that has nothing newer answers 304.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditional {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A fetched response: where it came from, what it says about itself, and its body.
#[derive(Debug)]
pub struct Fetched {
    /// The URL of the response, after redirects (without a fragment).
    pub final_url: String,
    pub status: u16,
    /// How many redirects were followed.
    pub redirects: usize,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_type: Option<String>,
    /// The `Content-Length` of the body on the wire (before decoding), if given.
    pub content_length: Option<u64>,
    /// The origin answered 304 Not Modified to a conditional request: there is no body.
    pub not_modified: bool,
    /// The decoded body, streamed.
    pub body: Body,
}

/// Fetches `url` under `policy`: follows redirects, checks every address before connecting,
/// and returns the response head with its body still streaming. A status other than 2xx (or
/// 304) is an error; see [`FetchError`] for the rest.
pub async fn fetch(
    url: &str,
    policy: &Policy,
    conditional: Option<&Conditional>,
) -> Result<Fetched, FetchError> {
    let deadline = Deadline::start(policy.total_timeout);
    let tls = tls::config(policy).await?;
    let mut url = target::parse(url, policy)?;
    let mut redirects = 0;
    loop {
        let (target, response, connection) =
            client::get(url, policy, &tls, conditional, &deadline).await?;
        let status = response.status();
        tracing::debug!(url = %target.url, status = status.as_u16(), version = ?response.version(), "fetched a head");
        if !redirect::is_redirect(status) {
            return answer(&target, response, connection, redirects, policy, deadline);
        }
        let next = redirect::location(&target.url, status, response.headers())?;
        drop((response, connection));
        if redirects >= policy.max_redirects {
            return Err(FetchError::TooManyRedirects {
                max: policy.max_redirects,
            });
        }
        redirects += 1;
        url = target::check(next, policy)?;
    }
}

/// The final response: its head as a `Fetched`, with its body to stream (none for a 304);
/// an error for any other status, or a body known to be past the cap.
fn answer(
    target: &Target,
    response: http::Response<Incoming>,
    connection: client::Connection,
    redirects: usize,
    policy: &Policy,
    deadline: Deadline,
) -> Result<Fetched, FetchError> {
    let (head, incoming) = response.into_parts();
    let headers = &head.headers;
    let status = head.status;
    let mut fetched = Fetched {
        final_url: target.url.to_string(),
        status: status.as_u16(),
        redirects,
        etag: text(headers, header::ETAG),
        last_modified: text(headers, header::LAST_MODIFIED),
        content_type: text(headers, header::CONTENT_TYPE),
        content_length: text(headers, header::CONTENT_LENGTH).and_then(|n| n.parse().ok()),
        not_modified: status == StatusCode::NOT_MODIFIED,
        body: Body::empty(),
    };
    if fetched.not_modified {
        return Ok(fetched);
    }
    if !status.is_success() {
        return Err(FetchError::Status {
            status: status.as_u16(),
        });
    }
    let coding = Coding::parse(text(headers, header::CONTENT_ENCODING).as_deref())?;
    let past_cap = |length: u64| policy.max_bytes > 0 && length > policy.max_bytes;
    if coding == Coding::Identity && fetched.content_length.is_some_and(past_cap) {
        return Err(FetchError::TooLarge {
            max: policy.max_bytes,
        });
    }
    let limits = Limits {
        max: policy.max_bytes,
        idle: policy.idle_timeout,
        deadline,
    };
    fetched.body = Body::new(incoming, coding, limits, connection);
    Ok(fetched)
}

/// A header's value as text, if it is there and is text.
fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}
