//! Callers resolved from tokens, kept in memory so authentication never reads sled on an async
//! worker. That matters beyond speed: once batches are in use, every sled read takes a global
//! lock that is held while a batch is applied to sled (by the log's checkpoint thread), so a read
//! on a tokio worker can stall the whole server behind it (measured, when the group-commit writer
//! still applied to sled: open-loop p99 in the hundreds of ms).
//!
//! Correctness: entries are filled only from the owning user's actor state (a staged read, so
//! durable), and the actor invalidates its user's entries on every change it commits. A fill
//! that raced an invalidation is refused by a generation counter, bumped by every invalidation
//! and checked under the same lock — so a stale caller can never be cached. In cluster mode a
//! user another node serves is filled from this node's view, and every record the view applies
//! to a user's scope invalidates that user (`Engine::open`): such an entry is exactly as fresh
//! as the view, as a read of the view would be, without the read.
//!
//! Keys: an entry is found by the bearer token itself, not by its SHA-256 (which is what the
//! store keeps): a hit then costs one keyed hash of the token, and the hashing is paid once, on
//! the miss that reads the store. The cache holds the tokens of the callers it holds, in this
//! process's memory only, where each of them passes on every request anyway; its hasher's seed
//! is random per process, so which entries a token is compared with is not the sender's choice.
//!
//! Memory: the counters are a fixed set of stripes (a user's is chosen by its id's hash), not
//! one per user, so nothing is kept for a user without cached tokens; `by_user` holds exactly
//! the users whose tokens are cached, and an invalidation removes the user's entry with its
//! tokens. The price is that a fill racing a change of another user of the same stripe is
//! refused too; that request is still answered, only not cached, and the next one fills.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;
use foldhash::fast::RandomState;

use crate::access::Caller;
use crate::time::Micros;

/// A bearer token as the cache keys it.
pub(crate) type Token = Box<str>;

#[derive(Clone)]
pub(crate) struct CachedCaller {
    pub caller: Arc<Caller>,
    pub expires: Option<Micros>,
}

/// Generation counters: enough that a cluster's stream of applied records (each an invalidation)
/// rarely refuses an unrelated fill.
const STRIPES: usize = 64;

pub(crate) struct AuthCache {
    callers: DashMap<Token, CachedCaller, RandomState>,
    /// The cached tokens of each user, for invalidation.
    by_user: DashMap<String, Vec<Token>, RandomState>,
    /// Bumped by every invalidation of a user of the stripe; its fills and invalidations take
    /// it in turn.
    generations: [Mutex<u64>; STRIPES],
    stripe_of: std::collections::hash_map::RandomState,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache {
            callers: DashMap::default(),
            by_user: DashMap::default(),
            generations: std::array::from_fn(|_| Mutex::new(0)),
            stripe_of: Default::default(),
        }
    }
}

impl AuthCache {
    pub fn get(&self, token: &str) -> Option<CachedCaller> {
        self.callers.get(token).map(|c| c.clone())
    }

    /// Read before reading `user_id`'s state; pass to [`AuthCache::fill`].
    pub fn generation(&self, user_id: &str) -> u64 {
        *self.lock_generation(user_id)
    }

    /// The lock of `user_id`'s generation; a panic under it cannot leave it half-changed (it is
    /// one number).
    fn lock_generation(&self, user_id: &str) -> MutexGuard<'_, u64> {
        self.generations[self.stripe_of.hash_one(user_id) as usize % STRIPES]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches `entry` unless a user of `user_id`'s stripe changed since `generation` was read.
    pub fn fill(&self, token: &str, user_id: &str, generation: u64, entry: CachedCaller) {
        let current = self.lock_generation(user_id);
        if *current == generation {
            self.callers.insert(token.into(), entry);
            let mut tokens = self.by_user.entry(user_id.to_owned()).or_default();
            if !tokens.iter().any(|cached| **cached == *token) {
                tokens.push(token.into());
            }
        }
    }

    /// Called by a machine user's actor whenever it commits a change to that user. Always bumps
    /// the generation (even with nothing cached), so a fill already under way is refused.
    pub fn invalidate(&self, user_id: &str) {
        let tokens = {
            let mut generation = self.lock_generation(user_id);
            *generation += 1;
            self.by_user.remove(user_id).map(|(_, tokens)| tokens)
        };
        for token in tokens.into_iter().flatten() {
            self.callers.remove(&token);
        }
    }

    /// Users with cached tokens (tests: the cache must not grow with changes).
    #[cfg(test)]
    fn users(&self) -> usize {
        self.by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> CachedCaller {
        CachedCaller {
            caller: Arc::new(Caller::system("o")),
            expires: None,
        }
    }

    #[test]
    fn a_fill_that_raced_an_invalidation_is_refused() {
        let cache = AuthCache::default();
        let seen = cache.generation("u");
        cache.fill("token-1", "u", seen, entry());
        assert!(cache.get("token-1").is_some());

        let before_change = cache.generation("u");
        cache.invalidate("u"); // the actor committed a change meanwhile
        assert!(cache.get("token-1").is_none());
        cache.fill("token-1", "u", before_change, entry());
        assert!(cache.get("token-1").is_none(), "stale fill must not land");

        // a change to a user with nothing cached still refuses a fill that started before it
        let started = cache.generation("v");
        cache.invalidate("v");
        cache.fill("token-2", "v", started, entry());
        assert!(cache.get("token-2").is_none());

        let fresh = cache.generation("u");
        cache.fill("token-1", "u", fresh, entry());
        assert!(cache.get("token-1").is_some());
    }

    #[test]
    fn changes_of_users_leave_nothing_behind() {
        let cache = AuthCache::default();
        for round in 0..1000u32 {
            let user = format!("machine-{round}");
            cache.invalidate(&user);
            let seen = cache.generation(&user);
            cache.fill(&format!("token-{round}"), &user, seen, entry());
            cache.invalidate(&user);
        }
        assert_eq!(
            cache.users(),
            0,
            "one entry per changed user would stay forever"
        );
        assert!(cache.callers.is_empty());
        // A user whose tokens are cached is kept, once, however often they are filled.
        let seen = cache.generation("kept");
        cache.fill("token-7", "kept", seen, entry());
        cache.fill("token-7", "kept", seen, entry());
        assert_eq!(cache.users(), 1);
        assert_eq!(cache.by_user.get("kept").unwrap().len(), 1);
    }
}
