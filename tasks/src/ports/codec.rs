//! The compact binary form of a stored [`Port`]: less than half the size of its JSON.
//!
//! Each value of the `ports` table was the port's canonical JSON; this form replaces it.
//! [`decode`] reads both, told apart by the first byte (a JSON value always starts with `{`,
//! 0x7B; a binary one with its format tag, 0x01), and [`migrate_json_values`] rewrites the JSON
//! values of a store in bounded batches.
//!
//! # Format (tag 0x01)
//!
//! Byte by byte, in this order:
//!
//! | size    | content                                                                       |
//! |---------|-------------------------------------------------------------------------------|
//! | 1       | format tag `0x01`                                                             |
//! | 1       | presence bits: bit 0 `city`, bit 1 `country`, bit 2 `coordinates`, bit 3 `province`, bit 4 `timezone`, bit 5 `code` (bit 0 = least significant); bits 6 and 7 are 0 |
//! | str     | `name`                                                                        |
//! | str     | `city`, if bit 0                                                              |
//! | str     | `country`, if bit 1                                                           |
//! | 8 + 8   | `coordinates`, if bit 2: longitude, then latitude, each an IEEE 754 binary64 in 8 bytes little-endian (bit-exact: `-0.0` stays `-0.0`) |
//! | str     | `province`, if bit 3                                                          |
//! | str     | `timezone`, if bit 4                                                          |
//! | str     | `code`, if bit 5                                                              |
//! | list    | `alias`                                                                       |
//! | list    | `regions`                                                                     |
//! | list    | `unlocs`                                                                      |
//!
//! Nothing follows the last list.
//! - *varint*: an unsigned LEB128 integer: 7 bits per byte, least significant group first, the
//!   high bit (0x80) set on every byte but the last. At most 10 bytes, value below 2^64, and in
//!   its shortest form (a last byte of 0x00 only when it is the only byte).
//! - *str*: a varint byte length, then that many bytes of UTF-8.
//! - *list*: a varint item count, then each item as a *str*.
//!
//! An absent optional field and an empty one differ: `Some("")` sets its bit and is written as
//! the one byte `0x00`. Example: the port `{"name":"A"}` is the 7 bytes
//! `01 00 01 41 00 00 00` (tag, no optional fields, name "A", three empty lists).
//!
//! [`decode`] refuses everything [`encode`] never writes (unknown tag or presence bits, a length
//! or count beyond the input, bad UTF-8, a varint too long, overflowing or not in its shortest
//! form, trailing bytes), so each port has exactly one binary value: equal ports, equal bytes.
//! A change to [`Port`]'s fields needs a new tag, with [`decode`] still reading the old ones.

use super::stored::UNTYPED;
use super::Port;
use crate::store::StoreError;
use redb::ReadableTable;
use std::ops::{Bound, Range};

/// The first byte of a value in the binary form.
const TAG: u8 = 0x01;

/// The first byte of a legacy JSON value.
const JSON_START: u8 = b'{';

/// Presence bit of `city`.
const CITY: u8 = 1 << 0;
/// Presence bit of `country`.
const COUNTRY: u8 = 1 << 1;
/// Presence bit of `coordinates`.
const COORDINATES: u8 = 1 << 2;
/// Presence bit of `province`.
const PROVINCE: u8 = 1 << 3;
/// Presence bit of `timezone`.
const TIMEZONE: u8 = 1 << 4;
/// Presence bit of `code`.
const CODE: u8 = 1 << 5;
/// Every presence bit this format defines.
const KNOWN_BITS: u8 = CITY | COUNTRY | COORDINATES | PROVINCE | TIMEZONE | CODE;

