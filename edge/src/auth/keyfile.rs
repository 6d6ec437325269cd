//! Ed25519 key files in the forms every tool reads: the signing key as PKCS#8 v1
//! (`PRIVATE KEY`, RFC 8410: the 32-byte seed alone, as `openssl genpkey -algorithm ed25519`
//! writes it) and the verifying key as SPKI (`PUBLIC KEY`). OpenSSL 3.0, Python's
//! `cryptography` (and so PyJWT), Go and Node all read both.
//!
//! edge before this wrote the signing key as PKCS#8 v2 with the public key appended (ring's
//! form), which OpenSSL 3.0 and `cryptography` refuse. Such files are still read; the
//! generated pair in the certs dir is rewritten in the standard form (see
//! [`super::KeyPair::load_or_generate`]).

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// The PEM label of a PKCS#8 private key.
const PRIVATE_LABEL: &str = "PRIVATE KEY";
/// The PEM label of an SPKI public key.
const PUBLIC_LABEL: &str = "PUBLIC KEY";

/// DER of `PrivateKeyInfo { version 0, AlgorithmIdentifier { id-Ed25519 }, OCTET STRING {
/// OCTET STRING (32 bytes) } }`, to which the seed is appended.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER of `SubjectPublicKeyInfo { AlgorithmIdentifier { id-Ed25519 }, BIT STRING (32 bytes) }`,
/// to which the public key is appended.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER of the OID id-Ed25519 (1.3.101.112).
const ED25519_OID: [u8; 3] = [0x2b, 0x65, 0x70];

/// An Ed25519 signing key read from a file.
pub(super) struct SigningSeed {
    seed: [u8; 32],
    /// The public key, derived from the seed (and, where the file carried one, equal to it).
    pub(super) public: [u8; 32],
    /// Whether the file was in the standard form (PKCS#8 v1, no public key, no attributes).
    pub(super) standard: bool,
}

impl std::fmt::Debug for SigningSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSeed")
            .field("standard", &self.standard)
            .finish_non_exhaustive()
    }
}

impl SigningSeed {
    /// A new random key.
    pub(super) fn generate() -> Result<SigningSeed, String> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| "no randomness".to_owned())?;
        SigningSeed::from_seed(seed, None, true)
    }

    fn from_seed(
        seed: [u8; 32],
        public: Option<&[u8]>,
        standard: bool,
    ) -> Result<SigningSeed, String> {
        let pair = match public {
            Some(public) => Ed25519KeyPair::from_seed_and_public_key(&seed, public)
                .map_err(|e| format!("its public key does not belong to its private key ({e})"))?,
            None => Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|e| format!("not an Ed25519 key ({e})"))?,
        };
        let mut derived = [0u8; 32];
        derived.copy_from_slice(pair.public_key().as_ref());
        Ok(SigningSeed {
            seed,
            public: derived,
            standard,
        })
    }

    /// Reads a `PRIVATE KEY` PEM: PKCS#8 v1, or v2 with the public key (edge's old form).
    pub(super) fn from_pem(text: &str) -> Result<SigningSeed, String> {
        let der = pem_body(text, PRIVATE_LABEL)?;
        let key = parse_pkcs8(&der)?;
        SigningSeed::from_seed(key.seed, key.public.as_deref(), key.standard)
    }

    /// PKCS#8 v1 DER (what jsonwebtoken signs with).
    pub(super) fn pkcs8_der(&self) -> Vec<u8> {
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&self.seed);
        der
    }

    /// The standard `PRIVATE KEY` PEM.
    pub(super) fn private_pem(&self) -> String {
        pem(PRIVATE_LABEL, &self.pkcs8_der())
    }

    /// The `PUBLIC KEY` PEM of its verifying key.
    pub(super) fn public_pem(&self) -> String {
        public_pem(&self.public)
    }
}

/// The `PUBLIC KEY` (SPKI) PEM of an Ed25519 public key.
pub(super) fn public_pem(public: &[u8; 32]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(public);
    pem(PUBLIC_LABEL, &der)
}

/// The public key of a `PUBLIC KEY` PEM, when it is an Ed25519 SPKI.
pub(super) fn public_of_pem(text: &str) -> Option<[u8; 32]> {
    let der = pem_body(text, PUBLIC_LABEL).ok()?;
    let key = der.strip_prefix(&SPKI_PREFIX[..])?;
    key.try_into().ok()
}

pub(super) fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first `label` block of a PEM text.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no `{begin}` block (expected a PKCS#8 PEM)"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("no `{end}` line"))?
        + start;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("the PEM body is not base64: {e}"))
}

