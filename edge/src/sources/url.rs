//! URL sources: `source=https://...`. The body is fetched by `edge-fetch` under the policy of
//! `[sources]` (https only, every address checked against the refused ranges, on every
//! redirect; size and time caps) and decoded while it downloads. A URL that cannot be what
//! the policy allows (not a URL, a refused scheme or address, a redirect loop) refuses the
//! job before it starts; an origin that fails (an error status, a timeout, a broken
//! connection) starts it and fails it with `source_failed`, so that the job history says so.

use super::{Opened, SourceBody};
use crate::config::SourcesConfig;
use crate::jobs::{Broken, Refusal};
use bytes::Bytes;
use edge_fetch::{Conditional, FetchError, Fetched, Policy};
use edge_proto::{ErrorCode, Format};
use edge_tasks::fetches::{self, Validators};
use edge_tasks::Store;
use serde_json::json;
use std::time::Duration;

/// The fetch policy of `config`, with its CA files read (blocking).
pub(crate) fn policy(config: &SourcesConfig) -> Result<Policy, String> {
    let rules = |list: &[String]| -> Result<Vec<edge_fetch::Rule>, String> {
        list.iter()
            .map(|rule| rule.parse().map_err(|e| format!("`{rule}`: {e}")))
            .collect()
    };
    let mut extra_roots = Vec::new();
    for file in &config.ca_files {
        let pem = std::fs::read(file)
            .map_err(|e| format!("sources.ca_files: cannot read {}: {e}", file.display()))?;
        for cert in rustls_pemfile_certs(&pem) {
            extra_roots.push(cert.map_err(|e| {
                format!(
                    "sources.ca_files: {} holds no certificate: {e}",
                    file.display()
                )
            })?);
        }
    }
    Ok(Policy {
        allow_http: config.allow_http,
        allow: rules(&config.allow)?,
        deny: rules(&config.deny)?,
        max_bytes: config.max_fetch_bytes,
        connect_timeout: Duration::from_secs(config.connect_timeout_secs),
        first_byte_timeout: Duration::from_secs(config.first_byte_timeout_secs),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        total_timeout: Duration::from_secs(config.total_timeout_secs),
        max_redirects: 5,
        extra_roots,
    })
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(
    pem: &[u8],
) -> impl Iterator<Item = Result<rustls_pki_types::CertificateDer<'static>, String>> + '_ {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem).map(|c| c.map_err(|e| e.to_string()))
}

/// Fetches `url` for a job; `if_changed`: ask the origin whether it changed since the last
/// fetch whose job was done.
pub(crate) async fn open(
    policy: &Policy,
    store: &Store,
    url: &str,
    if_changed: bool,
) -> Result<Opened, Refusal> {
    let conditional = match if_changed {
        true => last_validators(store, url).await.map(|v| Conditional {
            etag: v.etag,
            last_modified: v.last_modified,
        }),
        false => None,
    };
    match edge_fetch::fetch(url, policy, conditional.as_ref()).await {
        Ok(fetched) => Ok(opened(url, fetched)),
        Err(e) if refuses_the_url(&e) => Err(Refusal {
            code: ErrorCode::BadParams,
            message: format!("{}: {e}", e.code()),
            retry_after: None,
        }),
        Err(e) => Ok(Opened {
            name: file_name(url),
            size: None,
            format: None,
            record: json!({ "url": url, "error": e.code() }),
            unchanged: false,
            body: SourceBody::Failed(Some(broken(&e))),
        }),
    }
}

/// Whether a fetch error is the URL's own (the job is refused), not the origin's.
fn refuses_the_url(e: &FetchError) -> bool {
    matches!(
        e.code(),
        "bad_url" | "scheme_refused" | "address_refused" | "too_many_redirects" | "bad_redirect"
    )
}

/// A fetch error as the way a job's body broke off.
pub(crate) fn broken(e: &FetchError) -> Broken {
    let code = match e {
        FetchError::TooLarge { .. } => ErrorCode::LimitExceeded,
        _ => ErrorCode::SourceFailed,
    };
    Broken {
        code,
        message: format!("{}: {e}", e.code()),
    }
}

/// A fetched response as a job's source.
fn opened(url: &str, fetched: Fetched) -> Opened {
    let name = file_name(&fetched.final_url);
    let format = fetched
        .content_type
        .as_deref()
        .and_then(format_of_content_type)
        .or_else(|| Format::from_file_name(&name));
    let record = json!({
        "url": url,
        "final_url": fetched.final_url,
        "status": fetched.status,
        "redirects": fetched.redirects,
        "etag": fetched.etag,
        "last_modified": fetched.last_modified,
        "content_type": fetched.content_type,
    });
    let validators = Validators {
        etag: fetched.etag.clone(),
        last_modified: fetched.last_modified.clone(),
    };
    Opened {
        name,
        size: None,
        format,
        record,
        unchanged: fetched.not_modified,
        // A 304 keeps what was kept.
        body: SourceBody::Url(
            Box::new(fetched.body),
            (!fetched.not_modified).then(|| (url.to_owned(), validators)),
        ),
    }
}

/// The next piece of a URL's body.
pub(crate) async fn chunk(body: &mut edge_fetch::Body) -> Result<Option<Bytes>, Broken> {
    body.chunk().await.map_err(|e| broken(&e))
}

/// The last path segment of a URL (its file name), or `download`.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    path.split_once('/')
        .map(|(_, path)| path.rsplit('/').next().unwrap_or(""))
        .filter(|name| !name.is_empty())
        .map(|name| {
            percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "download".to_owned())
}

/// The format a Content-Type names, if any (types that name none are left to the URL's
/// extension, then to sniffing).
fn format_of_content_type(content_type: &str) -> Option<Format> {
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(Format::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Some(Format::Ndjson),
        "text/csv" | "application/csv" => Some(Format::Csv),
        "text/plain" => Some(Format::Lines),
        _ => None,
    }
}

/// The validators kept for `url`, if any.
async fn last_validators(store: &Store, url: &str) -> Option<Validators> {
    let (store, url) = (store.clone(), url.to_owned());
    match tokio::task::spawn_blocking(move || fetches::last(&store, &url)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            tracing::warn!("cannot read a URL's validators: {e}");
            None
        }
        Err(_) => None,
    }
}

/// Keeps a URL's validators once its job was done (blocking work off the runtime).
pub(crate) async fn remember(store: &Store, url: String, validators: Validators) {
    let store = store.clone();
    let kept = tokio::task::spawn_blocking(move || fetches::remember(&store, &url, &validators));
    if let Ok(Err(e)) = kept.await {
        tracing::warn!("cannot keep a URL's validators: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_last_path_segment() {
        assert_eq!(
            file_name("https://example.org/data/ports.csv?x=1"),
            "ports.csv"
        );
        assert_eq!(file_name("https://example.org/a%20b.json"), "a b.json");
        assert_eq!(file_name("https://example.org/"), "download");
        assert_eq!(file_name("https://example.org"), "download");
    }

    #[test]
    fn content_types_name_formats() {
        assert_eq!(
            format_of_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(format_of_content_type("application/octet-stream"), None);
    }
}