/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// Why a stored value could not be decoded; each names the field and the byte offset at which
/// it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CodecError {
    /// The value has no bytes at all.
    #[error("empty value: no format tag at byte 0")]
    Empty,
    /// The first byte is neither the binary tag nor `{`.
    #[error("unknown format tag {tag:#04x} at byte 0")]
    UnknownTag {
        /// The byte found.
        tag: u8,
    },
    /// The presence byte has bits this format does not define.
    #[error("unknown presence bits {bits:#010b} at byte 1")]
    UnknownPresence {
        /// The undefined bits that were set.
        bits: u8,
    },
    /// The input ends inside a field, or a length or count goes beyond the input.
    #[error("truncated `{field}` at byte {offset}")]
    Truncated {
        /// The field.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
    },
    /// A varint is longer than 10 bytes or its value does not fit in 64 bits.
    #[error(
        "the varint of `{field}` at byte {offset} is longer than 10 bytes or overflows 64 bits"
    )]
    VarintOverflow {
        /// The field.
        field: &'static str,
        /// Where the varint starts.
        offset: usize,
    },
    /// A varint has needless trailing zero groups.
    #[error("the varint of `{field}` at byte {offset} is not in its shortest form")]
    VarintNotMinimal {
        /// The field.
        field: &'static str,
        /// Where the varint starts.
        offset: usize,
    },
    /// A string's bytes are not UTF-8.
    #[error("invalid UTF-8 in `{field}` at byte {offset}")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
        /// The first byte that is not UTF-8.
        offset: usize,
    },
    /// Bytes follow the last field.
    #[error("{count} trailing bytes at byte {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// A legacy JSON value is not a port.
    #[error("legacy JSON value does not parse: {source}")]
    Json {
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A port's fields, borrowed: what [`encode_fields`] writes. A [`Port`] and a port parsed
/// without copying its strings (`S` = `Cow<str>`) both lend theirs.
pub(crate) struct Fields<'a, S: AsRef<str>> {
    pub(crate) name: &'a str,
    pub(crate) city: Option<&'a str>,
    pub(crate) country: Option<&'a str>,
    pub(crate) alias: &'a [S],
    pub(crate) regions: &'a [S],
    pub(crate) coordinates: Option<[f64; 2]>,
    pub(crate) province: Option<&'a str>,
    pub(crate) timezone: Option<&'a str>,
    pub(crate) unlocs: &'a [S],
    pub(crate) code: Option<&'a str>,
}

/// Appends the binary form of `port` to `out` (so one buffer can hold many values).
pub(crate) fn encode(port: &Port, out: &mut Vec<u8>) {
    encode_fields(&port.fields(), out);
}

/// Appends the binary form of a port's fields to `out`.
pub(crate) fn encode_fields<S: AsRef<str>>(port: &Fields<'_, S>, out: &mut Vec<u8>) {
    out.push(TAG);
    out.push(presence(port));
    put_str(out, port.name);
    put_optional(out, port.city);
    put_optional(out, port.country);
    if let Some([lon, lat]) = port.coordinates {
        out.extend_from_slice(&lon.to_le_bytes());
        out.extend_from_slice(&lat.to_le_bytes());
    }
    put_optional(out, port.province);
    put_optional(out, port.timezone);
    put_optional(out, port.code);
    put_list(out, port.alias);
    put_list(out, port.regions);
    put_list(out, port.unlocs);
}

/// The presence byte: one bit per optional field that is `Some`.
fn presence<S: AsRef<str>>(port: &Fields<'_, S>) -> u8 {
    [
        (port.city.is_some(), CITY),
        (port.country.is_some(), COUNTRY),
        (port.coordinates.is_some(), COORDINATES),
        (port.province.is_some(), PROVINCE),
        (port.timezone.is_some(), TIMEZONE),
        (port.code.is_some(), CODE),
    ]
    .into_iter()
    .filter(|(present, _)| *present)
    .fold(0, |bits, (_, bit)| bits | bit)
}

/// Appends `n` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends a string: its byte length, then its bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends an optional string if present (its presence bit says whether it is there).
fn put_optional(out: &mut Vec<u8>, s: Option<&str>) {
    if let Some(s) = s {
        put_str(out, s);
    }
}

