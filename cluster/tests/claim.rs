//! A new owner's claim against a zombie: the old owner keeps writing with the expectation it
//! holds, the new owner claims the user, and from the claim's acknowledgement on the stream
//! refuses every write of the old owner — checked on the pinned server, 3 servers, R3.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use latchkey_cluster::log::{Appended, UserLog, CLAIM_HEADER, WRITER_HEADER};
use latchkey_cluster::partitions::Layout;
use latchkey_cluster::testbed::Testbed;
use latchkey_cluster::Error;

const LAYOUT: Layout = Layout {
    partitions: 2,
    replicas: 3,
};

fn epoch_header(node: &str, epoch: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(WRITER_HEADER, format!("{node}/{epoch}").as_str());
    headers
}

/// A write of the epoch-2 owner, node `b`.
async fn write_b2(log: &UserLog, user: &str, expected: u64, id: &str) -> Result<Appended, Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let headers = epoch_header("b", 2);
    log.append(user, expected, id, &headers, Bytes::from("w"), deadline)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_claim_every_write_of_the_old_owner_is_fenced() {
    let testbed = Testbed::start(3).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(testbed.url(0)).await.unwrap());
    LAYOUT.ensure_streams(&js).await.unwrap();
    let old = UserLog::new(async_nats::connect(testbed.url(1)).await.unwrap(), LAYOUT);
    let new = UserLog::new(async_nats::connect(testbed.url(2)).await.unwrap(), LAYOUT);
    let deadline = || Instant::now() + Duration::from_secs(20);

    for round in 0..5 {
        let user = format!("user-{round}");
        // The old owner (epoch 1) writes the user as fast as it can, each write expecting its
        // previous one — as an actor that believes it still owns the user does.
        let (stop, claimed_at) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let writer = tokio::spawn({
            let (old, user, stop, claimed_at) =
                (old.clone(), user.clone(), stop.clone(), claimed_at.clone());
            async move {
                let (mut expected, mut written, mut fenced_after_claim) = (0, 0u64, 0u64);
                let headers = epoch_header("a", 1);
                for i in 0.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let id = format!("{user}/a-{i}");
                    match old
                        .append(&user, expected, &id, &headers, Bytes::from("w"), deadline())
                        .await
                    {
                        Ok(appended) => {
                            let claim = claimed_at.load(Ordering::Acquire);
                            assert!(
                                claim == 0 || appended.sequence < claim,
                                "written after the claim"
                            );
                            expected = appended.sequence;
                            written += 1;
                        }
                        Err(Error::Fenced { .. }) => {
                            if claimed_at.load(Ordering::Acquire) > 0 {
                                fenced_after_claim += 1;
                            }
                            // A zombie keeps trying with what it believes.
                        }
                        Err(e) => panic!("{e}"),
                    }
                    // An owner's writes come from its users' commands, not a tight loop.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                (written, fenced_after_claim)
            }
        });
        // Request ids are unique per stream (the duplicate window is the stream's), so each
        // carries the user.
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The new owner (epoch 2) claims the user while the old one writes (a claim loses to
        // every write that lands between its read and its append, and then reads again).
        let claim = new.claim(&user, "b", 2, deadline()).await.unwrap();
        claimed_at.store(claim.sequence, Ordering::Release);
        assert!(
            claim.previous.is_some(),
            "the old owner's writes came before the claim"
        );
        // The new owner writes after its claim.
        let mut expected = claim.sequence;
        for i in 0..3 {
            let id = format!("{user}/b-{i}");
            expected = write_b2(&new, &user, expected, &id).await.unwrap().sequence;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Release);
        let (written, fenced_after_claim) = writer.await.unwrap();
        assert!(written > 0);
        assert!(
            fenced_after_claim > 0,
            "the zombie's path was not exercised"
        );

        // The audit: the user's records in order — the old epoch's, one claim, the new epoch's;
        // nothing of epoch 1 after the claim.
        let p = LAYOUT.partition_of(&user);
        let subject = LAYOUT.user_subject(&user);
        let records: Vec<_> = new
            .scan(p)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.subject == subject)
            .collect();
        let kinds: Vec<String> = records
            .iter()
            .map(|m| {
                let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
                header(CLAIM_HEADER)
                    .map_or_else(|| header(WRITER_HEADER).unwrap(), |c| format!("claim {c}"))
            })
            .collect();
        let claim_at = kinds.iter().position(|k| k == "claim b/2").unwrap();
        assert_eq!(records[claim_at].sequence, claim.sequence);
        assert!(kinds[..claim_at].iter().all(|k| k == "a/1"), "{kinds:?}");
        assert_eq!(kinds[claim_at + 1..], ["b/2", "b/2", "b/2"], "{kinds:?}");
        println!("round {round}: {written} writes of epoch 1, then the claim; {fenced_after_claim} writes of epoch 1 fenced after it");

        // A claim under a newer epoch fences the epoch-2 owner in turn.
        let third = old.claim(&user, "a", 3, deadline()).await.unwrap();
        assert!(third.sequence > expected);
        let refused = write_b2(&new, &user, expected, &format!("{user}/b-late")).await;
        assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
        // And a claim under an older epoch than the user's last record is refused: a zombie
        // that wakes up believing it owns the partition cannot take the user back.
        let stale = new.claim(&user, "b", 2, deadline()).await;
        assert!(
            matches!(
                stale,
                Err(Error::Superseded {
                    epoch: 2,
                    newer: 3,
                    ..
                })
            ),
            "{stale:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_retried_after_a_lost_answer_is_made_once() {
    let testbed = Testbed::start(3).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(testbed.url(0)).await.unwrap());
    LAYOUT.ensure_streams(&js).await.unwrap();
    let log = UserLog::new(async_nats::connect(testbed.url(1)).await.unwrap(), LAYOUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = log.claim("u", "b", 7, deadline).await.unwrap();
    assert!(first.previous.is_none());
    let again = log.claim("u", "b", 7, deadline).await.unwrap();
    assert_eq!(again.sequence, first.sequence);
    let subject = LAYOUT.user_subject("u");
    let records = log.scan(LAYOUT.partition_of("u")).await.unwrap();
    assert_eq!(records.iter().filter(|m| m.subject == subject).count(), 1);
}

/// A node that claims a user again under the same epoch after writing it (its claim was
/// forgotten when a write failed) makes a new claim after its writes. The stream answers an
/// append whose request id it holds as a duplicate, without writing it: had the second claim
/// reused the first's id, it would come back with the first claim's sequence, the node would
/// load the user as of that claim, and its next writes — expecting sequences it had used
/// before — would be "acknowledged" as duplicates of old ones and lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_made_again_after_writes_is_a_new_claim_after_them() {
    let testbed = Testbed::start(3).await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(testbed.url(0)).await.unwrap());
    LAYOUT.ensure_streams(&js).await.unwrap();
    let log = UserLog::new(async_nats::connect(testbed.url(1)).await.unwrap(), LAYOUT);
    let deadline = || Instant::now() + Duration::from_secs(20);
    let first = log.claim("v", "b", 7, deadline()).await.unwrap();
    let headers = epoch_header("b", 7);
    let mut expected = first.sequence;
    for _ in 0..3 {
        let id = log.request_id("w/b/7");
        let written = log
            .append("v", expected, &id, &headers, Bytes::from("w"), deadline())
            .await
            .unwrap();
        assert!(!written.duplicate);
        expected = written.sequence;
    }
    let again = log.claim("v", "b", 7, deadline()).await.unwrap();
    assert!(again.sequence > expected, "{again:?} after {expected}");
    assert_eq!(again.previous.map(|last| last.sequence), Some(expected));
    // And the writes after it are new records too.
    let id = log.request_id("w/b/7");
    let next = log
        .append(
            "v",
            again.sequence,
            &id,
            &headers,
            Bytes::from("w"),
            deadline(),
        )
        .await
        .unwrap();
    assert!(!next.duplicate && next.sequence > again.sequence);
}
