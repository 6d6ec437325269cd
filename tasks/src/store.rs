//! The redb database every plugin shares.
//!
//! INTERFACE FIXED HERE; body to be written.
