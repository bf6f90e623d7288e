//! Password hash verification on a bounded pool.
//!
//! Argon2id at OWASP's settings costs ≈ 19 MiB and tens of milliseconds per verification, so an
//! attacker who can make the server verify as many hashes as it receives requests controls its
//! memory and CPU. Here verifications run on `threads` threads of their own (never on the async
//! workers), at most `queue` more wait for a turn, and a check beyond that is refused at once
//! (PASSWORD-CHECKS-BUSY, 429) instead of queueing without bound. A locked user's checks never get
//! here: they are refused before any hash is touched (`user/checks.rs`).
//!
//! The threads run at a lower CPU priority (nice 10 on Linux) than the rest of the server: when a
//! wave of wrong passwords keeps them busy, every other command — an administrator's unlock, other
//! users' reads and writes — still gets the cores first, and the hashes take what is left. An idle
//! server gives them the whole machine, so logins are as fast as the hash allows.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use tokio::sync::oneshot;

use crate::error::{Error, ErrorId};

/// How much lower the verification threads' priority is (Linux nice value).
const NICE: i32 = 10;

/// How a verification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verified {
    Match,
    Mismatch,
    /// The hash could not be used (corrupt, unknown scheme): an internal error, not a wrong
    /// password.
    Failed(String),
}

struct Job {
    hash: String,
    password: String,
    reply: oneshot::Sender<Verified>,
}

pub(crate) struct Verifier {
    jobs: mpsc::Sender<Job>,
    /// Verifications accepted and not finished (running or waiting).
    pending: Arc<AtomicUsize>,
    /// Most pending at once: the threads plus the queue.
    bound: usize,
    /// Verifications done (tests and metrics count them).
    done: Arc<AtomicU64>,
}

impl Verifier {
    /// Starts `threads` verification threads; they end when the verifier is dropped.
    pub fn new(threads: usize, queue: usize) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let pending = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let threads = threads.max(1);
        for n in 0..threads {
            let (receiver, pending, done) = (receiver.clone(), pending.clone(), done.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("lk-verify-{n}"))
                .spawn(move || work(&receiver, &pending, &done));
            if let Err(e) = spawned {
                tracing::error!("cannot start a password verification thread: {e}");
            }
        }
        Verifier {
            jobs,
            pending,
            bound: threads + queue,
            done,
        }
    }

    /// Verifications completed so far.
    pub fn verifications(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Hands `password` and `hash` to a verification thread; the future answers the outcome.
    /// Refused at once when the threads and the queue are full.
    pub fn start(
        &self,
        hash: String,
        password: String,
    ) -> Result<impl Future<Output = Verified> + Send + 'static, Error> {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.bound {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ErrorId::ChecksBusy.into());
        }
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            hash,
            password,
            reply,
        };
        if self.jobs.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(ErrorId::PasswordCheckInternal.into());
        }
        Ok(async move {
            outcome
                .await
                .unwrap_or_else(|_| Verified::Failed("the verification thread stopped".into()))
        })
    }
}

/// A verification thread: takes jobs until the verifier is gone.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>, pending: &AtomicUsize, done: &AtomicU64) {
    lower_priority();
    loop {
        // One thread waits in `recv` at a time; the others wait for the lock, which is the same.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        let outcome = std::panic::catch_unwind(|| verify(&job.hash, &job.password))
            .unwrap_or_else(|_| Verified::Failed("the verification panicked".into()));
        done.fetch_add(1, Ordering::Relaxed);
        pending.fetch_sub(1, Ordering::AcqRel);
        let _ = job.reply.send(outcome);
    }
}

/// Lowers the calling thread's CPU priority by [`NICE`] (Linux: the nice value is per thread).
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: two system calls about the calling thread; no memory is passed or kept.
    let result = unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, NICE)
    };
    if result != 0 {
        tracing::warn!("cannot lower the password verification threads' priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

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
        // A hash slow enough (bcrypt cost 12: ≈ 0.2 s) that the first verification is still
        // running when the fourth check comes, microseconds later: with a cheap one the thread
        // could finish it first and make room.
        let hash = bcrypt::hash("pw", 12).unwrap();
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

    /// The verification threads yield the cores to the rest of the server.
    #[cfg(target_os = "linux")]
    #[test]
    fn verification_threads_run_at_a_lower_priority() {
        let verifier = Verifier::new(1, 0);
        let niced = || -> Option<i64> {
            for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.trim() == "lk-verify-0" {
                    let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                    // After "(comm)": state is field 3; nice is field 19.
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    return fields.get(16)?.parse().ok();
                }
            }
            None
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = niced();
        while seen != Some(i64::from(NICE)) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            seen = niced();
        }
        assert_eq!(seen, Some(i64::from(NICE)));
        drop(verifier);
    }
}
