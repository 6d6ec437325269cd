//! Fuzzes the `json` decoder: the first byte picks the limits and a split point, the rest is
//! the body. Decoding it whole, in two chunks and (when short) byte by byte must give the same
//! records, faults and final syntax error; no record may pass `max_record_bytes`; offsets and
//! indexes must be where the decoder's documentation says. See `edge_fuzz::check`.

#![no_main]

use edge_proto::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edge_fuzz::check(Format::Json, data);
});
