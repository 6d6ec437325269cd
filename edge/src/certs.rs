//! The server certificate while the server runs: handed to every TLS handshake, swapped in
//! place when the files change (certbot renewals) or on SIGHUP, without touching open
//! connections. A certificate within [`EXPIRY_WARNING`] of its end is a warning in the log and
//! in `/healthz`.

use crate::config::TlsConfig;
use crate::tls::{self, Identity, TlsError};
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// How close to its end a certificate is worth a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// The subject, e.g. `CN=edge.example.org`.
    pub subject: String,
    /// The issuer.
    pub issuer: String,
    /// The DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// Its end of validity (RFC 3339).
    pub expires: String,
    /// Its end of validity, in seconds since the epoch.
    #[serde(skip)]
    pub not_after: i64,
    /// Days left (negative once expired).
    pub days_left: i64,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn of(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let not_after = cert.validity().not_after.timestamp();
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let expires = u64::try_from(not_after)
            .ok()
            .map(|secs| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                    .to_string()
            })
            .unwrap_or_else(|| not_after.to_string());
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            expires,
            not_after,
            days_left: (not_after - now).div_euclid(24 * 3600),
        })
    }

    /// A warning when the certificate ends within [`EXPIRY_WARNING`] (or has ended).
    pub fn warning(&self) -> Option<String> {
        let left = self.not_after
            - SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
        if left <= 0 {
            Some(format!(
                "the certificate expired on {}: renew it",
                self.expires
            ))
        } else if left <= EXPIRY_WARNING.as_secs() as i64 {
            Some(format!(
                "the certificate expires on {} ({} days): renew it",
                self.expires, self.days_left
            ))
        } else {
            None
        }
    }
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// The certificate in use, reloadable.
#[derive(Debug)]
pub struct Certificates {
    tls: TlsConfig,
    certs_dir: PathBuf,
    current: RwLock<Current>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    info: CertInfo,
    /// The files' modification times when loaded.
    stamps: Vec<Option<SystemTime>>,
}

impl Certificates {
    /// Loads the configured certificate, or the dev one (generated if missing).
    pub fn load(tls: &TlsConfig, certs_dir: &Path) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificates = Certificates {
            tls: tls.clone(),
            certs_dir: certs_dir.to_owned(),
            current: RwLock::new(Current::load(tls, certs_dir, &provider)?),
            provider,
        };
        Ok(Arc::new(certificates))
    }

    /// The dev CA clients must trust, when the certificate is generated dev material.
    pub fn dev_ca(&self) -> Option<PathBuf> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), Some(_)) => None,
            _ => Some(tls::DevPaths::new(&self.certs_dir).ca_cert),
        }
    }

    /// What the certificate in use says.
    pub fn info(&self) -> CertInfo {
        self.read().info.clone()
    }

    /// Reads the files again and swaps the certificate in; open connections keep theirs. On
    /// error the certificate in use stays.
    pub fn reload(&self) -> Result<CertInfo, TlsError> {
        let current = Current::load(&self.tls, &self.certs_dir, &self.provider)?;
        let info = current.info.clone();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = current;
        Ok(info)
    }

    /// Whether the files changed since they were loaded.
    pub fn changed_on_disk(&self) -> bool {
        self.read().stamps != stamps(&self.files())
    }

    /// Reloads and logs the outcome (SIGHUP, a change on disk).
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(info) => {
                info!(expires = %info.expires, subject = %info.subject, "certificate reloaded ({why})");
                if let Some(warning) = info.warning() {
                    warn!("{warning}");
                }
            }
            Err(e) => warn!("certificate not reloaded ({why}): {e}; the previous one stays in use"),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        files(&self.tls, &self.certs_dir)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Current {
    fn load(
        tls: &TlsConfig,
        certs_dir: &Path,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Current, TlsError> {
        let files = files(tls, certs_dir);
        let before = stamps(&files);
        let Identity { chain, key, .. } = tls::load_identity(tls, certs_dir)?;
        // Stamped before reading, so that a renewal landing while the files are read is
        // picked up at the next check; but files that were missing have just been generated
        // (the first start's dev certificate): their stamps are the ones now.
        let stamps = if before.contains(&None) {
            stamps(&files)
        } else {
            before
        };
        let unreadable = |message: String| TlsError::Load {
            what: "certificate chain",
            path: files[0].clone(),
            message,
        };
        let leaf = chain
            .first()
            .ok_or_else(|| unreadable("no certificate".into()))?;
        let info = CertInfo::of(leaf).map_err(unreadable)?;
        let key = CertifiedKey::from_der(chain, key, provider)?;
        Ok(Current {
            key: Arc::new(key),
            info,
            stamps,
        })
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

/// The certificate and key files in use.
fn files(tls: &TlsConfig, certs_dir: &Path) -> Vec<PathBuf> {
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => vec![cert.clone(), key.clone()],
        _ => {
            let dev = tls::DevPaths::new(certs_dir);
            vec![dev.server_cert, dev.server_key]
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn generated_dev_files_do_not_count_as_a_change_but_a_rewrite_does() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let certificates = Certificates::load(&TlsConfig::default(), &certs).unwrap();
        assert!(
            tls::DevPaths::new(&certs).server_cert.is_file(),
            "the first load generates the dev certificate"
        );
        assert!(
            !certificates.changed_on_disk(),
            "the files it generated itself are not a change to reload"
        );

        // A renewal: the same path, a later modification time.
        let cert = tls::DevPaths::new(&certs).server_cert;
        let later = SystemTime::now() + Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&cert)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(certificates.changed_on_disk());
        certificates.reload().unwrap();
        assert!(!certificates.changed_on_disk());
    }
}