/// Appends a list of strings: the count, then each string.
fn put_list<S: AsRef<str>>(out: &mut Vec<u8>, items: &[S]) {
    put_varint(out, items.len() as u64);
    for item in items {
        put_str(out, item.as_ref());
    }
}

/// Whether a stored value is in the legacy JSON form (its first byte is `{`).
pub(crate) fn is_legacy_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&JSON_START)
}

/// Decodes a stored value, binary (tag 0x01) or legacy JSON. Never panics: any other input is
/// an error naming what is wrong and where.
pub(crate) fn decode(bytes: &[u8]) -> Result<Port, CodecError> {
    match bytes.first() {
        Some(&TAG) => decode_binary(bytes),
        Some(&JSON_START) => {
            serde_json::from_slice(bytes).map_err(|source| CodecError::Json { source })
        }
        Some(&tag) => Err(CodecError::UnknownTag { tag }),
        None => Err(CodecError::Empty),
    }
}

/// Decodes the binary form, tag included.
fn decode_binary(bytes: &[u8]) -> Result<Port, CodecError> {
    let mut input = Reader { bytes, at: 1 };
    let bits = input.byte("presence")?;
    if bits & !KNOWN_BITS != 0 {
        return Err(CodecError::UnknownPresence {
            bits: bits & !KNOWN_BITS,
        });
    }
    let port = Port {
        name: input.string("name")?,
        city: input.optional(bits & CITY, "city")?,
        country: input.optional(bits & COUNTRY, "country")?,
        coordinates: input.coordinates(bits & COORDINATES)?,
        province: input.optional(bits & PROVINCE, "province")?,
        timezone: input.optional(bits & TIMEZONE, "timezone")?,
        code: input.optional(bits & CODE, "code")?,
        alias: input.list("alias")?,
        regions: input.list("regions")?,
        unlocs: input.list("unlocs")?,
    };
    input.finish()?;
    Ok(port)
}

/// A cursor over a binary value; every read checks the bytes left.
struct Reader<'a> {
    /// The whole value.
    bytes: &'a [u8],
    /// The offset of the next byte to read.
    at: usize,
}

