//! TLS for fetches: rustls with the ring provider, the system's root certificates (read once
//! per process) plus the policy's extra roots, ALPN `h2` then `http/1.1`.

use crate::error::FetchError;
use crate::policy::Policy;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The system's root certificates, read on the first fetch.
static SYSTEM_ROOTS: OnceCell<Vec<CertificateDer<'static>>> = OnceCell::const_new();

/// The client configuration for a fetch under `policy`.
pub(crate) async fn config(policy: &Policy) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(system_roots().await.iter().cloned());
    if ignored > 0 {
        tracing::debug!(ignored, "system root certificates that do not parse");
    }
    for cert in &policy.extra_roots {
        roots
            .add(cert.clone())
            .map_err(|source| FetchError::BadRoot { source })?;
    }
    if roots.is_empty() {
        return Err(FetchError::NoRoots);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn system_roots() -> &'static [CertificateDer<'static>] {
    SYSTEM_ROOTS
        .get_or_init(|| async {
            let loaded = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs).await;
            match loaded {
                Ok(found) => {
                    for error in &found.errors {
                        tracing::warn!("reading the system's root certificates: {error}");
                    }
                    found.certs
                }
                Err(e) => {
                    tracing::warn!("reading the system's root certificates: {e}");
                    Vec::new()
                }
            }
        })
        .await
}
