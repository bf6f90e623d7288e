//! Timestamps as stored (microseconds since the Unix epoch) and as shown (chrono UTC).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch: compact to store, exact to compare.
pub type Micros = i64;

/// The clock, floored to the microsecond (as chrono's `timestamp_micros` floors). Read straight
/// from the system clock: through `Utc::now()` each command paid for a calendar date built and
/// taken apart again (≈ 250 instructions a call, twice a command).
pub fn now_micros() -> Micros {
    let micros = |d: std::time::Duration, round_up: bool| {
        let nanos = d.as_nanos();
        let whole = if round_up {
            nanos.div_ceil(1_000)
        } else {
            nanos / 1_000
        };
        i64::try_from(whole).unwrap_or(i64::MAX)
    };
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => micros(since, false),
        Err(before) => -micros(before.duration(), true),
    }
}

pub fn to_datetime(micros: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_reads_as_chrono_reads_it() {
        let before = Utc::now().timestamp_micros();
        let now = now_micros();
        let after = Utc::now().timestamp_micros();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }
}
