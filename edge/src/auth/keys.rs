//! The keys tokens are verified (and minted) with: the keys configured in `[auth] keys`, or
//! else the Ed25519 pair generated in the certs dir ([`KeyPair`]).

use super::keyfile::{self, SigningSeed};
use super::{KeyError, SIGNING_KEY_FILE, VERIFY_KEY_FILE};
use crate::config::{AuthConfig, KeyAlgorithm, KeyConfig};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::path::{Path, PathBuf};

/// A key as configured or generated: how it verifies and, where its private half is at hand,
/// how it signs.
pub(super) struct LoadedKey {
    pub(super) kid: String,
    pub(super) algorithm: Algorithm,
    pub(super) decoding: DecodingKey,
    pub(super) encoding: Option<EncodingKey>,
}

/// The keys of `config` (or the generated pair when none are configured), in config order.
pub(super) fn load_keys(config: &AuthConfig, certs_dir: &Path) -> Result<Vec<LoadedKey>, KeyError> {
    if config.keys.is_empty() {
        let pair = KeyPair::load_or_generate(certs_dir)?;
        let decoding =
            DecodingKey::from_ed_pem(pair.verify_pem.as_bytes()).map_err(|e| KeyError::File {
                path: certs_dir.join(VERIFY_KEY_FILE),
                message: e.to_string(),
            })?;
        let encoding = pair.encoding_key().ok();
        return Ok(vec![LoadedKey {
            kid: pair.kid,
            algorithm: Algorithm::EdDSA,
            decoding,
            encoding,
        }]);
    }
    let mut keys: Vec<LoadedKey> = Vec::with_capacity(config.keys.len());
    for key in &config.keys {
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(config_error(
                key,
                "two keys have this kid; kids must be unique",
            ));
        }
        keys.push(load_key(key)?);
    }
    Ok(keys)
}

fn load_key(config: &KeyConfig) -> Result<LoadedKey, KeyError> {
    if config.kid.trim().is_empty() {
        return Err(config_error(config, "`kid` must not be empty"));
    }
    match config.algorithm {
        KeyAlgorithm::EdDSA => {
            if config.secret_file.is_some() || config.secret_env.is_some() {
                return Err(config_error(
                    config,
                    "an EdDSA key has `public_key` (and `private_key` where tokens are minted), not a secret",
                ));
            }
            let public = config.public_key.as_deref().ok_or_else(|| {
                config_error(
                    config,
                    "an EdDSA key needs `public_key` (a PEM file; `edge token keygen` makes one)",
                )
            })?;
            let public_pem = read_file(public)?;
            let decoding = DecodingKey::from_ed_pem(public_pem.as_bytes())
                .map_err(|e| file_error(public, &e.to_string()))?;
            let encoding = match &config.private_key {
                Some(path) => {
                    let seed = SigningSeed::from_pem(&read_file(path)?)
                        .map_err(|e| file_error(path, &e))?;
                    if keyfile::public_of_pem(&public_pem).is_some_and(|p| p != seed.public) {
                        return Err(config_error(
                            config,
                            "`private_key` is not the private half of `public_key`",
                        ));
                    }
                    Some(EncodingKey::from_ed_der(&seed.pkcs8_der()))
                }
                None => None,
            };
            Ok(LoadedKey {
                kid: config.kid.clone(),
                algorithm: Algorithm::EdDSA,
                decoding,
                encoding,
            })
        }
        KeyAlgorithm::HS256 => {
            let secret = hs256_secret(config)?;
            Ok(LoadedKey {
                kid: config.kid.clone(),
                algorithm: Algorithm::HS256,
                decoding: DecodingKey::from_secret(&secret),
                encoding: Some(EncodingKey::from_secret(&secret)),
            })
        }
    }
}

