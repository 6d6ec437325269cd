//! The pseudo-header rules of a request's field section (RFC 9114 §4.3), checked on the
//! QPACK-encoded HEADERS payload.
//!
//! h3 0.0.8 decodes a field section into a `HeaderMap` and pseudo-header slots, losing what
//! these rules need: a second `:path` overwrites the first, and the order of pseudo-headers
//! against regular ones is gone. The guard (`h3guard`) runs [`check_request`] on the first
//! HEADERS frame of each request stream before h3 reads it. Only the field *names* are
//! looked at; values are left to h3. The server's QPACK dynamic table has capacity 0, so a
//! field section may only reference the static table (RFC 9204 Appendix A); a reference to
//! the dynamic table is left for h3 to refuse.

use std::fmt;

/// Why a request's field section is malformed (RFC 9114 §4.1.2: H3_MESSAGE_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// A pseudo-header after a regular header (§4.3).
    PseudoAfterRegular,
    /// A pseudo-header twice (§4.3.1).
    Duplicate(Pseudo),
    /// `:method`, `:scheme` or `:path` missing (§4.3.1).
    Missing(Pseudo),
    /// A pseudo-header that requests do not have (`:status`, or an unknown one) (§4.3).
    NotARequestPseudo,
    /// The QPACK encoding is cut short or overflows.
    Encoding,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::PseudoAfterRegular => write!(f, "a pseudo-header after a regular header"),
            Malformed::Duplicate(p) => write!(f, "`{}` twice", p.name()),
            Malformed::Missing(p) => write!(f, "no `{}`", p.name()),
            Malformed::NotARequestPseudo => write!(f, "a pseudo-header requests do not have"),
            Malformed::Encoding => write!(f, "a field section cut short"),
        }
    }
}

/// The request pseudo-headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pseudo {
    Method,
    Scheme,
    Authority,
    Path,
    Protocol,
}

impl Pseudo {
    const ALL: [Pseudo; 5] = [
        Pseudo::Method,
        Pseudo::Scheme,
        Pseudo::Authority,
        Pseudo::Path,
        Pseudo::Protocol,
    ];

    fn name(self) -> &'static str {
        match self {
            Pseudo::Method => ":method",
            Pseudo::Scheme => ":scheme",
            Pseudo::Authority => ":authority",
            Pseudo::Path => ":path",
            Pseudo::Protocol => ":protocol",
        }
    }
}

/// What a field's name is, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Pseudo(Pseudo),
    /// `:status` or an unknown pseudo-header.
    OtherPseudo,
    Regular,
}

/// Checks the pseudo-headers of a request's encoded field section. `Ok` also when the section
/// references the dynamic table: h3 refuses those itself.
pub(crate) fn check_request(mut block: &[u8]) -> Result<(), Malformed> {
    // The prefix: Required Insert Count (8-bit prefix), then Delta Base (7-bit prefix).
    let (required_insert_count, _) = prefix_int(&mut block, 8)?;
    if required_insert_count != 0 {
        return Ok(());
    }
    prefix_int(&mut block, 7)?;
    let mut seen = [false; Pseudo::ALL.len()];
    let mut regular_seen = false;
    while let Some(&first) = block.first() {
        let Some(name) = field_name(&mut block, first)? else {
            return Ok(()); // a dynamic-table reference: h3's to refuse
        };
        match name {
            Name::Regular => regular_seen = true,
            _ if regular_seen => return Err(Malformed::PseudoAfterRegular),
            Name::OtherPseudo => return Err(Malformed::NotARequestPseudo),
            Name::Pseudo(pseudo) => {
                let slot = &mut seen[pseudo as usize];
                if *slot {
                    return Err(Malformed::Duplicate(pseudo));
                }
                *slot = true;
            }
        }
    }
    // CONNECT (without :scheme and :path) is not served here, so every request needs all
    // three.
    for pseudo in [Pseudo::Method, Pseudo::Scheme, Pseudo::Path] {
        if !seen[pseudo as usize] {
            return Err(Malformed::Missing(pseudo));
        }
    }
    Ok(())
}

