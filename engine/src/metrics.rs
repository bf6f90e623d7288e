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

    /// A user actor panicked (it restarts lazily on the next message).
    pub fn failed(&self) {
        self.failures.increment(1);
        self.failure_count.fetch_add(1, Ordering::Relaxed);
    }
}
