//! Stable error codes carried in events, and the QUIC application codes that stop streams and
//! close connections. Scripts match on these names: never rename one, only add.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a job was refused, why it failed, or why one record was not stored.
///
/// Serialized as a snake_case string (`"unknown_task"`). A client reading events from a newer
/// server maps codes it does not know to [`ErrorCode::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    // --- refusals, sent in `rejected` before any byte of the body is decoded ---
    /// The job header is not one line of valid JSON with the required fields.
    BadHeader,
    /// The job header is longer than [`crate::header::MAX_HEADER_BYTES`].
    HeaderTooLarge,
    /// The header's `v` is not a protocol version this server speaks.
    UnsupportedVersion,
    /// No task plugin has that name.
    UnknownTask,
    /// The format is not known, or the task does not accept it.
    UnknownFormat,
    /// The task's `params` are invalid.
    BadParams,
    /// No token, or a token that does not verify.
    Unauthorized,
    /// The token is valid but its scopes do not allow this job.
    Forbidden,
    /// The token has expired.
    TokenExpired,
    /// The token's id has been revoked.
    TokenRevoked,
    /// Too many job starts or concurrent jobs: retry later.
    RateLimited,
    /// The server is shutting down and takes no new jobs.
    ShuttingDown,

    // --- per record, sent in `record_error`; the job goes on ---
    /// The record is not valid JSON (or the line is not valid text).
    InvalidJson,
    /// The record is valid JSON but wrong for the task (the message names the field).
    InvalidRecord,
    /// The record is larger than the server's record size limit; it was skipped unread.
    RecordTooLarge,
    /// The record nests deeper than the server's limit.
    TooDeep,
    /// The record's bytes are not valid UTF-8.
    InvalidUtf8,
    /// The upload ended inside this record; it was not stored.
    IncompleteRecord,

    // --- job failures, sent in `failed`; records committed before it stay committed ---
    /// The document's framing is broken (e.g. unbalanced brackets): nothing after the offset
    /// can be read.
    SyntaxError,
    /// The store could not commit (disk full, I/O error).
    StoreError,
    /// The client reset the upload stream or the connection was lost mid-upload.
    UploadAborted,
    /// The server shut down while the job was running.
    Shutdown,
    /// Too many records failed: the job stopped instead of reporting them one by one.
    TooManyErrors,
    /// The job exceeded a configured limit (e.g. upload bytes).
    LimitExceeded,
    /// The client sent the upload too slowly (below `jobs.min_upload_bytes_per_sec`).
    TooSlow,
    /// The client cancelled the upload (RESET_STREAM with [`AppCode::Cancelled`], e.g. on
    /// Ctrl-C).
    Cancelled,
    /// A bug or an unexpected condition on the server.
    Internal,
    /// The body's digest is not the one the client said it would be: nothing of the job was
    /// kept (`blobs`: the old version stays).
    DigestMismatch,
    /// The job would replace what exists, and the client asked it not to (`if_absent`).
    AlreadyExists,
    /// The server could not read the job's source (a URL: the origin's status, a timeout, a
    /// connection or TLS failure); the message says which.
    SourceFailed,
    /// The store could not be reached (the PostgreSQL store down or restarting): records
    /// committed before stay committed, and the same job sent again later works.
    StoreUnavailable,

    // --- resuming a job (`resume`) ---
    /// The job to resume stopped longer ago than `jobs.resume_window` (or ended, or never
    /// was): its state is gone; send the whole file again as a new job.
    ResumeExpired,
    /// The job cannot be resumed: it ended `done`, or failed for a reason that resuming
    /// would meet again (a syntax error, a digest that does not match), or its task stores
    /// bodies as they are (`blobs`). The message says which.
    NotResumable,
    /// Another client resumed this job: this one is no longer attached to it, and nothing it
    /// sent after the job's last commit was kept.
    TakenOver,
    /// An append to an upload resource (`PATCH /v1/uploads/{id}`) did not start at the
    /// job's offset: `HEAD` (or `GET`) it for the offset and send the body from there.
    OffsetMismatch,

    /// A code this version of the contract does not know (from a newer peer).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The snake_case name of the code, as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadHeader => "bad_header",
            ErrorCode::HeaderTooLarge => "header_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownTask => "unknown_task",
            ErrorCode::UnknownFormat => "unknown_format",
            ErrorCode::BadParams => "bad_params",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRecord => "invalid_record",
            ErrorCode::RecordTooLarge => "record_too_large",
            ErrorCode::TooDeep => "too_deep",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::IncompleteRecord => "incomplete_record",
            ErrorCode::SyntaxError => "syntax_error",
            ErrorCode::StoreError => "store_error",
            ErrorCode::UploadAborted => "upload_aborted",
            ErrorCode::Shutdown => "shutdown",
            ErrorCode::TooManyErrors => "too_many_errors",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::TooSlow => "too_slow",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
            ErrorCode::DigestMismatch => "digest_mismatch",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::SourceFailed => "source_failed",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::ResumeExpired => "resume_expired",
            ErrorCode::NotResumable => "not_resumable",
            ErrorCode::TakenOver => "taken_over",
            ErrorCode::OffsetMismatch => "offset_mismatch",
            ErrorCode::Other => "other",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// QUIC application error codes (RFC 9000 §20.2) used by `edge/1` in STOP_SENDING,
/// RESET_STREAM and CONNECTION_CLOSE frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum AppCode {
    /// Normal close: the peer is done.
    NoError = 0x0,
    /// Server -> client STOP_SENDING on an upload stream whose job was refused.
    Rejected = 0x10,
    /// Server -> client STOP_SENDING on an upload stream whose job failed mid-upload.
    JobFailed = 0x11,
    /// Server -> client CONNECTION_CLOSE: the server is shutting down.
    Shutdown = 0x20,
    /// Client -> server RESET_STREAM: the user cancelled the upload.
    Cancelled = 0x30,
    /// Client -> server RESET_STREAM on a resume: the client's file does not start with the
    /// bytes the server received (`resumed`'s `prefix_sha256`), so it sends nothing; the
    /// job stays resumable with the right file.
    PrefixMismatch = 0x31,
    /// Either side: the peer broke the protocol (e.g. opened a bidirectional stream).
    ProtocolError = 0x40,
    /// Either side: an internal error.
    Internal = 0x50,
}

impl AppCode {
    /// The numeric value carried on the wire.
    pub fn value(self) -> u32 {
        self as u32
    }

    /// The code for a numeric value, if it is one of ours.
    pub fn from_value(v: u64) -> Option<AppCode> {
        Some(match v {
            0x0 => AppCode::NoError,
            0x10 => AppCode::Rejected,
            0x11 => AppCode::JobFailed,
            0x20 => AppCode::Shutdown,
            0x30 => AppCode::Cancelled,
            0x31 => AppCode::PrefixMismatch,
            0x40 => AppCode::ProtocolError,
            0x50 => AppCode::Internal,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [
            ErrorCode::BadHeader,
            ErrorCode::UnknownTask,
            ErrorCode::InvalidRecord,
            ErrorCode::IncompleteRecord,
            ErrorCode::TooManyErrors,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }

    #[test]
    fn unknown_codes_read_as_other() {
        let code: ErrorCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(code, ErrorCode::Other);
    }

    #[test]
    fn app_codes_round_trip() {
        for c in [
            AppCode::NoError,
            AppCode::Rejected,
            AppCode::Shutdown,
            AppCode::Cancelled,
        ] {
            assert_eq!(AppCode::from_value(u64::from(c.value())), Some(c));
        }
        assert_eq!(AppCode::from_value(0x99), None);
    }
}