impl<'a> Reader<'a> {
    /// How many bytes are left to read.
    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    /// The next `len` bytes, part of `field`, which starts at `start`.
    fn take(
        &mut self,
        len: usize,
        field: &'static str,
        start: usize,
    ) -> Result<&'a [u8], CodecError> {
        let end = self.at.saturating_add(len);
        let taken = self.bytes.get(self.at..end).ok_or(CodecError::Truncated {
            field,
            offset: start,
        })?;
        self.at = end;
        Ok(taken)
    }

    /// The next byte.
    fn byte(&mut self, field: &'static str) -> Result<u8, CodecError> {
        let [byte] = self.array(field)?;
        Ok(byte)
    }

    /// The next `N` bytes, as an array.
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CodecError> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let array = *rest.first_chunk::<N>().ok_or(CodecError::Truncated {
            field,
            offset: self.at,
        })?;
        self.at += N;
        Ok(array)
    }

    /// An unsigned LEB128 varint: at most 10 bytes, fitting in 64 bits, in its shortest form.
    fn varint(&mut self, field: &'static str) -> Result<u64, CodecError> {
        let start = self.at;
        let mut n = 0u64;
        for i in 0..MAX_VARINT_BYTES {
            let byte = self.byte(field).map_err(|_| CodecError::Truncated {
                field,
                offset: start,
            })?;
            // The 10th byte holds bit 63 only; more means overflow or an 11th byte.
            if i == MAX_VARINT_BYTES - 1 && byte > 1 {
                return Err(CodecError::VarintOverflow {
                    field,
                    offset: start,
                });
            }
            n |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(CodecError::VarintNotMinimal {
                        field,
                        offset: start,
                    });
                }
                return Ok(n);
            }
        }
        Err(CodecError::VarintOverflow {
            field,
            offset: start,
        })
    }

    /// A length or count that cannot exceed the bytes left (each item takes at least one).
    fn size(&mut self, field: &'static str) -> Result<usize, CodecError> {
        let start = self.at;
        let n = self.varint(field)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.left() => Ok(n),
            _ => Err(CodecError::Truncated {
                field,
                offset: start,
            }),
        }
    }

    /// A string: its byte length, then UTF-8.
    fn string(&mut self, field: &'static str) -> Result<String, CodecError> {
        let start = self.at;
        let len = self.size(field)?;
        let body_start = self.at;
        let bytes = self.take(len, field, start)?;
        let text = std::str::from_utf8(bytes).map_err(|e| CodecError::InvalidUtf8 {
            field,
            offset: body_start + e.valid_up_to(),
        })?;
        Ok(text.to_owned())
    }

    /// A string if its presence bit is set.
    fn optional(&mut self, bit: u8, field: &'static str) -> Result<Option<String>, CodecError> {
        (bit != 0).then(|| self.string(field)).transpose()
    }

    /// Longitude and latitude, if their presence bit is set.
    fn coordinates(&mut self, bit: u8) -> Result<Option<[f64; 2]>, CodecError> {
        if bit == 0 {
            return Ok(None);
        }
        let lon = f64::from_le_bytes(self.array("coordinates")?);
        let lat = f64::from_le_bytes(self.array("coordinates")?);
        Ok(Some([lon, lat]))
    }

    /// A list of strings: the count, then each string.
    fn list(&mut self, field: &'static str) -> Result<Vec<String>, CodecError> {
        let count = self.size(field)?;
        (0..count).map(|_| self.string(field)).collect()
    }

    /// Checks that nothing follows the last field.
    fn finish(&self) -> Result<(), CodecError> {
        match self.left() {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes {
                offset: self.at,
                count,
            }),
        }
    }
}

