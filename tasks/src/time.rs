//! Times as the store keeps them (milliseconds since the Unix epoch) and as people read them
//! (RFC 3339).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    ms_of(SystemTime::now())
}

/// `time` in milliseconds since the Unix epoch (0 before it).
pub(crate) fn ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// `ms` as RFC 3339 with milliseconds, e.g. `2026-12-02T14:30:00.123Z`.
pub(crate) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(at_ms(ms)).to_string()
}
