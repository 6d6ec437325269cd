//! Runs one job: pulls the upload's chunks from a [`Source`], decodes them, hands the records
//! to the task, commits in groups (by count and by time) and emits the notification events.
//!
//! INTERFACE FIXED HERE; body to be written.
