//! A user's log in its partition's stream: the fenced append and the read of the last message.
//!
//! Every append carries two headers the stream's leader checks before it proposes the message to
//! its replicas:
//!
//! - `Nats-Expected-Last-Subject-Sequence: L` — the stream sequence of the user's last message as
//!   the writer saw it (0: the user has none). If another append to the user got there first, the
//!   leader refuses this one (10071, or 10164 while the other is still in flight), so of any
//!   number of writers that read the same state exactly one is accepted. This is the fence: a
//!   node that lost the user — paused past its lease, cut off, or simply wrong about ownership —
//!   cannot write it, whatever it believes. `tests/fence.rs` checks it on the pinned server.
//! - `Nats-Msg-Id: <request id>` — a retry of an append whose acknowledgement was lost comes back
//!   as a duplicate of the first (with the first's sequence) instead of being applied twice,
//!   within the stream's duplicate window (`partitions::DUPLICATE_WINDOW`).
//!
//! An append is acknowledged only once a majority of the stream's replicas holds it. Until its
//! deadline, [`UserLog::append`] retries what is transient — no acknowledgement, no leader yet
//! (no responders), a new leader still applying its log (10163), the same id still in flight
//! (10158) — always with the same id and expectation, so whatever happened, at most one copy
//! exists. At the deadline one last attempt is made (a process frozen past its deadline learns
//! what became of its append instead of giving up on an answer it has not read); if that too
//! gets no answer, the outcome is [`Error::OutcomeUnknown`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::partitions::Layout;
use crate::Error;

/// How long one attempt waits for its acknowledgement before it is sent again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before retrying a transient refusal.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long an append keeps trying, past its deadline, to learn what became of it.
const SETTLE_GRACE: Duration = Duration::from_secs(2);

/// JetStream's error codes this module tells apart.
mod code {
    /// "wrong last sequence": the subject's last message is not the expected one.
    pub const WRONG_LAST_SEQUENCE: u64 = 10071;
    /// "duplicate message id is in process": the same request id is being appended right now.
    pub const DUPLICATE_IN_PROCESS: u64 = 10158;
    /// "expected last sequence per subject temporarily not ready": a new leader still applies
    /// its log.
    pub const NOT_READY: u64 = 10163;
    /// "wrong last sequence" for a subject with an append in flight (constant text).
    pub const WRONG_LAST_SEQUENCE_IN_FLIGHT: u64 = 10164;
}

/// An acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The message's stream sequence: the next append's expectation.
    pub sequence: u64,
    /// True when the request id had been appended before: this is that append's sequence, and
    /// nothing new was written.
    pub duplicate: bool,
}

