//! Timestamps as stored (microseconds since the Unix epoch) and as shown (chrono UTC).

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch: compact to store, exact to compare.
pub type Micros = i64;

/// The clock, floored to the microsecond (as chrono's `timestamp_micros` floors). Read straight
/// from the system clock: through `Utc::now()` each command paid for a calendar date built and
/// taken apart again (≈ 250 instructions a call, twice a command).
pub fn now_micros() -> Micros {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_micros()).unwrap_or(i64::MAX),
        // A clock set before 1970: floored too, so rounded away from zero.
        Err(before) => {
            -i64::try_from(before.duration().as_nanos().div_ceil(1_000)).unwrap_or(i64::MAX)
        }
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