/// One DER element: its tag and contents, and what follows it.
fn der_element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "not valid DER".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 2 || rest.len() < count {
            return Err(bad());
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// What an Ed25519 `OneAsymmetricKey` (RFC 5958) holds.
struct Pkcs8 {
    seed: [u8; 32],
    /// The public key (v2 only).
    public: Option<Vec<u8>>,
    /// Whether it is the standard v1 form, with nothing but the seed.
    standard: bool,
}

/// Reads an Ed25519 PKCS#8 key, v1 or v2.
fn parse_pkcs8(der: &[u8]) -> Result<Pkcs8, String> {
    let (tag, body, trailing) = der_element(der)?;
    if tag != 0x30 || !trailing.is_empty() {
        return Err("not a PKCS#8 key".into());
    }
    let (tag, version, rest) = der_element(body)?;
    let version = match (tag, version) {
        (0x02, [0]) => 1,
        (0x02, [1]) => 2,
        _ => return Err("not a PKCS#8 v1 or v2 key".into()),
    };
    let (tag, algorithm, rest) = der_element(rest)?;
    let (oid_tag, oid, _) = der_element(algorithm)?;
    if tag != 0x30 || oid_tag != 0x06 || oid != ED25519_OID {
        return Err("not an Ed25519 key (the token keys are Ed25519)".into());
    }
    let (tag, private, mut rest) = der_element(rest)?;
    let (inner_tag, seed, inner_rest) = der_element(private)?;
    if tag != 0x04 || inner_tag != 0x04 || !inner_rest.is_empty() {
        return Err("the private key is not an OCTET STRING".into());
    }
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| "the private key is not 32 bytes".to_owned())?;
    let mut standard = version == 1;
    let mut public = None;
    while !rest.is_empty() {
        let (tag, contents, next) = der_element(rest)?;
        match tag {
            // [0] attributes: allowed, ignored.
            0xa0 => standard = false,
            // [1] publicKey (v2 only): a BIT STRING, IMPLICIT, so its first byte counts the
            // unused bits.
            0x81 | 0xa1 if version == 2 => {
                let bits = if tag == 0xa1 {
                    let (bit_tag, bits, _) = der_element(contents)?;
                    if bit_tag != 0x03 {
                        return Err("the public key is not a BIT STRING".into());
                    }
                    bits
                } else {
                    contents
                };
                match bits.split_first() {
                    Some((0, key)) => public = Some(key.to_vec()),
                    _ => return Err("the public key is not a whole number of bytes".into()),
                }
                standard = false;
            }
            _ => return Err("unexpected data after the private key".into()),
        }
        rest = next;
    }
    Ok(Pkcs8 {
        seed,
        public,
        standard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_pkcs8_v1_and_read_back() {
        let key = SigningSeed::generate().unwrap();
        let pem = key.private_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let der = key.pkcs8_der();
        assert_eq!(der.len(), 48, "RFC 8410's form: prefix and seed");
        let again = SigningSeed::from_pem(&pem).unwrap();
        assert!(again.standard);
        assert_eq!(again.public, key.public);
        assert_eq!(public_of_pem(&key.public_pem()), Some(key.public));
    }

    #[test]
    fn the_old_v2_form_is_read_and_its_public_key_checked() {
        let rng = ring::rand::SystemRandom::new();
        let v2 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(v2.as_ref()).unwrap();
        let key = SigningSeed::from_pem(&pem(PRIVATE_LABEL, v2.as_ref())).unwrap();
        assert!(!key.standard);
        assert_eq!(&key.public[..], pair.public_key().as_ref());
        // The standard form of the same key signs as the old one did.
        let rewritten = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key.pkcs8_der()).unwrap();
        assert_eq!(rewritten.public_key().as_ref(), pair.public_key().as_ref());

        // A v2 file whose public key is another key's is refused.
        let mut spoiled = v2.as_ref().to_vec();
        let last = spoiled.len() - 1;
        spoiled[last] ^= 1;
        let err = SigningSeed::from_pem(&pem(PRIVATE_LABEL, &spoiled)).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
    }

    #[test]
    fn other_keys_are_refused_with_a_reason() {
        let err = SigningSeed::from_pem("hello").unwrap_err();
        assert!(err.contains("BEGIN PRIVATE KEY"), "{err}");
        // An EC P-256 key (PKCS#8, another algorithm).
        let rng = ring::rand::SystemRandom::new();
        let ec = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let err = SigningSeed::from_pem(&pem(PRIVATE_LABEL, ec.as_ref())).unwrap_err();
        assert!(err.contains("Ed25519"), "{err}");
    }
}
