//! The engine's metrics, registered once when the engine opens (the `metrics` facade: whatever
//! recorder the process installed — the server's Prometheus exporter — receives them; without
//! one they cost nothing). Counters that tests and `Engine::stats` read are mirrored in atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

pub(crate) struct EngineMetrics {
    /// Time a request spent in a user's mailbox before the actor took it.
    pub mailbox_wait: Histogram,
    active: Gauge,
    activations: Counter,
    passivations: Counter,
    failures: Counter,
    /// Password checks by outcome ([`CheckOutcome`]).
    checks: [Counter; CheckOutcome::ALL.len()],
    /// Users locked by the lockout policy (a wrong password at the limit).
    lockouts: Counter,
    /// GetUserByID answered from the view the user's actor published (`user/published.rs`).
    reads_from_view: Counter,
    pub reads_from_view_count: AtomicU64,
    pub activation_count: AtomicU64,
    pub passivation_count: AtomicU64,
    pub failure_count: AtomicU64,
}

impl EngineMetrics {
    pub fn new() -> Self {
        EngineMetrics {
            mailbox_wait: histogram!("latchkey_actor_mailbox_wait_seconds"),
            active: gauge!("latchkey_actors_active"),
            activations: counter!("latchkey_actor_activations_total"),
            passivations: counter!("latchkey_actor_passivations_total"),
            failures: counter!("latchkey_actor_restarts_total"),
            checks: CheckOutcome::ALL.map(
                |outcome| counter!("latchkey_password_checks_total", "outcome" => outcome.label()),
            ),
            lockouts: counter!("latchkey_lockouts_total"),
            reads_from_view: counter!("latchkey_user_reads_from_view_total"),
            reads_from_view_count: AtomicU64::new(0),
            activation_count: AtomicU64::new(0),
            passivation_count: AtomicU64::new(0),
            failure_count: AtomicU64::new(0),
        }
    }

    pub fn activated(&self) {
        self.activations.increment(1);
        self.active.increment(1.0);
        self.activation_count.fetch_add(1, Ordering::Relaxed);
    }

    /// An actor left the registry; `passivated`: because it was idle.
    pub fn deactivated(&self, passivated: bool) {
        self.active.decrement(1.0);
        if passivated {
            self.passivations.increment(1);
            self.passivation_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A read was answered from a published view, without a hop to the actor.
    pub fn read_from_view(&self) {
        self.reads_from_view.increment(1);
        self.reads_from_view_count.fetch_add(1, Ordering::Relaxed);
    }

    /// A password check was answered.
    pub fn checked(&self, outcome: CheckOutcome) {
        self.checks[outcome as usize].increment(1);
    }

    /// The lockout policy locked a user.
    pub fn locked_out(&self) {
        self.lockouts.increment(1);
    }

    /// A user actor panicked (it restarts lazily on the next message).
    pub fn failed(&self) {
        self.failures.increment(1);
        self.failure_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a password check was answered (the `outcome` label of `latchkey_password_checks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckOutcome {
    /// The password matched.
    Match,
    /// A wrong password: counted, perhaps locking the user.
    Mismatch,
    /// Refused without a verification: the user is locked.
    Locked,
    /// Refused at once: too many checks waiting (PASSWORD-CHECKS-BUSY).
    Busy,
    /// Anything else: no such user, no password, a failed verification.
    Other,
}

impl CheckOutcome {
    const ALL: [CheckOutcome; 5] = [
        CheckOutcome::Match,
        CheckOutcome::Mismatch,
        CheckOutcome::Locked,
        CheckOutcome::Busy,
        CheckOutcome::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            CheckOutcome::Match => "match",
            CheckOutcome::Mismatch => "mismatch",
            CheckOutcome::Locked => "locked",
            CheckOutcome::Busy => "busy",
            CheckOutcome::Other => "other",
        }
    }

    /// The outcome an answer to a check reports.
    pub fn of<T>(answer: &Result<T, crate::error::Error>) -> Self {
        use crate::error::ErrorId;
        match answer {
            Ok(_) => CheckOutcome::Match,
            Err(e) => match e.id {
                ErrorId::PasswordInvalid => CheckOutcome::Mismatch,
                ErrorId::UserLocked | ErrorId::UserLockedDuringCheck => CheckOutcome::Locked,
                ErrorId::ChecksBusy => CheckOutcome::Busy,
                _ => CheckOutcome::Other,
            },
        }
    }
}