/// The last message of a user's subject.
#[derive(Debug, Clone)]
pub struct Last {
    pub sequence: u64,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// The users' logs of one cluster, through one NATS connection.
#[derive(Clone)]
pub struct UserLog {
    js: jetstream::Context,
    layout: Layout,
    incarnation: Arc<str>,
    /// Appends this handle (and its clones) has made: the tail of their request ids.
    appends: Arc<AtomicU64>,
}

impl UserLog {
    pub fn new(client: async_nats::Client, layout: Layout) -> Self {
        let js = jetstream::context::ContextBuilder::new()
            .timeout(ATTEMPT_TIMEOUT)
            .build(client);
        UserLog {
            js,
            layout,
            incarnation: incarnation().into(),
            appends: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A request id no other append has used: `<what>/<incarnation>/<count>`. One per logical
    /// append, kept across its retries. The stream answers an append whose id it holds already
    /// as a duplicate of that one, *without writing it*: an id used again for a different append
    /// — by a node restarted under its name, or by this node claiming a user afresh under the
    /// same epoch — would be acknowledged and lost. The incarnation tells this handle from any
    /// other, in this process or one before it; the count tells its appends apart.
    pub fn request_id(&self, what: &str) -> String {
        let n = self.appends.fetch_add(1, Ordering::Relaxed);
        format!("{what}/{}/{n:x}", self.incarnation)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Appends `payload` (with `headers`) to `user_id`'s log if its last message is still the one
    /// at `expected` (0: none), under `request_id`; retries transient failures until `deadline`.
    pub async fn append(
        &self,
        user_id: &str,
        expected: u64,
        request_id: &str,
        headers: &HeaderMap,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<Appended, Error> {
        let subject = self.layout.user_subject(user_id);
        // Set once the deadline has passed: the end of the last attempts.
        let mut settling: Option<Instant> = None;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let message = PublishMessage::build()
                .headers(headers.clone())
                .payload(payload.clone())
                .message_id(request_id)
                .expected_last_subject_sequence(expected);
            let outcome = match self.js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ack) => {
                    return Ok(Appended {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    })
                }
                Err(e) => match final_error(&e, &subject, expected) {
                    // After an earlier attempt of this id, a refusal may be of our own append:
                    // a stream of one replica checks the expectation before the request id,
                    // so it refuses the retry of an append that landed instead of answering it
                    // as a duplicate; and an append "in flight" may be that earlier attempt.
                    Some(Error::Fenced { code: c, .. })
                        if attempts > 1 && c == code::WRONG_LAST_SEQUENCE_IN_FLIGHT => {}
                    Some(fenced @ Error::Fenced { .. }) if attempts > 1 => {
                        return match self.landed(user_id, &subject, expected, request_id).await {
                            Ok(Some(appended)) => Ok(appended),
                            Ok(None) => Err(fenced),
                            Err(_) => Err(Error::OutcomeUnknown { subject }),
                        };
                    }
                    Some(final_error) => return Err(final_error),
                    None => tracing::debug!(%subject, attempts, "append not acknowledged: {e}"),
                },
            }
            let now = Instant::now();
            match settling {
                Some(until) if now >= until => return Err(Error::OutcomeUnknown { subject }),
                Some(_) => {}
                // The deadline passed with the outcome unknown — perhaps while this process was
                // frozen, its answer still unread, its connection dropped by the server. A few
                // more attempts under the same id (while the client reconnects) settle it: a
                // duplicate if the append landed, fenced if another write came first, written
                // now if neither.
                None if now + RETRY_PAUSE >= deadline => settling = Some(now + SETTLE_GRACE),
                None => {}
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The stream of `user_id`'s partition (no info asked: one request less).
    async fn stream_of(&self, user_id: &str) -> Result<jetstream::stream::Stream<()>, Error> {
        let p = self.layout.partition_of(user_id);
        self.js
            .get_stream_no_info(Layout::stream_name(p))
            .await
            .map_err(Error::nats)
    }

    /// Whether the append `request_id`, which expected `expected`, is in the log: it is if the
    /// subject's first message after `expected` carries that id (any other write would have
    /// been refused until that one came first).
    async fn landed(
        &self,
        user_id: &str,
        subject: &str,
        expected: u64,
        request_id: &str,
    ) -> Result<Option<Appended>, Error> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self
            .stream_of(user_id)
            .await?
            .get_first_raw_message_by_subject(subject, expected + 1)
            .await
        {
            Ok(message) => {
                let ours = message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .is_some_and(|id| id.as_str() == request_id);
                Ok(ours.then_some(Appended {
                    sequence: message.sequence,
                    duplicate: true,
                }))
            }
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(Error::nats(e)),
        }
    }

    /// The last message of `user_id`'s log, read from its stream's leader; `None` when the user
    /// has none. A server that was paused may still answer as the leader it was, from older
    /// state, so a caller that writes next relies on the fence, not on this read being current.
    pub async fn last(&self, user_id: &str) -> Result<Option<Last>, Error> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        match self
            .stream_of(user_id)
            .await?
            .get_last_raw_message_by_subject(&self.layout.user_subject(user_id))
            .await
        {
            Ok(message) => Ok(Some(Last {
                sequence: message.sequence,
                headers: message.headers,
                payload: message.payload,
            })),
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(e) => Err(Error::nats(e)),
        }
    }
}

/// A fresh incarnation: the clock's nanoseconds, the process id and a count of the handles this
/// process made, in hex.
fn incarnation() -> String {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let made = MADE.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{made:x}", std::process::id())
}

/// The header of a claim record: `<node>/<epoch>`.
pub const CLAIM_HEADER: &str = "Lk-Claim";

/// The header naming who wrote a record that is not a claim: `<node>/<epoch>`.
pub const WRITER_HEADER: &str = "Lk-Writer";

/// The epoch a record was written under, from its claim or writer header.
pub fn epoch_of(headers: &HeaderMap) -> Option<u64> {
    let mark = headers
        .get(CLAIM_HEADER)
        .or_else(|| headers.get(WRITER_HEADER))?;
    mark.as_str().rsplit_once('/')?.1.parse().ok()
}

/// A node's claim of a user under a partition epoch.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The claim record's sequence: the expectation of the claimant's next append.
    pub sequence: u64,
    /// The user's last record before the claim (`None`: the user had none, or the claim had
    /// been made already and was found as the last record).
    pub previous: Option<Last>,
}

impl UserLog {
    /// Claims `user_id` for `node` under `epoch`: appends a claim record after the user's last
    /// record. From its acknowledgement on, any append of an earlier owner — which expects a
    /// sequence before the claim — is refused by the stream, so a new owner calls this on its
    /// first touch of a user and before serving it.
    ///
    /// The last record is read from the stream's leader; if that read was stale (a woken
    /// leader answering from its old state) or another write landed in between, the claim's
    /// expectation is wrong, it is fenced, and the read is made again — until `deadline`.
    /// A claim already made by this node under this epoch is found and returned as it is.
    ///
    /// A last record written under a newer epoch (its claim or writer header) refuses the claim
    /// with [`Error::Superseded`]: epochs of a user never go back. The check and the append are
    /// one step, since the append expects exactly the record that was checked.
    pub async fn claim(
        &self,
        user_id: &str,
        node: &str,
        epoch: u64,
        deadline: Instant,
    ) -> Result<Claimed, Error> {
        let mark = format!("{node}/{epoch}");
        let mut headers = HeaderMap::new();
        headers.insert(CLAIM_HEADER, mark.as_str());
        let request_id = self.request_id(&format!("claim/{mark}"));
        loop {
            let previous = self.last(user_id).await?;
            if let Some(last) = &previous {
                let claimed = last.headers.get(CLAIM_HEADER).map(|v| v.as_str());
                if claimed == Some(mark.as_str()) {
                    return Ok(Claimed {
                        sequence: last.sequence,
                        previous: None,
                    });
                }
                if let Some(newer) = epoch_of(&last.headers).filter(|&e| e > epoch) {
                    return Err(Error::Superseded {
                        subject: self.layout.user_subject(user_id),
                        epoch,
                        newer,
                    });
                }
            }
            let expected = previous.as_ref().map_or(0, |last| last.sequence);
            match self
                .append(
                    user_id,
                    expected,
                    &request_id,
                    &headers,
                    Bytes::new(),
                    deadline,
                )
                .await
            {
                Ok(appended) => {
                    return Ok(Claimed {
                        sequence: appended.sequence,
                        previous,
                    })
                }
                // Another write landed since the read: read again at once.
                Err(Error::Fenced { .. }) if Instant::now() < deadline => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One message of a partition's stream, as [`UserLog::scan`] reads it back.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub subject: String,
    pub sequence: u64,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl UserLog {
    /// Every message of partition `p`'s stream up to its last at the time of the call, in order
    /// (an audit's view of the log: what the replicas agreed on, whoever wrote it).
    pub async fn scan(&self, p: u32) -> Result<Vec<Scanned>, Error> {
        use futures::StreamExt;
        let mut stream = self
            .js
            .get_stream(Layout::stream_name(p))
            .await
            .map_err(Error::nats)?;
        let last = stream
            .info()
            .await
            .map_err(Error::nats)?
            .state
            .last_sequence;
        let mut scanned = Vec::new();
        if last == 0 {
            return Ok(scanned);
        }
        let mut messages = crate::partitions::read_from(&stream, 1).await?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(Error::nats)?;
            let sequence = message.info().map_err(Error::nats)?.stream_sequence;
            scanned.push(Scanned {
                subject: message.subject.to_string(),
                sequence,
                headers: message.headers.clone().unwrap_or_default(),
                payload: message.payload.clone(),
            });
            if sequence >= last {
                break;
            }
        }
        Ok(scanned)
    }
}

/// What a failed attempt means for the append: `None` when it is transient and worth another
/// attempt with the same id, else the append's error.
fn final_error(
    e: &jetstream::context::PublishError,
    subject: &str,
    expected: u64,
) -> Option<Error> {
    match (e.kind(), jetstream_code(e)) {
        (_, Some(c @ (code::WRONG_LAST_SEQUENCE | code::WRONG_LAST_SEQUENCE_IN_FLIGHT))) => {
            Some(Error::Fenced {
                subject: subject.to_owned(),
                expected,
                code: c,
            })
        }
        (_, Some(code::NOT_READY | code::DUPLICATE_IN_PROCESS)) => None,
        (
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound,
            _,
        ) => None,
        _ => Some(Error::nats(e)),
    }
}

/// The JetStream error code behind a publish error, if the server sent one.
fn jetstream_code(e: &jetstream::context::PublishError) -> Option<u64> {
    std::error::Error::source(e)?
        .downcast_ref::<jetstream::Error>()
        .map(|e| e.error_code().0)
}
