//! Empty: cargo takes a package's `[build-dependencies]` into account only when it has a build
//! script, and this crate lists the host side's shared dependencies there.

fn main() {}
