//! Fuzzes the `csv` decoder: the first byte picks the limits and a split point, the rest is
//! the body. Decoding it whole, in two chunks and (when short) byte by byte must give the same
//! rows, faults and final syntax error; no row may hold more than `max_record_bytes`; every row
//! has one value per column; offsets and indexes must be where the decoder's documentation
//! says. See `edge_fuzz::check`.

#![no_main]

use edge_proto::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    edge_fuzz::check(Format::Csv, data);
});
