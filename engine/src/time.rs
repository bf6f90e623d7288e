//! Timestamps as stored (microseconds since the Unix epoch) and as shown (chrono UTC).

use chrono::{DateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch: compact to store, exact to compare.
pub type Micros = i64;

pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

pub fn to_datetime(micros: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}
