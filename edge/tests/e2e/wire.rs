//! HTTP/3 wire encoders for tests that write frames by hand: QUIC varints (RFC 9000 §16) and
//! QPACK prefix integers (RFC 9204 §4.1.1). Shared by the end-to-end tests and the server's
//! own unit tests (`edge/src/lib.rs` includes this file under `cfg(test)`).

#![allow(dead_code)]

/// A QUIC varint in its shortest form.
pub fn varint(v: u64) -> Vec<u8> {
    match v {
        0..=63 => vec![v as u8],
        64..=16383 => (v as u16 | 0x4000).to_be_bytes().to_vec(),
        16384..=1_073_741_823 => (v as u32 | 0x8000_0000).to_be_bytes().to_vec(),
        _ => (v | 0xc000_0000_0000_0000).to_be_bytes().to_vec(),
    }
}

/// A frame's header: its type and the payload length it declares.
pub fn frame_header(frame_type: u64, payload_len: u64) -> Vec<u8> {
    [varint(frame_type), varint(payload_len)].concat()
}

/// A QPACK prefix integer with `flags` above a `bits`-bit prefix (RFC 7541 §5.1).
pub fn prefix_int(flags: u8, bits: u32, value: usize) -> Vec<u8> {
    let max = (1usize << bits) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let mut out = vec![flags | max as u8];
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
    out
}
