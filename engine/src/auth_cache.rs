//! Callers resolved from tokens, kept in memory so authentication never reads sled on an async
//! worker. That matters beyond speed: once batches are in use, every sled read takes a global
//! lock that is held while a batch is applied to sled (by the log's checkpoint thread), so a read
//! on a tokio worker can stall the whole server behind it (measured, when the group-commit writer
//! still applied to sled: open-loop p99 in the hundreds of ms).
//!
//! Correctness: entries are filled only from the owning user's actor state (a staged read, so
//! durable), and the actor invalidates its user's entries on every change it commits. A fill
//! that raced an invalidation is refused by a per-user generation, checked under the same lock
//! the invalidation takes — so a stale caller can never be cached.

use std::sync::Arc;

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
struct UserEntries {
    generation: u64,
    hashes: Vec<TokenHash>,
}

#[derive(Default)]
pub(crate) struct AuthCache {
    callers: DashMap<TokenHash, CachedCaller>,
    by_user: DashMap<String, UserEntries>,
}

impl AuthCache {
    pub fn get(&self, token_hash: &TokenHash) -> Option<CachedCaller> {
        self.callers.get(token_hash).map(|c| c.clone())
    }

    /// Read before asking the actor; pass to [`AuthCache::fill`].
    pub fn generation(&self, user_id: &str) -> u64 {
        self.by_user.get(user_id).map_or(0, |u| u.generation)
    }

    /// Caches `entry` unless `user_id` changed since `generation` was read.
    pub fn fill(&self, token_hash: TokenHash, user_id: &str, generation: u64, entry: CachedCaller) {
        let mut user = self.by_user.entry(user_id.to_owned()).or_default();
        if user.generation == generation {
            self.callers.insert(token_hash, entry);
            user.hashes.push(token_hash);
        }
    }

    /// Called by a machine user's actor whenever it commits a change to that user. Always bumps
    /// the generation (even with nothing cached), so a fill already under way is refused.
    pub fn invalidate(&self, user_id: &str) {
        let hashes = {
            let mut user = self.by_user.entry(user_id.to_owned()).or_default();
            user.generation += 1;
            std::mem::take(&mut user.hashes)
        };
        for hash in hashes {
            self.callers.remove(&hash);
        }
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
        cache.fill([1; 32], "u", seen, entry());
        assert!(cache.get(&[1; 32]).is_some());

        let before_change = cache.generation("u");
        cache.invalidate("u"); // the actor committed a change meanwhile
        assert!(cache.get(&[1; 32]).is_none());
        cache.fill([1; 32], "u", before_change, entry());
        assert!(cache.get(&[1; 32]).is_none(), "stale fill must not land");

        // a change to a user with nothing cached still refuses a fill that started before it
        let started = cache.generation("v");
        cache.invalidate("v");
        cache.fill([2; 32], "v", started, entry());
        assert!(cache.get(&[2; 32]).is_none());

        let fresh = cache.generation("u");
        cache.fill([1; 32], "u", fresh, entry());
        assert!(cache.get(&[1; 32]).is_some());
    }
}
