//! Wall-clock time as Unix seconds and milliseconds, read in one place.
//!
//! Logic that depends on time takes `now` as a parameter; only request
//! handlers and background tasks call these.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now() -> u64 {
    unix_now_millis() / 1000
}

pub fn unix_now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
