//! Password hash verification on a bounded pool.
//!
//! Argon2id at OWASP's settings costs ≈ 19 MiB and tens of milliseconds per verification, so an
//! attacker who can make the server verify as many hashes as it receives requests controls its
//! memory and CPU. Here at most `threads` verifications run at once (on tokio's blocking pool,
//! never on the async workers), at most `queue` more wait for a turn, and a check beyond that is
//! refused at once (PASSWORD-CHECKS-BUSY, 429) instead of queueing without bound. A locked user's
//! checks never get here: they are refused before any hash is touched (`user/checks.rs`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use tokio::sync::Semaphore;

use crate::error::{Error, ErrorId};

/// How a verification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verified {
    Match,
    Mismatch,
    /// The hash could not be used (corrupt, unknown scheme): an internal error, not a wrong
    /// password.
    Failed(String),
}

pub(crate) struct Verifier {
    running: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
    /// Verifications done (tests and metrics count them).
    done: Arc<AtomicU64>,
}

impl Verifier {
    pub fn new(threads: usize, queue: usize) -> Self {
        Verifier {
            running: Arc::new(Semaphore::new(threads.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue,
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Verifications completed so far.
    pub fn verifications(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Starts verifying `password` against `hash`: the future runs the verification once a
    /// thread is free. Refused at once when the queue is full.
    pub fn start(
        &self,
        hash: String,
        password: String,
    ) -> Result<impl Future<Output = Verified> + Send + 'static, Error> {
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let running = self.running.clone();
        let threads = running.available_permits();
        if queued >= self.queue + threads.max(1) {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(ErrorId::ChecksBusy.into());
        }
        let (waiting, done) = (self.waiting.clone(), self.done.clone());
        Ok(async move {
            let permit = running.acquire_owned().await;
            waiting.fetch_sub(1, Ordering::AcqRel);
            let Ok(_permit) = permit else {
                return Verified::Failed("the verifier is closed".into());
            };
            let outcome = tokio::task::spawn_blocking(move || verify(&hash, &password))
                .await
                .unwrap_or_else(|e| Verified::Failed(format!("verification task failed: {e}")));
            done.fetch_add(1, Ordering::Relaxed);
            outcome
        })
    }
}

/// Verifies `password` against a PHC argon2 hash or a bcrypt hash (the two kinds Latchkey
/// stores). Blocking: seconds of CPU in the worst case.
pub(crate) fn verify(hash: &str, password: &str) -> Verified {
    if hash.starts_with("$argon2") {
        return match PasswordHash::new(hash) {
            Ok(parsed) => match Argon2::default().verify_password(password.as_bytes(), &parsed) {
                Ok(()) => Verified::Match,
                Err(argon2::password_hash::Error::Password) => Verified::Mismatch,
                Err(e) => Verified::Failed(format!("argon2: {e}")),
            },
            Err(e) => Verified::Failed(format!("stored argon2 hash: {e}")),
        };
    }
    match bcrypt::verify(password, hash) {
        Ok(true) => Verified::Match,
        Ok(false) => Verified::Mismatch,
        Err(e) => Verified::Failed(format!("bcrypt: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bcrypt's cost 4: the cheapest valid hash, so the tests do not spend seconds hashing.
    fn cheap_hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    #[tokio::test]
    async fn argon2_and_bcrypt_hashes_verify_and_garbage_is_an_internal_failure() {
        let argon = crate::password::hash_password("correct horse".into())
            .await
            .unwrap();
        assert_eq!(verify(&argon, "correct horse"), Verified::Match);
        assert_eq!(verify(&argon, "wrong"), Verified::Mismatch);
        let bcrypt = cheap_hash("s3cret");
        assert_eq!(verify(&bcrypt, "s3cret"), Verified::Match);
        assert_eq!(verify(&bcrypt, "S3cret"), Verified::Mismatch);
        assert!(matches!(verify("$argon2id$", "x"), Verified::Failed(_)));
        assert!(matches!(verify("plain", "x"), Verified::Failed(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beyond_the_threads_and_the_queue_checks_are_refused_at_once() {
        let verifier = Verifier::new(1, 2);
        let hash = cheap_hash("pw");
        // One running and two waiting fit; the fourth is refused before any work.
        let started: Vec<_> = (0..3)
            .map(|_| verifier.start(hash.clone(), "pw".into()).unwrap())
            .collect();
        let refused = verifier.start(hash.clone(), "pw".into()).err().unwrap();
        assert_eq!(refused.id, ErrorId::ChecksBusy);
        for outcome in futures::future::join_all(started).await {
            assert_eq!(outcome, Verified::Match);
        }
        assert_eq!(verifier.verifications(), 3);
        // With the queue drained, checks are taken again.
        assert_eq!(
            verifier.start(hash, "nope".into()).unwrap().await,
            Verified::Mismatch
        );
    }
}
