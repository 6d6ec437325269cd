//! QUIC's stateless-reset key, kept in the data dir (`quic-reset.key`, 32 random bytes, mode
//! 0600) so that it survives restarts. A server that restarted knows none of its old
//! connections; a client of one still sends packets to it, and the server answers each with a
//! stateless reset, whose token is derived from this key and the connection's id. With the
//! same key as before, the token matches the one the client was given, so the client learns
//! at once that its connection is gone (and reconnects) instead of waiting for its idle
//! timeout. With a new key at every start (quinn's default) the reset would not be believed
//! (and the new server would not even recognise the old connection ids as its own to reset).

use ring::rand::SecureRandom;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The key's file in the data dir.
pub const RESET_KEY_FILE: &str = "quic-reset.key";

/// The key's length in bytes.
const KEY_BYTES: usize = 32;

/// Why the key could not be read or made.
#[derive(Debug, thiserror::Error)]
#[error("the QUIC stateless-reset key {path}: {message} (delete the file to make a new one)")]
pub struct ResetKeyError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The endpoint config with the data dir's reset key (made on first use), and connection
/// ids signed with a key derived from it: a server only resets packets whose connection id it
/// recognises as one of its own, so the signing key must survive the restart too.
pub fn endpoint_config(data_dir: &Path) -> Result<quinn::EndpointConfig, ResetKeyError> {
    let secret = load_or_make(&data_dir.join(RESET_KEY_FILE))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let cid_key = ring::hmac::sign(&key, b"edge connection ids");
    let mut cid_key_bytes = [0u8; 8];
    cid_key_bytes.copy_from_slice(&cid_key.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key_bytes);
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(config)
}

/// The key's bytes: read from `path`, or made and written there (0600) when it is missing.
fn load_or_make(path: &Path) -> Result<[u8; KEY_BYTES], ResetKeyError> {
    let failed = |message: String| ResetKeyError {
        path: path.to_owned(),
        message,
    };
    match std::fs::read(path) {
        Ok(bytes) => bytes
            .try_into()
            .map_err(|b: Vec<u8>| failed(format!("holds {} bytes, not {KEY_BYTES}", b.len()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; KEY_BYTES];
            ring::rand::SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| failed("no randomness to make it".into()))?;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| failed(e.to_string()))?;
            file.write_all(&secret)
                .and_then(|()| file.sync_all())
                .map_err(|e| failed(e.to_string()))?;
            Ok(secret)
        }
        Err(e) => Err(failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESET_KEY_FILE);
        let first = load_or_make(&path).unwrap();
        assert_eq!(
            load_or_make(&path).unwrap(),
            first,
            "the same key after a restart"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        let refused = load_or_make(&path).unwrap_err().to_string();
        assert!(refused.contains("holds 5 bytes"), "{refused}");
    }
}