/// Reads one field line (RFC 9204 §4.5) and returns its name; `None` for a line that
/// references the dynamic table.
fn field_name(block: &mut &[u8], first: u8) -> Result<Option<Name>, Malformed> {
    if first & 0x80 != 0 {
        // Indexed field line: 1 T index(6).
        let static_table = first & 0x40 != 0;
        let (index, _) = prefix_int(block, 6)?;
        return Ok(static_table.then(|| static_name(index)));
    }
    if first & 0x40 != 0 {
        // Literal with name reference: 01 N T index(4), then the value.
        let static_table = first & 0x10 != 0;
        let (index, _) = prefix_int(block, 4)?;
        skip_string(block, 7)?;
        return Ok(static_table.then(|| static_name(index)));
    }
    if first & 0x20 != 0 {
        // Literal with literal name: 001 N H length(3), the name, then the value.
        let huffman = first & 0x08 != 0;
        let name = string(block, 3)?;
        skip_string(block, 7)?;
        return Ok(Some(if huffman {
            huffman_name(name)
        } else {
            literal_name(name)
        }));
    }
    // Indexed or literal with post-base index: the dynamic table.
    Ok(None)
}

/// The names of the static table's pseudo-header entries (RFC 9204 Appendix A).
fn static_name(index: u64) -> Name {
    match index {
        0 => Name::Pseudo(Pseudo::Authority),
        1 => Name::Pseudo(Pseudo::Path),
        15..=21 => Name::Pseudo(Pseudo::Method),
        22 | 23 => Name::Pseudo(Pseudo::Scheme),
        24..=28 | 63..=71 => Name::OtherPseudo, // :status
        _ => Name::Regular,
    }
}

fn literal_name(name: &[u8]) -> Name {
    if name.first() != Some(&b':') {
        return Name::Regular;
    }
    Pseudo::ALL
        .into_iter()
        .find(|p| p.name().as_bytes() == name)
        .map_or(Name::OtherPseudo, Name::Pseudo)
}

/// A Huffman-coded name (RFC 7541 Appendix B): a pseudo-header's starts with the 7-bit code
/// of `:`, and each name has exactly one coding, so it is compared coded.
fn huffman_name(name: &[u8]) -> Name {
    if name.first().is_none_or(|b| b & 0xfe != 0xb8) {
        return Name::Regular;
    }
    Pseudo::ALL
        .into_iter()
        .find(|p| huffman(p.name()) == name)
        .map_or(Name::OtherPseudo, Name::Pseudo)
}

/// The Huffman coding of a pseudo-header name (only the characters those names use).
fn huffman(text: &str) -> Vec<u8> {
    let code = |c: u8| -> (u32, u32) {
        match c {
            b':' => (0x5c, 7),
            b'a' => (0x3, 5),
            b'c' => (0x4, 5),
            b'e' => (0x5, 5),
            b'i' => (0x6, 5),
            b'o' => (0x7, 5),
            b's' => (0x8, 5),
            b't' => (0x9, 5),
            b'd' => (0x24, 6),
            b'h' => (0x27, 6),
            b'l' => (0x28, 6),
            b'm' => (0x29, 6),
            b'p' => (0x2b, 6),
            b'r' => (0x2c, 6),
            b'u' => (0x2d, 6),
            b'y' => (0x7a, 7),
            _ => unreachable!("pseudo-header names use only these characters"),
        }
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0u32);
    for &c in text.as_bytes() {
        let (value, len) = code(c);
        acc = (acc << len) | u64::from(value);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Padded with the most significant bits of EOS: ones.
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
    out
}

/// A QPACK/HPACK prefix integer (RFC 7541 §5.1) in the low `bits` of the first byte; returns
/// it with the first byte.
fn prefix_int(block: &mut &[u8], bits: u32) -> Result<(u64, u8), Malformed> {
    let (&first, rest) = block.split_first().ok_or(Malformed::Encoding)?;
    *block = rest;
    let max = (1u64 << bits) - 1;
    let mut value = u64::from(first) & max;
    if value < max {
        return Ok((value, first));
    }
    let mut shift = 0;
    loop {
        let (&byte, rest) = block.split_first().ok_or(Malformed::Encoding)?;
        *block = rest;
        if shift > 56 {
            return Err(Malformed::Encoding);
        }
        value += u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok((value, first));
        }
    }
}

