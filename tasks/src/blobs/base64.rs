//! Base64 bodies decoded as they arrive (`encoding=base64`, or a media type ending in
//! `;base64`): browsers and some apps send pictures that way. Whitespace and line breaks are
//! skipped, the URL-safe alphabet is read too, padding is optional, and a body that is a whole
//! `data:` URL (`data:image/png;base64,....`) gives its media type. Memory: one block.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// Base64 characters decoded at once.
const BLOCK: usize = 64 * 1024;

/// The longest `data:` URL header (`data:<type>;base64,`) read.
const MAX_DATA_HEADER: usize = 256;

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a body is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the body is not valid base64: {0}")]
pub struct NotBase64(String);

/// An incremental base64 decoder.
#[derive(Debug)]
pub struct Base64Decoder {
    /// Base64 characters (whitespace skipped, URL-safe ones mapped) not yet decoded.
    text: Vec<u8>,
    /// Decoded bytes of the last block.
    out: Vec<u8>,
    /// Characters decoded before `text` (for messages).
    decoded_chars: u64,
    /// Where the start of the body stands: deciding whether it is a `data:` URL.
    start: Start,
    /// The media type a `data:` URL named.
    data_type: Option<String>,
}

#[derive(Debug)]
enum Start {
    /// The first non-blank characters, until they can tell `data:` from base64.
    Deciding(Vec<u8>),
    /// Inside a `data:` URL's header, up to its comma.
    DataHeader(Vec<u8>),
    /// Base64 from here on.
    Body,
}

impl Default for Base64Decoder {
    fn default() -> Self {
        Base64Decoder::new()
    }
}

impl Base64Decoder {
    /// A decoder at the start of a body.
    pub fn new() -> Base64Decoder {
        Base64Decoder {
            text: Vec::with_capacity(BLOCK + 4),
            out: Vec::new(),
            decoded_chars: 0,
            start: Start::Deciding(Vec::new()),
            data_type: None,
        }
    }

    /// The media type of a `data:` URL body (`data:image/png;base64,...`), once read.
    pub fn data_type(&self) -> Option<&str> {
        self.data_type.as_deref()
    }

    /// Decodes the next bytes of the body, handing decoded bytes to `sink`.
    pub fn feed<E: From<NotBase64>>(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = input;
        while !rest.is_empty() {
            rest = match &mut self.start {
                Start::Body => {
                    self.push_text(rest, sink)?;
                    &[]
                }
                Start::Deciding(seen) => {
                    let (byte, after) = (rest[0], &rest[1..]);
                    if !byte.is_ascii_whitespace() {
                        seen.push(byte);
                    }
                    if seen.len() == 5 || !b"data:".starts_with(seen) {
                        let seen = std::mem::take(seen);
                        if seen == b"data:" {
                            self.start = Start::DataHeader(Vec::new());
                        } else {
                            self.start = Start::Body;
                            self.push_text(&seen, sink)?;
                        }
                    }
                    after
                }
                Start::DataHeader(header) => match rest.iter().position(|&b| b == b',') {
                    Some(comma) => {
                        header.extend_from_slice(&rest[..comma]);
                        let header = std::mem::take(header);
                        self.data_type = Some(data_header(&header)?);
                        self.start = Start::Body;
                        &rest[comma + 1..]
                    }
                    None if header.len() + rest.len() > MAX_DATA_HEADER => {
                        return Err(NotBase64(format!(
                            "a data: URL's header has no comma in its first {MAX_DATA_HEADER} bytes"
                        ))
                        .into())
                    }
                    None => {
                        header.extend_from_slice(rest);
                        &[]
                    }
                },
            };
        }
        Ok(())
    }

    /// Ends the body: decodes what is left (a last group of 2 or 3 characters without
    /// padding is fine; a lone character is not).
    pub fn finish<E: From<NotBase64>>(
        &mut self,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        match std::mem::replace(&mut self.start, Start::Body) {
            Start::Deciding(seen) => self.push_text(&seen, sink)?,
            Start::DataHeader(_) => {
                return Err(NotBase64("the body ended inside a data: URL's header".into()).into())
            }
            Start::Body => {}
        }
        let text = std::mem::take(&mut self.text);
        self.decode(&text, sink)
    }

