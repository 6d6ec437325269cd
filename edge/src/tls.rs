//! TLS for every connection: the server certificate (configured PEM files, or dev material
//! generated with rcgen on first start) and the rustls/quinn server configuration.
//!
//! Dev material lives in the certs dir: `ca.pem` (what clients trust), `ca.key`,
//! `server.pem` and `server.key` (keys mode 0600). It is generated once and reused.

use crate::config::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The dev CA's common name.
const DEV_CA_NAME: &str = "edge dev CA";

/// Names every dev server certificate carries.
const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate problem; the message names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {what} from {path}: {message}")]
    Load {
        /// "certificate chain" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Dev material could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not make a certificate (e.g. an invalid name in `tls.names`).
    #[error("cannot generate the dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not make a valid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its key, ready for rustls.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The dev CA clients should trust, when the identity is generated dev material.
    pub dev_ca: Option<PathBuf>,
}

/// The configured certificate, or the dev one in `certs_dir` (generated if missing).
pub fn load_identity(tls: &TlsConfig, certs_dir: &Path) -> Result<Identity, TlsError> {
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Ok(Identity {
            chain: load_chain(cert)?,
            key: load_key(key)?,
            dev_ca: None,
        }),
        _ => dev_identity(certs_dir, &tls.names),
    }
}

/// The rustls server configuration for QUIC: TLS 1.3 only, the given ALPN ids, 0-RTT off
/// (uploads are not idempotent); `certificates` picks the certificate for each handshake.
pub fn server_crypto(
    certificates: Arc<dyn rustls::server::ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = alpn.iter().map(|id| id.to_vec()).collect();
    config.max_early_data_size = 0;
    Ok(config)
}

/// Reads a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |message: String| TlsError::Load {
        what: "certificate chain",
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if chain.is_empty() {
        return Err(fail("no CERTIFICATE block in the file".into()));
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Load {
        what: "private key",
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Paths of the dev material in a certs dir.
#[derive(Debug, Clone)]
pub struct DevPaths {
    /// The CA certificate clients trust.
    pub ca_cert: PathBuf,
    /// The CA's key (signs new server certificates).
    pub ca_key: PathBuf,
    /// The server certificate.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
}

impl DevPaths {
    /// The dev material's paths inside `dir`.
    pub fn new(dir: &Path) -> DevPaths {
        DevPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

fn dev_identity(dir: &Path, extra_names: &[String]) -> Result<Identity, TlsError> {
    let paths = DevPaths::new(dir);
    if !(paths.server_cert.is_file() && paths.server_key.is_file() && paths.ca_cert.is_file()) {
        generate_dev(&paths, extra_names)?;
    }
    Ok(Identity {
        chain: load_chain(&paths.server_cert)?,
        key: load_key(&paths.server_key)?,
        dev_ca: Some(paths.ca_cert),
    })
}

/// Writes dev material into `paths`: a new CA unless one exists, and a new server certificate
/// for localhost, 127.0.0.1, ::1 and `extra_names`, signed by that CA.
pub fn generate_dev(paths: &DevPaths, extra_names: &[String]) -> Result<(), TlsError> {
    if let Some(dir) = paths.ca_cert.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
    }
    let ca_key = if paths.ca_cert.is_file() && paths.ca_key.is_file() {
        let pem = std::fs::read_to_string(&paths.ca_key).map_err(|e| TlsError::Load {
            what: "private key",
            path: paths.ca_key.clone(),
            message: e.to_string(),
        })?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_file(&paths.ca_key, key.serialize_pem().as_bytes(), true)?;
        write_file(&paths.ca_cert, cert.pem().as_bytes(), false)?;
        key
    };
    // The CA was made from `ca_params()`: the same parameters and key name the same issuer.
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut names: Vec<String> = DEV_NAMES.iter().map(|n| n.to_string()).collect();
    names.extend(
        extra_names
            .iter()
            .filter(|n| !DEV_NAMES.contains(&n.as_str()))
            .cloned(),
    );
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "edge dev server");
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_file(&paths.server_key, key.serialize_pem().as_bytes(), true)?;
    write_file(&paths.server_cert, cert.pem().as_bytes(), false)?;
    Ok(())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, DEV_CA_NAME);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Writes a PEM file atomically (temp file + rename); `secret` files (keys) get mode 0600.
pub(crate) fn write_pem(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    write_pem(path, contents, secret).map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_material_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_identity(&TlsConfig::default(), dir.path()).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let second = load_identity(&TlsConfig::default(), dir.path()).unwrap();
        assert_eq!(
            first.chain, second.chain,
            "the server certificate is reused"
        );
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        assert_eq!(first.dev_ca, Some(dir.path().join("ca.pem")));
        #[cfg(unix)]
        for key in ["ca.key", "server.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} must be private");
        }
    }

    #[test]
    fn a_reissued_server_certificate_keeps_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPaths::new(dir.path());
        generate_dev(&paths, &[]).unwrap();
        let ca = std::fs::read(&paths.ca_cert).unwrap();
        let server = std::fs::read(&paths.server_cert).unwrap();
        generate_dev(&paths, &["edge.example.org".into()]).unwrap();
        assert_eq!(std::fs::read(&paths.ca_cert).unwrap(), ca);
        assert_ne!(std::fs::read(&paths.server_cert).unwrap(), server);
    }

    #[test]
    fn configured_files_are_used_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPaths::new(dir.path());
        generate_dev(&paths, &[]).unwrap();
        let tls = TlsConfig {
            cert: Some(paths.server_cert.clone()),
            key: Some(paths.server_key.clone()),
            names: vec![],
        };
        let identity = load_identity(&tls, Path::new("/nonexistent")).unwrap();
        assert_eq!(identity.dev_ca, None);
        let certificates =
            crate::certs::Certificates::load(&tls, Path::new("/nonexistent")).unwrap();
        assert!(certificates.info().names.contains(&"localhost".to_owned()));
        assert!(server_crypto(certificates, &[b"edge/1"]).is_ok());
    }

    #[test]
    fn a_missing_file_is_named() {
        let tls = TlsConfig {
            cert: Some("/nonexistent/fullchain.pem".into()),
            key: Some("/nonexistent/privkey.pem".into()),
            names: vec![],
        };
        let err = load_identity(&tls, Path::new("certs")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/fullchain.pem"),
            "{err}"
        );
    }
}