/// A length-prefixed string whose length has a `bits`-bit prefix.
fn string<'a>(block: &mut &'a [u8], bits: u32) -> Result<&'a [u8], Malformed> {
    let (length, _) = prefix_int(block, bits)?;
    let length = usize::try_from(length).map_err(|_| Malformed::Encoding)?;
    if length > block.len() {
        return Err(Malformed::Encoding);
    }
    let (string, rest) = block.split_at(length);
    *block = rest;
    Ok(string)
}

fn skip_string(block: &mut &[u8], bits: u32) -> Result<(), Malformed> {
    string(block, bits).map(|_| ())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_wire::prefix_int;

    /// A field section of literal names and values, no Huffman, no table.
    pub(crate) fn section(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0, 0];
        for (name, value) in fields {
            out.extend(prefix_int(0x20, 3, name.len()));
            out.extend(name.as_bytes());
            out.extend(prefix_int(0, 7, value.len()));
            out.extend(value.as_bytes());
        }
        out
    }

    const GOOD: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/healthz"),
    ];

    #[test]
    fn well_formed_requests_pass() {
        let long = "x".repeat(300);
        let mut fields = GOOD.to_vec();
        fields.push(("user-agent", &long));
        assert_eq!(check_request(&section(&fields)), Ok(()));
        // Static references: :method GET (17), :scheme https (23), :path / (1), then a
        // literal with a name reference to `user-agent` (95)... and :authority by name.
        let mut block = vec![0, 0, 0xc0 | 17, 0xc0 | 23, 0xc1];
        block.extend(prefix_int(0x50, 4, 0)); // :authority, static name, literal value
        block.extend(prefix_int(0, 7, 3));
        block.extend(b"a.b");
        block.extend(prefix_int(0x50, 4, 95));
        block.extend(prefix_int(0, 7, 1));
        block.push(b'x');
        assert_eq!(check_request(&block), Ok(()));
    }

    #[test]
    fn pseudo_header_rules_are_enforced() {
        let mut after = GOOD.to_vec();
        after.insert(2, ("accept", "*/*"));
        assert_eq!(
            check_request(&section(&after)),
            Err(Malformed::PseudoAfterRegular)
        );
        let mut twice = GOOD.to_vec();
        twice.push((":path", "/other"));
        assert_eq!(
            check_request(&section(&twice)),
            Err(Malformed::Duplicate(Pseudo::Path))
        );
        for (i, missing) in [(0, Pseudo::Method), (1, Pseudo::Scheme), (3, Pseudo::Path)] {
            let mut fields = GOOD.to_vec();
            fields.remove(i);
            assert_eq!(
                check_request(&section(&fields)),
                Err(Malformed::Missing(missing))
            );
        }
        let mut status = GOOD.to_vec();
        status.push((":status", "200"));
        assert_eq!(
            check_request(&section(&status)),
            Err(Malformed::NotARequestPseudo)
        );
        // A static :status reference (index 25, 200).
        let mut block = section(&GOOD);
        block.push(0xc0 | 25);
        assert_eq!(check_request(&block), Err(Malformed::NotARequestPseudo));
        // Cut short.
        let block = section(&GOOD);
        assert_eq!(
            check_request(&block[..block.len() - 3]),
            Err(Malformed::Encoding)
        );
    }

    #[test]
    fn huffman_coded_names_are_recognised() {
        // ":path" coded by hand from RFC 7541 Appendix B: 1011100 101011 00011 01001 100111,
        // padded with ones.
        assert_eq!(huffman(":path"), [0xb9, 0x58, 0xd3, 0x3f]);
        assert_eq!(huffman_name(&huffman(":path")), Name::Pseudo(Pseudo::Path));
        assert_eq!(
            huffman_name(&huffman(":protocol")),
            Name::Pseudo(Pseudo::Protocol)
        );
        assert_eq!(huffman_name(&huffman(":status")), Name::OtherPseudo);
        // "accept" (a: 00011, c: 00100, ...) does not start with the code of ':'.
        assert_eq!(huffman_name(&[0x19, 0x08, 0x5a, 0xd2]), Name::Regular);
        // Two :path fields, the second with a Huffman-coded name.
        let mut block = section(&GOOD);
        let coded = huffman(":path");
        block.extend(prefix_int(0x28, 3, coded.len()));
        block.extend(&coded);
        block.extend(prefix_int(0, 7, 1));
        block.push(b'/');
        assert_eq!(
            check_request(&block),
            Err(Malformed::Duplicate(Pseudo::Path))
        );
    }
}