    /// Takes base64 characters (skipping whitespace), decoding every full block.
    fn push_text<E: From<NotBase64>>(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for &byte in input {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0C' => continue,
                b'-' => self.text.push(b'+'),
                b'_' => self.text.push(b'/'),
                other => self.text.push(other),
            }
            if self.text.len() == BLOCK {
                let text = std::mem::replace(&mut self.text, Vec::with_capacity(BLOCK + 4));
                self.decode(&text, sink)?;
            }
        }
        Ok(())
    }

    /// Decodes `text` (a multiple of 4 characters, or the body's last ones).
    fn decode<E: From<NotBase64>>(
        &mut self,
        text: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if text.is_empty() {
            return Ok(());
        }
        self.out.resize(text.len().div_ceil(4) * 3, 0);
        let decoded = ENGINE.decode_slice(text, &mut self.out).map_err(|e| {
            let at = |index: usize| self.decoded_chars + index as u64 + 1;
            NotBase64(match e {
                base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidByte(i, b)) => {
                    format!("base64 character {} is `{}`", at(i), b.escape_ascii())
                }
                base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidLength(_)) => {
                    "it ends with a lone character (its length is not a whole number of bytes)"
                        .into()
                }
                base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidLastSymbol(
                    i,
                    b,
                )) => format!(
                    "base64 character {} (`{}`) ends it badly",
                    at(i),
                    b.escape_ascii()
                ),
                other => other.to_string(),
            })
        })?;
        self.decoded_chars += text.len() as u64;
        sink(&self.out[..decoded])
    }
}

/// The media type of a `data:` URL header (what comes between `data:` and the comma).
fn data_header(header: &[u8]) -> Result<String, NotBase64> {
    let header = std::str::from_utf8(header)
        .map_err(|_| NotBase64("a data: URL's header is not text".into()))?;
    let Some(kind) = header.trim().strip_suffix(";base64") else {
        return Err(NotBase64(format!(
            "the data: URL `data:{header},` is not base64 (it must end in `;base64,`)"
        )));
    };
    Ok(if kind.is_empty() {
        "text/plain; charset=us-ascii".into()
    } else {
        kind.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    fn decode_in(chunks: &[&[u8]]) -> Result<(Vec<u8>, Option<String>), NotBase64> {
        let mut decoder = Base64Decoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut |bytes: &[u8]| {
                out.extend_from_slice(bytes);
                Ok::<_, NotBase64>(())
            })?;
        }
        decoder.finish(&mut |bytes: &[u8]| {
            out.extend_from_slice(bytes);
            Ok::<_, NotBase64>(())
        })?;
        Ok((out, decoder.data_type().map(str::to_owned)))
    }

    #[test]
    fn padding_whitespace_and_both_alphabets() {
        assert_eq!(decode_in(&[b"aGVsbG8="]).unwrap().0, b"hello");
        assert_eq!(decode_in(&[b"aGVs", b"bG8"]).unwrap().0, b"hello");
        assert_eq!(decode_in(&[b"aGVs\r\nbG8=\n"]).unwrap().0, b"hello");
        assert_eq!(decode_in(&[b"-_-_"]).unwrap().0, [0xFB, 0xFF, 0xBF]);
        assert_eq!(decode_in(&[b""]).unwrap().0, b"");
    }

    #[test]
    fn a_data_url_names_its_type() {
        let (bytes, kind) = decode_in(&[b"data:image/p", b"ng;base64,aGVsbG8="]).unwrap();
        assert_eq!(bytes, b"hello");
        assert_eq!(kind.as_deref(), Some("image/png"));
        assert!(decode_in(&[b"data:text/plain,hello"]).is_err());
        assert!(decode_in(&[b"data:image/png;base64"]).is_err());
    }

    #[test]
    fn bad_bodies_say_where() {
        let err = decode_in(&[b"aGVs!G8="]).unwrap_err();
        assert!(err.0.contains("character 5 is `!`"), "{err}");
        let err = decode_in(&[b"aGVsb"]).unwrap_err();
        assert!(err.0.contains("lone character"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_split_of_any_body_decodes_to_it(
            body in proptest::collection::vec(any::<u8>(), 0..300_000),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let text = STANDARD.encode(&body);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for cut in cuts {
                chunks.push(&text.as_bytes()[last..cut]);
                last = cut;
            }
            chunks.push(&text.as_bytes()[last..]);
            prop_assert_eq!(decode_in(&chunks).unwrap().0, body);
        }
    }
}
