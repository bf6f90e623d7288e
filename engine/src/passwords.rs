//! Checking a user's password, as the session API does, and changing it (SetPassword). The check
//! itself runs in the user's actor (`user/checks.rs`: serialized per user, refused without a hash
//! once locked); what happens around it runs here, outside the actor — the tarpit, ZITADEL's
//! growing delay after repeated wrong passwords, so that a slow answer never holds up the user's
//! other commands — and so does hashing a new password.
//!
//! SetPassword's current password goes through the same check: a wrong one counts as a failure
//! and can lock, and a locked user's is refused without a hash — changing the password is no way
//! around the lockout (ZITADEL verifies it without counting).

use std::time::Duration;

use crate::access::{Caller, Permission};
use crate::error::{Error, ErrorId};
use crate::password::{hash_password, validate_hash};
use crate::types::{Details, PasswordInput};
use crate::user::actor::Request;
use crate::user::record::{PasswordRecord, UserRecord};
use crate::{check_user_id, Engine};

/// The delay after a wrong password: none below `min_failed` failures, then `step` more for every
/// `step_size` failures, at most `max`. ZITADEL's defaults: 0 s for 1–9 failures, 1 s for 10–14,
/// … 10 s from 55 on. It applies whether or not the policy locks. `step` zero: no tarpit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tarpit {
    pub min_failed: u32,
    pub step_size: u32,
    pub step: Duration,
    pub max: Duration,
}

impl Default for Tarpit {
    fn default() -> Self {
        Tarpit {
            min_failed: 5,
            step_size: 5,
            step: Duration::from_secs(1),
            max: Duration::from_secs(10),
        }
    }
}

impl Tarpit {
    /// No delay at all.
    pub const OFF: Tarpit = Tarpit {
        min_failed: 0,
        step_size: 1,
        step: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// The delay after the user's `failed`-th failure.
    pub fn delay(&self, failed: u32) -> Duration {
        if failed < self.min_failed || self.step_size == 0 {
            return Duration::ZERO;
        }
        let steps = (failed - self.min_failed) / self.step_size;
        self.step.saturating_mul(steps).min(self.max)
    }
}

impl Engine {
    /// SetPassword: a new password for a human user, by a caller holding `user.write` on its
    /// organization; with `current`, only if that is the user's password now. The failure count
    /// is reset; a locked user stays locked.
    pub async fn set_password(
        &self,
        caller: &Caller,
        user_id: &str,
        new: PasswordInput,
        current: Option<&str>,
    ) -> Result<Details, Error> {
        self.check_open()?;
        let reach = caller.reach(Permission::UserWrite)?;
        check_user_id(user_id)?;
        // Within reach before its current password is tried (the same NotFound otherwise).
        self.inner
            .registry
            .call(user_id, |reply| Request::Read {
                reach: reach.clone(),
                reply,
            })
            .await?;
        if let Some(current) = current {
            self.check_password(user_id, current, &caller.user_id)
                .await?;
        }
        let password = match new {
            PasswordInput::Plain {
                password,
                change_required,
            } => PasswordRecord {
                hash: hash_password(password).await?,
                change_required,
                changed: 0,
            },
            PasswordInput::Hashed {
                hash,
                change_required,
            } => {
                validate_hash(&hash)?;
                PasswordRecord {
                    hash,
                    change_required,
                    changed: 0,
                }
            }
        };
        self.inner
            .registry
            .call(user_id, |reply| Request::SetPassword {
                reach: reach.clone(),
                by: caller.user_id.clone(),
                password: password.clone(),
                reply,
            })
            .await
    }

    /// Checks `password` for user `user_id` (already found by the caller, who holds the
    /// permission to check). The user's record when it matches.
    pub(crate) async fn check_password(
        &self,
        user_id: &str,
        password: &str,
        by: &str,
    ) -> Result<UserRecord, Error> {
        check_user_id(user_id)?;
        if password.is_empty() || password.chars().count() > 200 {
            return Err(Error::invalid(
                "checks.password.password must be 1 to 200 characters",
            ));
        }
        let result = self
            .inner
            .registry
            .call_within(user_id, spread(self.inner.config.call_timeout), |reply| {
                Request::CheckPassword {
                    password: password.to_owned(),
                    by: by.to_owned(),
                    reply,
                }
            })
            .await;
        if let Err(e) = &result {
            if e.id == ErrorId::PasswordInvalid {
                let delay = self
                    .inner
                    .config
                    .tarpit
                    .delay(e.failed_attempts.unwrap_or(0));
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
        result
    }
}

/// A check's deadline: somewhere between half and all of the call timeout. Checks of an attacked
/// user wait in its queue until their deadline; with one deadline for all, the thousands an
/// attacker sends at once would time out at once, come back at once, and take the server from
/// everyone else in bursts. Spread deadlines turn the bursts into a steady trickle.
fn spread(call_timeout: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // The clock's microseconds are as good as a random number here (and cost no system call).
    let per_mille = u64::from((nanos / 1_000) % 1_000);
    call_timeout / 2 + (call_timeout / 2).mul_f64(per_mille as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_deadlines_spread_over_the_second_half_of_the_call_timeout() {
        let timeout = Duration::from_secs(5);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let deadline = spread(timeout);
            assert!(
                deadline >= timeout / 2 && deadline <= timeout,
                "{deadline:?}"
            );
            seen.insert(deadline.as_millis() / 250);
            std::thread::sleep(Duration::from_micros(7));
        }
        // Both quarters of the window are used: deadlines are not all alike.
        assert!(seen.len() >= 2, "{seen:?}");
    }

    #[test]
    fn zitadels_tarpit_grows_with_the_failures() {
        let tarpit = Tarpit::default();
        let secs = |failed| tarpit.delay(failed).as_secs();
        assert_eq!(
            [secs(1), secs(9), secs(10), secs(14), secs(15)],
            [0, 0, 1, 1, 2]
        );
        assert_eq!(secs(55), 10);
        assert_eq!(secs(10_000), 10);
        assert_eq!(Tarpit::OFF.delay(10_000), Duration::ZERO);
    }
}