/// The smallest HS256 secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Reads an HS256 key's secret from its file or environment variable (trailing line ends
/// trimmed). The secret itself never appears in an error or a log.
fn hs256_secret(config: &KeyConfig) -> Result<Vec<u8>, KeyError> {
    if config.public_key.is_some() || config.private_key.is_some() {
        return Err(config_error(
            config,
            "an HS256 key has `secret_file` or `secret_env`, not PEM keys",
        ));
    }
    let mut secret = match (&config.secret_file, &config.secret_env) {
        (Some(path), None) => std::fs::read(path).map_err(|e| file_error(path, &e.to_string()))?,
        (None, Some(var)) => match std::env::var_os(var) {
            Some(value) => value.into_encoded_bytes(),
            None => {
                return Err(config_error(
                    config,
                    &format!("the environment variable `{var}` (secret_env) is not set"),
                ))
            }
        },
        _ => {
            return Err(config_error(
                config,
                "an HS256 key needs exactly one of `secret_file` and `secret_env`",
            ))
        }
    };
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Err(config_error(
            config,
            &format!(
                "the HS256 secret has {} bytes; use at least {MIN_SECRET_BYTES} random bytes \
                 (e.g. `head -c 48 /dev/urandom | base64`)",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

fn config_error(config: &KeyConfig, message: &str) -> KeyError {
    KeyError::Config {
        kid: config.kid.clone(),
        message: message.to_owned(),
    }
}

pub(super) fn file_error(path: &Path, message: &str) -> KeyError {
    KeyError::File {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

pub(super) fn read_file(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| file_error(path, &e.to_string()))
}

/// The generated signing key pair in a certs dir.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The key id (from the verifying key).
    pub kid: String,
    /// PKCS#8 PEM of the signing key (empty when only the verifying key is here).
    signing_pem: String,
    /// SPKI PEM of the verifying key.
    pub verify_pem: String,
}

impl KeyPair {
    /// Reads the pair from `dir`, generating it if there is none. A signing key in edge's old
    /// form (PKCS#8 v2, which OpenSSL 3.0 and Python's `cryptography` refuse) is rewritten in
    /// the standard form (the same key, so the same `kid`); where the file cannot be
    /// rewritten, it is read as it is.
    pub fn load_or_generate(dir: &Path) -> Result<KeyPair, KeyError> {
        let signing = dir.join(SIGNING_KEY_FILE);
        let verify = dir.join(VERIFY_KEY_FILE);
        if !verify.is_file() {
            generate(dir, &signing, &verify)?;
        }
        let verify_pem = read_file(&verify)?;
        let signing_pem = if signing.is_file() {
            standardize(&signing, read_file(&signing)?)
        } else {
            String::new()
        };
        Ok(KeyPair {
            kid: kid_of(&verify_pem),
            signing_pem,
            verify_pem,
        })
    }

    /// Writes a new pair to `<prefix>.pem` (signing, 0600) and `<prefix>.pub.pem` (verifying),
    /// refusing to overwrite either; returns the pair.
    pub fn generate_at(prefix: &Path) -> Result<KeyPair, KeyError> {
        let signing = with_suffix(prefix, ".pem");
        let verify = with_suffix(prefix, ".pub.pem");
        for path in [&signing, &verify] {
            if path.exists() {
                return Err(file_error(path, "already exists; pick another name"));
            }
        }
        let dir = prefix.parent().unwrap_or(Path::new("."));
        generate(dir, &signing, &verify)?;
        let verify_pem = read_file(&verify)?;
        Ok(KeyPair {
            kid: kid_of(&verify_pem),
            signing_pem: read_file(&signing)?,
            verify_pem,
        })
    }

    /// The signing key, checked against the verifying key.
    pub(super) fn encoding_key(&self) -> Result<EncodingKey, KeyError> {
        if self.signing_pem.is_empty() {
            return Err(KeyError::Crypto(format!(
                "this certs dir has no {SIGNING_KEY_FILE}: mint tokens where the signing key is"
            )));
        }
        let seed = SigningSeed::from_pem(&self.signing_pem)
            .map_err(|e| KeyError::Crypto(format!("{SIGNING_KEY_FILE}: {e}")))?;
        if keyfile::public_of_pem(&self.verify_pem).is_some_and(|p| p != seed.public) {
            return Err(KeyError::Crypto(format!(
                "{SIGNING_KEY_FILE} and {VERIFY_KEY_FILE} are not one pair: tokens it signs \
                 would not verify"
            )));
        }
        Ok(EncodingKey::from_ed_der(&seed.pkcs8_der()))
    }
}

/// A signing key file's text, rewritten in the standard form first if it is in edge's old
/// one.
fn standardize(path: &Path, text: String) -> String {
    let Ok(seed) = SigningSeed::from_pem(&text) else {
        // Refused when a token is minted with it, with the reason.
        return text;
    };
    if seed.standard {
        return text;
    }
    let standard = seed.private_pem();
    match crate::tls::write_pem(path, standard.as_bytes(), true) {
        Ok(()) => {
            tracing::info!(
                "rewrote {} in the standard PKCS#8 form that OpenSSL and JWT libraries read \
                 (the same key)",
                path.display()
            );
            standard
        }
        Err(e) => {
            tracing::warn!(
                "{} is in an old form that OpenSSL 3.0 and Python's cryptography cannot read, \
                 and cannot be rewritten ({e}); edge still reads it",
                path.display()
            );
            text
        }
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn generate(dir: &Path, signing: &Path, verify: &Path) -> Result<(), KeyError> {
    let key = SigningSeed::generate().map_err(KeyError::Crypto)?;
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, &e.to_string()))?;
    write_key(signing, key.private_pem().as_bytes(), true)?;
    write_key(verify, key.public_pem().as_bytes(), false)
}

fn write_key(path: &Path, contents: &[u8], secret: bool) -> Result<(), KeyError> {
    crate::tls::write_pem(path, contents, secret).map_err(|e| file_error(path, &e.to_string()))
}

/// `ed25519-` and 16 hex digits of the SHA-256 of the verifying key's PEM.
fn kid_of(verify_pem: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verify_pem.trim().as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("ed25519-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{unverified_id, SigningKey, Verifier};
    use std::time::Duration;

    #[test]
    fn the_key_pair_is_generated_once_private_and_verifies_what_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyPair::load_or_generate(dir.path()).unwrap();
        let again = KeyPair::load_or_generate(dir.path()).unwrap();
        assert_eq!(first.kid, again.kid, "the same key is reused");
        assert!(first.kid.starts_with("ed25519-"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SIGNING_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the signing key is private");
        }
        let config = AuthConfig::default();
        let token = first
            .issue(
                &config,
                "alice",
                "ports:write admin",
                Duration::from_secs(60),
                None,
            )
            .unwrap();
        let grant = Verifier::load(&config, dir.path())
            .unwrap()
            .verify(Some(&token))
            .unwrap();
        assert_eq!(grant.sub, "alice");
        assert!(grant.allows("ports:write") && grant.allows("jobs:read") && grant.is_admin());
        assert_eq!(grant.jti.len(), 32);
    }

    #[test]
    fn a_verify_key_alone_cannot_mint() {
        let dir = tempfile::tempdir().unwrap();
        KeyPair::load_or_generate(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        let keys = KeyPair::load_or_generate(dir.path()).unwrap();
        let err = keys
            .issue(
                &AuthConfig::default(),
                "a",
                "",
                Duration::from_secs(1),
                None,
            )
            .unwrap_err();
        assert!(err.to_string().contains(SIGNING_KEY_FILE), "{err}");
    }

    fn hs256(kid: &str, file: Option<&Path>, env: Option<&str>) -> KeyConfig {
        KeyConfig {
            kid: kid.into(),
            algorithm: KeyAlgorithm::HS256,
            public_key: None,
            private_key: None,
            secret_file: file.map(Path::to_owned),
            secret_env: env.map(str::to_owned),
        }
    }

    fn load_err(keys: Vec<KeyConfig>) -> String {
        let config = AuthConfig {
            keys,
            ..AuthConfig::default()
        };
        Verifier::load(&config, Path::new("/nonexistent"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn configured_keys_are_checked_and_secrets_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny-secret-1234\n").unwrap();
        let err = load_err(vec![hs256("ci", Some(&short), None)]);
        assert!(
            err.contains("16 bytes") && err.contains("at least 32"),
            "{err}"
        );
        assert!(
            !err.contains("tiny-secret"),
            "the secret is never shown: {err}"
        );

        let err = load_err(vec![hs256("ci", None, Some("EDGE_TEST_UNSET_SECRET_VAR"))]);
        assert!(err.contains("EDGE_TEST_UNSET_SECRET_VAR"), "{err}");
        let err = load_err(vec![hs256("ci", None, None)]);
        assert!(err.contains("exactly one"), "{err}");

        let good = dir.path().join("good");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef").unwrap();
        let err = load_err(vec![
            hs256("same", Some(&good), None),
            hs256("same", Some(&good), None),
        ]);
        assert!(err.contains("`same`") && err.contains("unique"), "{err}");

        let err = load_err(vec![KeyConfig {
            algorithm: KeyAlgorithm::EdDSA,
            ..hs256("ed", None, None)
        }]);
        assert!(err.contains("public_key"), "{err}");

        let config = AuthConfig {
            keys: vec![hs256("ci", Some(&good), None)],
            ..AuthConfig::default()
        };
        let verifier = Verifier::load(&config, Path::new("/nonexistent")).unwrap();
        assert_eq!(verifier.kids(), ["ci"]);
        let signer = SigningKey::load(&config, Path::new("/nonexistent"), None).unwrap();
        assert!(!format!("{signer:?} {verifier:?}").contains("0123456789abcdef"));
        let token = signer
            .issue(
                &config,
                "ci-bot",
                "stats:write",
                Duration::from_secs(60),
                None,
            )
            .unwrap();
        let grant = verifier.verify(Some(&token)).unwrap();
        assert_eq!(grant.sub, "ci-bot");
        assert_eq!(unverified_id(&token).map(|(jti, _)| jti), Some(grant.jti));
    }

    #[test]
    fn a_verify_only_key_cannot_mint_and_says_where_to() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate_at(&dir.path().join("k")).unwrap();
        let config = AuthConfig {
            keys: vec![KeyConfig {
                kid: "pub-only".into(),
                algorithm: KeyAlgorithm::EdDSA,
                public_key: Some(dir.path().join("k.pub.pem")),
                private_key: None,
                secret_file: None,
                secret_env: None,
            }],
            ..AuthConfig::default()
        };
        let err = SigningKey::load(&config, dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("can sign"), "{err}");
        let err = SigningKey::load(&config, dir.path(), Some("nope")).unwrap_err();
        assert!(err.to_string().contains("pub-only"), "{err}");
        assert!(
            KeyPair::generate_at(&dir.path().join("k")).is_err(),
            "never overwrites"
        );
        assert!(pair.kid.starts_with("ed25519-"));
    }

    /// Runs `openssl` (/usr/bin/openssl; `.ci/run` installs it) and returns its stdout.
    fn openssl(args: &[&std::ffi::OsStr]) -> String {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs (apt-get install openssl; .ci/run installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn openssl_reads_the_generated_keys_and_derives_the_same_public_key() {
        let dir = tempfile::tempdir().unwrap();
        KeyPair::load_or_generate(dir.path()).unwrap();
        KeyPair::generate_at(&dir.path().join("rotated")).unwrap();
        for (signing, verify) in [
            (SIGNING_KEY_FILE, VERIFY_KEY_FILE),
            ("rotated.pem", "rotated.pub.pem"),
        ] {
            let signing = dir.path().join(signing);
            let verify = dir.path().join(verify);
            openssl(&[
                "pkey".as_ref(),
                "-in".as_ref(),
                signing.as_os_str(),
                "-noout".as_ref(),
            ]);
            openssl(&[
                "pkey".as_ref(),
                "-pubin".as_ref(),
                "-in".as_ref(),
                verify.as_os_str(),
                "-noout".as_ref(),
            ]);
            let derived = openssl(&[
                "pkey".as_ref(),
                "-in".as_ref(),
                signing.as_os_str(),
                "-pubout".as_ref(),
            ]);
            assert_eq!(derived, std::fs::read_to_string(&verify).unwrap());
        }
    }

    #[test]
    fn a_key_pair_openssl_generated_signs_and_verifies_as_a_configured_key() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("ext.pem");
        let public = dir.path().join("ext.pub.pem");
        openssl(&[
            "genpkey".as_ref(),
            "-algorithm".as_ref(),
            "ed25519".as_ref(),
            "-out".as_ref(),
            private.as_os_str(),
        ]);
        openssl(&[
            "pkey".as_ref(),
            "-in".as_ref(),
            private.as_os_str(),
            "-pubout".as_ref(),
            "-out".as_ref(),
            public.as_os_str(),
        ]);
        let config = AuthConfig {
            keys: vec![KeyConfig {
                kid: "ext".into(),
                algorithm: KeyAlgorithm::EdDSA,
                public_key: Some(public),
                private_key: Some(private),
                secret_file: None,
                secret_env: None,
            }],
            ..AuthConfig::default()
        };
        let token = SigningKey::load(&config, dir.path(), None)
            .unwrap()
            .issue(&config, "ext", "", Duration::from_secs(60), None)
            .unwrap();
        let grant = Verifier::load(&config, dir.path())
            .unwrap()
            .verify(Some(&token))
            .unwrap();
        assert_eq!(grant.sub, "ext");
    }

    /// A signing key in edge's old form (ring's PKCS#8 v2) and its verifying key.
    fn old_form_pair() -> (String, String) {
        use ring::signature::KeyPair as _;
        let rng = ring::rand::SystemRandom::new();
        let v2 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
        (
            keyfile::pem("PRIVATE KEY", v2.as_ref()),
            keyfile::public_pem(&public),
        )
    }

    #[test]
    fn an_old_form_signing_key_is_rewritten_in_the_standard_form_with_the_same_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (signing, verify) = old_form_pair();
        let path = dir.path().join(SIGNING_KEY_FILE);
        std::fs::write(&path, &signing).unwrap();
        std::fs::write(dir.path().join(VERIFY_KEY_FILE), &verify).unwrap();
        let config = AuthConfig::default();
        let verifier = Verifier::load(&config, dir.path()).unwrap();
        let pair = KeyPair::load_or_generate(dir.path()).unwrap();
        assert_eq!(verifier.kids(), [pair.kid.as_str()], "the same key id");
        let rewritten = std::fs::read_to_string(&path).unwrap();
        assert_ne!(rewritten, signing);
        assert!(SigningSeed::from_pem(&rewritten).unwrap().standard);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "still private");
        }
        openssl(&[
            "pkey".as_ref(),
            "-in".as_ref(),
            path.as_os_str(),
            "-noout".as_ref(),
        ]);
        let token = pair
            .issue(&config, "old", "", Duration::from_secs(60), None)
            .unwrap();
        assert_eq!(verifier.verify(Some(&token)).unwrap().sub, "old");
    }

    #[test]
    fn a_signing_key_of_another_pair_is_refused_when_minting_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        KeyPair::load_or_generate(dir.path()).unwrap();
        let (other, _) = old_form_pair();
        std::fs::write(dir.path().join(SIGNING_KEY_FILE), other).unwrap();
        let config = AuthConfig::default();
        let err = SigningKey::load(&config, dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("not one pair"), "{err}");
        // The server needs only the verifying key: it still starts.
        assert!(Verifier::load(&config, dir.path()).is_ok());
        let err = SigningKey::load(&config, dir.path(), Some("nope")).unwrap_err();
        assert!(err.to_string().contains("no key `nope`"), "{err}");
    }

    #[test]
    fn an_old_form_configured_key_still_signs_and_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (signing, verify) = old_form_pair();
        let private = dir.path().join("old.pem");
        let public = dir.path().join("old.pub.pem");
        std::fs::write(&private, &signing).unwrap();
        std::fs::write(&public, &verify).unwrap();
        let key = |private: PathBuf| KeyConfig {
            kid: "old".into(),
            algorithm: KeyAlgorithm::EdDSA,
            public_key: Some(public.clone()),
            private_key: Some(private),
            secret_file: None,
            secret_env: None,
        };
        let config = AuthConfig {
            keys: vec![key(private.clone())],
            ..AuthConfig::default()
        };
        let token = SigningKey::load(&config, dir.path(), None)
            .unwrap()
            .issue(&config, "old", "", Duration::from_secs(60), None)
            .unwrap();
        assert!(Verifier::load(&config, dir.path())
            .unwrap()
            .verify(Some(&token))
            .is_ok());
        assert_eq!(std::fs::read_to_string(&private).unwrap(), signing);

        // Another key's private half is refused.
        let (other, _) = old_form_pair();
        let wrong = dir.path().join("wrong.pem");
        std::fs::write(&wrong, other).unwrap();
        let config = AuthConfig {
            keys: vec![key(wrong)],
            ..AuthConfig::default()
        };
        let err = Verifier::load(&config, dir.path()).unwrap_err();
        assert!(err.to_string().contains("not the private half"), "{err}");
    }
}