/// Rewrites every legacy JSON value of the `ports` table in the binary form, at most `batch`
/// values per write transaction (at least one), so memory stays bounded on a huge store. Each
/// batch resumes after the last key converted; values not in JSON are left alone, so a run cut
/// short, or a second run, is harmless. Calls `progress` with the count so far after each
/// committed batch and returns how many values were converted.
pub(crate) fn migrate_json_values(
    db: &redb::Database,
    batch: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StoreError> {
    let batch = batch.max(1);
    let mut pending = Pending::default();
    let mut after: Option<String> = None;
    let mut converted = 0u64;
    loop {
        let full = migrate_batch(db, after.as_deref(), batch, &mut pending)?;
        if pending.is_empty() {
            return Ok(converted);
        }
        converted += pending.len() as u64;
        progress(converted);
        if !full {
            return Ok(converted);
        }
        after = pending.last_key().map(str::to_owned);
    }
}

/// One batch of the migration, in one write transaction: collects up to `batch` legacy values
/// after the key `after` into `pending`, writes them and commits. Returns whether the batch was
/// full (so more may follow).
fn migrate_batch(
    db: &redb::Database,
    after: Option<&str>,
    batch: usize,
    pending: &mut Pending,
) -> Result<bool, StoreError> {
    let txn = crate::store::begin_write(db)?;
    let full = {
        let mut table = txn
            .open_table(UNTYPED)
            .map_err(StoreError::redb("open ports table"))?;
        let full = collect_legacy(&table, after, batch, pending)?;
        for (key, value) in pending.iter() {
            table
                .insert(key, value)
                .map_err(StoreError::redb("write port"))?;
        }
        full
    };
    if pending.is_empty() {
        txn.abort().map_err(StoreError::redb("abort"))?;
        return Ok(false);
    }
    txn.commit().map_err(StoreError::redb("commit"))?;
    Ok(full)
}

/// Reads the table from after `after`, converting legacy values into `pending` until it holds
/// `batch` of them. Returns whether it stopped because the batch was full.
fn collect_legacy(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    after: Option<&str>,
    batch: usize,
    pending: &mut Pending,
) -> Result<bool, StoreError> {
    pending.clear();
    let failed = |e: redb::StorageError| StoreError::redb("read ports for migration")(e);
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    for entry in table
        .range::<&str>((start, Bound::Unbounded))
        .map_err(failed)?
    {
        let (key, value) = entry.map_err(failed)?;
        let (key, value) = (key.value(), value.value());
        if !is_legacy_json(value) {
            continue;
        }
        let port = decode(value).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        pending.push(key, &port);
        if pending.len() == batch {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Converted values awaiting their write: keys, and the values encoded one after another in a
/// single buffer.
#[derive(Default)]
struct Pending {
    /// Each key, with the range of its value in `arena`.
    entries: Vec<(String, Range<usize>)>,
    /// The encoded values.
    arena: Vec<u8>,
}

impl Pending {
    /// Empties the batch, keeping its memory for the next one.
    fn clear(&mut self) {
        self.entries.clear();
        self.arena.clear();
    }

    /// Adds the binary form of `port` under `key`.
    fn push(&mut self, key: &str, port: &Port) {
        let start = self.arena.len();
        encode(port, &mut self.arena);
        self.entries.push((key.to_owned(), start..self.arena.len()));
    }

    /// How many values the batch holds.
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch holds no value.
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The batch's last key (its greatest: keys are read in order).
    fn last_key(&self) -> Option<&str> {
        self.entries.last().map(|(key, _)| key.as_str())
    }

    /// Each key with its encoded value.
    fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries
            .iter()
            .map(|(key, range)| (key.as_str(), &self.arena[range.clone()]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binary(port: &Port) -> Vec<u8> {
        let mut out = Vec::new();
        encode(port, &mut out);
        out
    }

    fn minimal(name: &str) -> Port {
        Port {
            name: name.into(),
            city: None,
            country: None,
            alias: vec![],
            regions: vec![],
            coordinates: None,
            province: None,
            timezone: None,
            unlocs: vec![],
            code: None,
        }
    }

    fn ajman() -> Port {
        Port {
            name: "Ajman".into(),
            city: Some("Ajman".into()),
            country: Some("United Arab Emirates".into()),
            alias: vec![],
            regions: vec![],
            coordinates: Some([55.5136433, 25.4052165]),
            province: Some("Ajman".into()),
            timezone: Some("Asia/Dubai".into()),
            unlocs: vec!["AEAJM".into()],
            code: Some("52000".into()),
        }
    }

    fn full() -> Port {
        Port {
            alias: vec!["Ujman".into(), "عجمان".into()],
            regions: vec!["Gulf".into(), "Middle East".into()],
            unlocs: vec!["AEAJM".into(), "AEXXX".into()],
            ..ajman()
        }
    }

    /// The sample's ports, in file order.
    fn sample_ports() -> Vec<Port> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/ports.json");
        let text = std::fs::read_to_string(path).unwrap();
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        map.into_values()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect()
    }

    /// Asserts that `port` survives the binary round trip, coordinates bit for bit.
    fn round_trips(port: &Port) {
        let bytes = binary(port);
        let back = decode(&bytes).unwrap();
        assert_eq!(back, *port);
        assert_eq!(
            back.coordinates.map(|c| c.map(f64::to_bits)),
            port.coordinates.map(|c| c.map(f64::to_bits))
        );
        assert_eq!(binary(&back), bytes, "canonical");
    }

    #[test]
    fn full_minimal_and_unicode_ports_round_trip() {
        round_trips(&full());
        round_trips(&ajman());
        round_trips(&minimal("A"));
        round_trips(&Port {
            name: "Côte d'Ivoire 🚢".into(),
            city: Some("Абиджан".into()),
            province: Some("東京\u{0}\u{7f}".into()),
            alias: vec!["ü".into(), "\u{10ffff}".into()],
            ..minimal("x")
        });
    }

    #[test]
    fn a_minimal_port_is_seven_bytes() {
        assert_eq!(binary(&minimal("A")), [0x01, 0x00, 0x01, b'A', 0, 0, 0]);
    }

    #[test]
    fn empty_and_absent_fields_differ() {
        let empty = Port {
            city: Some(String::new()),
            country: Some(String::new()),
            province: Some(String::new()),
            timezone: Some(String::new()),
            code: Some(String::new()),
            alias: vec![String::new()],
            ..minimal("")
        };
        round_trips(&empty);
        round_trips(&minimal(""));
        assert_ne!(binary(&empty), binary(&minimal("")));
    }

    #[test]
    fn long_lists_and_strings_round_trip() {
        let port = Port {
            name: "n".repeat(300),
            alias: (0..1000).map(|i| format!("alias {i}")).collect(),
            regions: (0..200).map(|i| "r".repeat(i)).collect(),
            unlocs: vec!["X".repeat(20_000)],
            ..minimal("")
        };
        round_trips(&port);
    }

    #[test]
    fn extreme_coordinates_are_bit_exact() {
        let values = [
            -180.0,
            180.0,
            90.0,
            -90.0,
            -0.0,
            0.0,
            1e-300,
            0.1 + 0.2,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::MAX,
            f64::MIN,
        ];
        for lon in values {
            for lat in values {
                round_trips(&Port {
                    coordinates: Some([lon, lat]),
                    ..minimal("p")
                });
            }
        }
        let back = decode(&binary(&Port {
            coordinates: Some([-0.0, 0.0]),
            ..minimal("p")
        }))
        .unwrap();
        let [lon, lat] = back.coordinates.unwrap();
        assert!(lon.is_sign_negative() && lat.is_sign_positive());
    }

    #[test]
    fn every_sample_port_round_trips_in_about_half_the_bytes() {
        let ports = sample_ports();
        let (mut json, mut bin) = (0, 0);
        for port in &ports {
            round_trips(port);
            json += serde_json::to_vec(port).unwrap().len();
            bin += binary(port).len();
        }
        assert!(bin * 100 < json * 60, "{bin} vs {json} bytes");
        eprintln!(
            "{} sample ports: {bin} bytes binary, {json} bytes JSON",
            ports.len()
        );
        let first = &ports[0];
        let (json, bin) = (
            serde_json::to_vec(first).unwrap().len(),
            binary(first).len(),
        );
        eprintln!("first sample port: {bin} bytes binary, {json} bytes JSON");
        assert!(bin * 100 < json * 60, "{bin} vs {json} bytes");
    }

    #[test]
    fn legacy_json_decodes() {
        let json = serde_json::to_vec(&full()).unwrap();
        assert!(is_legacy_json(&json));
        assert!(!is_legacy_json(&binary(&full())));
        assert!(!is_legacy_json(b""));
        assert_eq!(decode(&json).unwrap(), full());
        assert_eq!(decode(br#"{"name":"A"}"#).unwrap(), minimal("A"));
        let err = decode(br#"{"name":"A","colour":"red"}"#).unwrap_err();
        assert!(matches!(err, CodecError::Json { .. }), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = binary(&full());
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(err, CodecError::Truncated { .. } | CodecError::Empty),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn malformed_values_are_named_with_their_offset() {
        let good = binary(&minimal("A"));
        let err = |bytes: &[u8]| decode(bytes).unwrap_err().to_string();

        assert_eq!(err(&[]), "empty value: no format tag at byte 0");
        assert_eq!(
            err(&[0x02, 0, 1, b'A', 0, 0, 0]),
            "unknown format tag 0x02 at byte 0"
        );
        assert_eq!(
            err(&[0x01, 0x40, 1, b'A', 0, 0, 0]),
            "unknown presence bits 0b01000000 at byte 1"
        );
        assert_eq!(
            err(&[good.as_slice(), &[0]].concat()),
            "1 trailing bytes at byte 7"
        );
        assert_eq!(
            err(&[0x01, 0, 2, b'A', 0xff, 0, 0, 0]),
            "invalid UTF-8 in `name` at byte 4"
        );
        assert_eq!(
            err(&[0x01, 0, 5, b'A', 0, 0, 0]),
            "truncated `name` at byte 2"
        );
        assert_eq!(
            err(&[0x01, 0, 1, b'A', 0, 0, 2, 1, b'X']),
            "truncated `unlocs` at byte 9"
        );
        assert_eq!(
            err(&[0x01, CITY, 1, b'A', 3, b'a', b'b']),
            "truncated `city` at byte 4"
        );
        assert_eq!(
            err(&[0x01, COORDINATES, 1, b'A', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "truncated `coordinates` at byte 12"
        );
    }

    #[test]
    fn bad_varints_are_refused() {
        let with_name_len = |len: &[u8]| [&[0x01, 0][..], len, b"A", &[0, 0, 0]].concat();
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(
            decode(&with_name_len(&huge)).unwrap_err(),
            CodecError::Truncated {
                field: "name",
                offset: 2
            }
        ));
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(matches!(
            decode(&with_name_len(&overflow)).unwrap_err(),
            CodecError::VarintOverflow {
                field: "name",
                offset: 2
            }
        ));
        let eleven = [
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
        ];
        assert!(matches!(
            decode(&with_name_len(&eleven)).unwrap_err(),
            CodecError::VarintOverflow { .. }
        ));
        assert!(matches!(
            decode(&with_name_len(&[0x81, 0x00])).unwrap_err(),
            CodecError::VarintNotMinimal {
                field: "name",
                offset: 2
            }
        ));
        let huge_count = [&[0x01, 0, 1, b'A'][..], &huge, &[0, 0]].concat();
        assert!(matches!(
            decode(&huge_count).unwrap_err(),
            CodecError::Truncated {
                field: "alias",
                offset: 4
            }
        ));
    }

    #[test]
    fn varints_use_the_shortest_form() {
        for (n, want) in [
            (0u64, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out, want, "{n}");
            let mut input = Reader { bytes: &out, at: 0 };
            assert_eq!(input.varint("n").unwrap(), n);
            assert!(input.finish().is_ok());
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-zA-Z ,.'-]{1,30}", any::<String>()]
    }

    fn port() -> impl Strategy<Value = Port> {
        let strings = || proptest::collection::vec(text(), 0..5);
        let optionals = proptest::collection::vec(proptest::option::of(text()), 5);
        let coordinates =
            proptest::option::of(any::<[u64; 2]>().prop_map(|c| c.map(f64::from_bits)));
        (
            text(),
            optionals,
            coordinates,
            strings(),
            strings(),
            strings(),
        )
            .prop_map(|(name, mut o, coordinates, alias, regions, unlocs)| Port {
                name,
                city: o[0].take(),
                country: o[1].take(),
                province: o[2].take(),
                timezone: o[3].take(),
                code: o[4].take(),
                coordinates,
                alias,
                regions,
                unlocs,
            })
    }

    /// The port with its coordinates as bits (NaN != NaN, but its bits compare).
    fn exact(port: &Port) -> (Port, Option<[u64; 2]>) {
        let bits = port.coordinates.map(|c| c.map(f64::to_bits));
        (
            Port {
                coordinates: None,
                ..port.clone()
            },
            bits,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_ports_round_trip_deterministically(port in port()) {
            let bytes = binary(&port);
            prop_assert_eq!(&bytes, &binary(&port.clone()));
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(exact(&back), exact(&port));
            let mut arena = b"earlier".to_vec();
            encode(&port, &mut arena);
            prop_assert_eq!(&arena[7..], bytes.as_slice(), "appends only");
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_accepted_ones_are_canonical(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut tagged = bytes.clone();
            tagged.insert(0, TAG);
            for input in [bytes, tagged] {
                if let Ok(port) = decode(&input) {
                    if input[0] == TAG {
                        prop_assert_eq!(binary(&port), input);
                    }
                }
            }
        }

        #[test]
        fn corrupted_encodings_never_panic(port in port(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = binary(&port);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            if let Ok(back) = decode(&bytes) {
                prop_assert_eq!(binary(&back), bytes);
            }
        }
    }

    /// A redb file of `count` ports, stored as JSON but for those at `binary_at`.
    fn legacy_store(
        count: usize,
        binary_at: &[usize],
    ) -> (tempfile::TempDir, redb::Database, Vec<(String, Port)>) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("ports.redb")).unwrap();
        let ports: Vec<(String, Port)> = (0..count)
            .map(|i| {
                let key = format!("K{i:05}");
                let port = Port {
                    coordinates: Some([i as f64 / 100.0, -(i as f64) / 1000.0]),
                    unlocs: vec![key.clone()],
                    ..full()
                };
                (key, port)
            })
            .collect();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(UNTYPED).unwrap();
            for (i, (key, port)) in ports.iter().enumerate() {
                let value = match binary_at.contains(&i) {
                    true => binary(port),
                    false => serde_json::to_vec(port).unwrap(),
                };
                table.insert(key.as_str(), value.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        (dir, db, ports)
    }

    fn stored(db: &redb::Database) -> Vec<(String, Vec<u8>)> {
        use redb::ReadableDatabase;
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(UNTYPED).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_owned(), v.value().to_vec())
            })
            .collect()
    }

    #[test]
    fn migration_converts_json_values_in_batches() {
        let (_dir, db, ports) = legacy_store(2_507, &[0, 500, 999, 1000, 1001, 2003, 2506]);
        let legacy = stored(&db)
            .iter()
            .filter(|(_, v)| is_legacy_json(v))
            .count();
        assert_eq!(legacy, 2_500);

        let mut seen = Vec::new();
        let converted = migrate_json_values(&db, 1000, &mut |n| seen.push(n)).unwrap();
        assert_eq!(converted, 2_500);
        assert_eq!(seen, [1000, 2000, 2500]);

        let after = stored(&db);
        assert_eq!(after.len(), ports.len());
        for ((key, value), (want_key, want)) in after.iter().zip(&ports) {
            assert_eq!(key, want_key);
            assert_eq!(value[0], TAG, "{key}");
            assert_eq!(decode(value).unwrap(), *want, "{key}");
        }

        let mut calls = 0;
        assert_eq!(
            migrate_json_values(&db, 1000, &mut |_| calls += 1).unwrap(),
            0
        );
        assert_eq!(calls, 0, "a second run writes nothing");
        assert_eq!(stored(&db), after);
    }

    #[test]
    fn migration_of_an_exact_multiple_of_the_batch_ends() {
        let (_dir, db, _) = legacy_store(20, &[]);
        let mut seen = Vec::new();
        assert_eq!(
            migrate_json_values(&db, 10, &mut |n| seen.push(n)).unwrap(),
            20
        );
        assert_eq!(seen, [10, 20]);
        assert_eq!(
            migrate_json_values(&db, 0, &mut |_| {}).unwrap(),
            0,
            "batch 0 counts as 1"
        );
    }

    #[test]
    fn migration_names_an_unreadable_legacy_value() {
        let (_dir, db, _) = legacy_store(5, &[]);
        let txn = db.begin_write().unwrap();
        txn.open_table(UNTYPED)
            .unwrap()
            .insert("K00003", br#"{"name":"x","colour":"red"}"#.as_slice())
            .unwrap();
        txn.commit().unwrap();
        let err = migrate_json_values(&db, 2, &mut |_| {}).unwrap_err();
        match err {
            StoreError::Corrupt { key, message } => {
                assert_eq!(key, "K00003");
                assert!(message.contains("colour"), "{message}");
            }
            other => panic!("{other}"),
        }
    }
}
