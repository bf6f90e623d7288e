//! Callers resolved from tokens, kept in memory so authentication never reads sled on an async
//! worker. That matters beyond speed: once batches are in use, every sled read takes a global
//! lock that is held while a batch is applied to sled (by the log's checkpoint thread), so a read
//! on a tokio worker can stall the whole server behind it (measured, when the group-commit writer
//! still applied to sled: open-loop p99 in the hundreds of ms).
//!
//! Correctness: entries are filled only from the owning user's actor state (a staged read, so
//! durable), and the actor invalidates its user's entries on every change it commits. A fill
//! that raced an invalidation is refused by a generation counter, bumped by every invalidation
//! and checked under the same lock — so a stale caller can never be cached.
//!
//! Memory: the counter is one for the whole cache, not one per user, so nothing is kept for a
//! user without cached tokens; `by_user` holds exactly the users whose tokens are cached, and an
//! invalidation removes the user's entry with its tokens. The price is that a fill racing a change
//! of *any* machine user is refused too; that request is still answered (from the actor), only not
//! cached, and the next one fills.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::DashMap;

use crate::access::Caller;
use crate::time::Micros;

/// SHA-256 of a token: the cache key, with no allocation per request.
pub(crate) type TokenHash = [u8; 32];

#[derive(Clone)]
pub(crate) struct CachedCaller {
    pub caller: Arc<Caller>,
    pub expires: Option<Micros>,
}

#[derive(Default)]
pub(crate) struct AuthCache {
    callers: DashMap<TokenHash, CachedCaller>,
    /// The cached tokens of each user, for invalidation.
    by_user: DashMap<String, Vec<TokenHash>>,
    /// Bumped by every invalidation; fills and invalidations take it in turn.
    generation: Mutex<u64>,
}

impl AuthCache {
    pub fn get(&self, token_hash: &TokenHash) -> Option<CachedCaller> {
        self.callers.get(token_hash).map(|c| c.clone())
    }

    /// Read before asking the actor; pass to [`AuthCache::fill`].
    pub fn generation(&self) -> u64 {
        *self.lock_generation()
    }

    /// The generation's lock; a panic under it cannot leave it half-changed (it is one number).
    fn lock_generation(&self) -> MutexGuard<'_, u64> {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches `entry` unless a user changed since `generation` was read.
    pub fn fill(&self, token_hash: TokenHash, user_id: &str, generation: u64, entry: CachedCaller) {
        let current = self.lock_generation();
        if *current == generation {
            self.callers.insert(token_hash, entry);
            let mut hashes = self.by_user.entry(user_id.to_owned()).or_default();
            if !hashes.contains(&token_hash) {
                hashes.push(token_hash);
            }
        }
    }

    /// Called by a machine user's actor whenever it commits a change to that user. Always bumps
    /// the generation (even with nothing cached), so a fill already under way is refused.
    pub fn invalidate(&self, user_id: &str) {
        let hashes = {
            let mut generation = self.lock_generation();
            *generation += 1;
            self.by_user.remove(user_id).map(|(_, hashes)| hashes)
        };
        for hash in hashes.into_iter().flatten() {
            self.callers.remove(&hash);
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
        let seen = cache.generation();
        cache.fill([1; 32], "u", seen, entry());
        assert!(cache.get(&[1; 32]).is_some());

        let before_change = cache.generation();
        cache.invalidate("u"); // the actor committed a change meanwhile
        assert!(cache.get(&[1; 32]).is_none());
        cache.fill([1; 32], "u", before_change, entry());
        assert!(cache.get(&[1; 32]).is_none(), "stale fill must not land");

        // a change to a user with nothing cached still refuses a fill that started before it
        let started = cache.generation();
        cache.invalidate("v");
        cache.fill([2; 32], "v", started, entry());
        assert!(cache.get(&[2; 32]).is_none());

        let fresh = cache.generation();
        cache.fill([1; 32], "u", fresh, entry());
        assert!(cache.get(&[1; 32]).is_some());
    }

    #[test]
    fn changes_of_users_leave_nothing_behind() {
        let cache = AuthCache::default();
        for round in 0..1000u32 {
            let user = format!("machine-{round}");
            cache.invalidate(&user);
            let seen = cache.generation();
            cache.fill(
                round.to_be_bytes().repeat(8).try_into().unwrap(),
                &user,
                seen,
                entry(),
            );
            cache.invalidate(&user);
        }
        assert_eq!(
            cache.users(),
            0,
            "one entry per changed user would stay forever"
        );
        assert!(cache.callers.is_empty());
        // A user whose tokens are cached is kept, once, however often they are filled.
        let seen = cache.generation();
        cache.fill([7; 32], "kept", seen, entry());
        cache.fill([7; 32], "kept", seen, entry());
        assert_eq!(cache.users(), 1);
        assert_eq!(cache.by_user.get("kept").unwrap().len(), 1);
    }
}
