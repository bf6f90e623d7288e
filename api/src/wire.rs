//! What every message shares on the wire: `google.protobuf.Timestamp` in protojson form (RFC 3339
//! in UTC with `Z`, [`Timestamp`]), the engine-to-protobuf mapping of the messages and enums more
//! than one method uses, and how an answer becomes a JSON response ([`json_response`]).
//!
//! Every message is a generated protobuf type (`proto.rs`); its JSON form comes from the
//! generated protojson (pbjson) impls: lowerCamelCase names (snake_case accepted on input),
//! 64-bit integers as strings (numbers accepted), enums by name (numbers accepted), unknown fields
//! ignored, fields at their zero value left out of answers (the proto3 JSON mapping, as ZITADEL's
//! gateway and Connect write it).

use std::cell::RefCell;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use latchkey_engine as engine;

use crate::proto::zitadel::object::v2 as object;
use crate::proto::zitadel::user::v2 as user;

/// `google.protobuf.Timestamp`: seconds and nanoseconds since the Unix epoch on the binary
/// protocols, RFC 3339 in UTC with `Z` in JSON (pbjson's own type writes `+00:00`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(at: DateTime<Utc>) -> Self {
        Timestamp {
            seconds: at.timestamp(),
            // Below 2 s (a leap second at most), so it fits.
            nanos: at.timestamp_subsec_nanos() as i32,
        }
    }
}

impl Timestamp {
    /// The instant, if it is one chrono can represent.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.seconds, u32::try_from(self.nanos).ok()?)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = Vec::with_capacity(32);
        if push_rfc3339(&mut text, self.seconds, self.nanos) {
            if let Ok(text) = std::str::from_utf8(&text) {
                return serializer.serialize_str(text);
            }
        }
        let at = self
            .to_datetime()
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        serializer.serialize_str(&timestamp(&at))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc).into())
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 timestamp")))
    }
}

/// RFC 3339 in UTC with `Z` and as many fraction digits as needed (0, 3, 6 or 9): what
/// `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes, without going through `fmt` (it is in
/// every command's answer; chrono's formatter cost ≈ 750 instructions per timestamp).
pub fn timestamp(at: &DateTime<Utc>) -> String {
    let (date, time) = (at.date_naive(), at.time());
    let nanos = time.nanosecond();
    // Leap seconds and years beyond four digits are chrono's to write.
    if !(0..=9999).contains(&date.year()) || nanos >= 1_000_000_000 {
        return at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    }
    let mut out = String::with_capacity(30);
    push_digits(&mut out, date.year() as u32, 4);
    out.push('-');
    push_digits(&mut out, date.month(), 2);
    out.push('-');
    push_digits(&mut out, date.day(), 2);
    out.push('T');
    push_digits(&mut out, time.hour(), 2);
    out.push(':');
    push_digits(&mut out, time.minute(), 2);
    out.push(':');
    push_digits(&mut out, time.second(), 2);
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if digits > 0 {
        out.push('.');
        push_digits(&mut out, fraction, digits);
    }
    out.push('Z');
    out
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place) % 10) as u8;
        out.push(char::from(b'0' + digit));
    }
}

/// What [`timestamp`] writes, from the protobuf fields and straight into `out`, with no date
/// library in between: the civil date from the day number by Howard Hinnant's
/// `civil_from_days` (integer arithmetic), the time of day from the remainder. Every answer
/// carries one or two timestamps, and through chrono and serde's string escaping each cost
/// ≈ 1,000 instructions. `false`, with nothing written, for what only chrono writes: years
/// outside 0–9999 and nanos outside 0–999,999,999.
fn push_rfc3339(out: &mut Vec<u8>, seconds: i64, nanos: i32) -> bool {
    let Ok(nanos) = u32::try_from(nanos) else {
        return false;
    };
    if nanos >= 1_000_000_000 {
        return false;
    }
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if !(0..=9_999).contains(&year) {
        return false;
    }
    // All in range now: the casts below cannot lose anything. Two digits at a time from a
    // table, into a fixed buffer: "YYYY-MM-DDTHH:MM:SS" then the fraction and "Z".
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    let pair = |text: &mut [u8; 30], at: usize, value: u64| {
        let i = (value % 100) as usize * 2;
        text[at] = DIGIT_PAIRS[i];
        text[at + 1] = DIGIT_PAIRS[i + 1];
    };
    let (year, second_of_day) = (year as u64, second_of_day as u64);
    pair(&mut text, 0, year / 100);
    pair(&mut text, 2, year);
    pair(&mut text, 5, month as u64);
    pair(&mut text, 8, day as u64);
    pair(&mut text, 11, second_of_day / 3_600);
    pair(&mut text, 14, second_of_day / 60 % 60);
    pair(&mut text, 17, second_of_day % 60);
    let width = match nanos {
        0 => 0,
        n if n % 1_000_000 == 0 => 3,
        n if n % 1_000 == 0 => 6,
        _ => 9,
    };
    if width == 0 {
        out.extend_from_slice(&text[..19]);
    } else {
        // The nine digits of the nanoseconds, of which the first `width` are kept.
        let nanos = u64::from(nanos);
        text[20] = b'0' + (nanos / 100_000_000) as u8;
        pair(&mut text, 21, nanos / 1_000_000);
        pair(&mut text, 23, nanos / 10_000);
        pair(&mut text, 25, nanos / 100);
        pair(&mut text, 27, nanos);
        out.extend_from_slice(&text[..20 + width]);
    }
    out.push(b'Z');
    true
}

/// "00", "01", … "99": two decimal digits per lookup.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// A timestamp as a JSON string: written directly (it needs no escaping), else by serde.
pub(crate) fn push_json_timestamp(out: &mut Vec<u8>, at: &Timestamp) -> serde_json::Result<()> {
    out.push(b'"');
    if push_rfc3339(out, at.seconds, at.nanos) {
        out.push(b'"');
        return Ok(());
    }
    out.pop();
    serde_json::to_writer(&mut *out, at)
}

/// A JSON answer (`application/json`), written by `write` into this thread's scratch buffer
/// (1 KiB at first: a `{details}` answer and a user's, ≈ 800 bytes, fit without growing it).
/// A short answer (a command's `{details}`, ≈ 150 bytes) is copied out at its exact length:
/// `Bytes` takes an exact-length vector as it is, where one with room to spare costs it a
/// second allocation (its shared header). A longer one is handed over as it is (copying a
/// user's answer cost more than that allocation), and the thread starts a new buffer.
pub fn json_response(
    write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> Result<Response, engine::Error> {
    const FIRST: usize = 1024;
    const COPIED: usize = 256;
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(FIRST));
    }
    let body = SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        write(scratch)?;
        Ok(if scratch.len() <= COPIED {
            Bytes::copy_from_slice(scratch)
        } else {
            Bytes::from(std::mem::replace(scratch, Vec::with_capacity(FIRST)))
        })
    });
    let body = body.map_err(|e: serde_json::Error| {
        engine::Error::with(
            engine::ErrorId::Internal,
            format!("encoding the answer: {e}"),
        )
    })?;
    // Built directly: through `IntoResponse` the bytes get `application/octet-stream` first and
    // the tuple's header then replaces it, two header-map writes where one does.
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `zitadel.object.v2.Details` of an engine answer.
pub fn details(d: engine::Details) -> object::Details {
    object::Details {
        sequence: d.sequence,
        change_date: Some(d.change_date.into()),
        resource_owner: d.resource_owner,
        creation_date: Some(d.creation_date.into()),
    }
}

/// The `{details}` answer of every state command (Unlock among them), written by hand: serde's
/// map machinery escapes each key and goes through a formatter per field, ≈ 2,500 instructions
/// for this 150-byte answer. The bytes are the protojson impls' (a unit test compares them),
/// zero values left out as they leave them out.
pub fn write_details_answer(
    details: Option<&object::Details>,
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    let Some(d) = details else {
        out.extend_from_slice(b"{}");
        return Ok(());
    };
    out.extend_from_slice(br#"{"details":"#);
    push_details(out, d)?;
    out.push(b'}');
    Ok(())
}

/// A `zitadel.object.v2.Details` object, as the protojson impl writes it.
pub(crate) fn push_details(out: &mut Vec<u8>, d: &object::Details) -> serde_json::Result<()> {
    let mut fields = JsonObject::open(out);
    if d.sequence != 0 {
        fields.key(br#""sequence":""#);
        push_u64(fields.out, d.sequence);
        fields.out.push(b'"');
    }
    if let Some(at) = &d.change_date {
        fields.key(br#""changeDate":"#);
        push_json_timestamp(fields.out, at)?;
    }
    if !d.resource_owner.is_empty() {
        fields.key(br#""resourceOwner":"#);
        push_json_str(fields.out, &d.resource_owner)?;
    }
    if let Some(at) = &d.creation_date {
        fields.key(br#""creationDate":"#);
        push_json_timestamp(fields.out, at)?;
    }
    fields.close();
    Ok(())
}

/// A JSON object being written: [`JsonObject::key`] puts the comma before every key but the
/// first. Keys are given with their quotes and colon, as byte literals.
pub(crate) struct JsonObject<'a> {
    pub out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonObject<'a> {
    pub fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonObject { out, first: true }
    }

    pub fn key(&mut self, key: &[u8]) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.extend_from_slice(key);
    }

    pub fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON string: copied between quotes when nothing in it needs escaping (the usual id, name
/// or address), else written by serde_json, whose escaping the answers' other strings have.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if !needs_escaping(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s)
    }
}

/// Whether JSON needs any of `bytes` escaped: a control character, a quote or a backslash.
/// Checked sixteen bytes at a time, the last block padded with spaces, with no early exit
/// inside a block, which the compiler turns into vector compares: a byte-by-byte `all` cost
/// ≈ 12 instructions per byte, the largest share of writing a user (docs/performance.md).
pub(crate) fn needs_escaping(bytes: &[u8]) -> bool {
    fn any_special(block: &[u8; 16]) -> bool {
        block.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    }
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if block.try_into().is_ok_and(any_special) {
            return true;
        }
    }
    let rest = blocks.remainder();
    let mut last = [b' '; 16];
    last[..rest.len()].copy_from_slice(rest);
    any_special(&last)
}

pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A protobuf enum field's number as the enum, or InvalidArgument naming the field. (JSON
/// already refuses unknown names and numbers while parsing; binary messages carry any number.)
pub fn known<E: TryFrom<i32>>(field: &str, number: i32) -> Result<E, engine::Error> {
    E::try_from(number)
        .map_err(|_| engine::Error::invalid(format!("{field} has no value numbered {number}")))
}

impl From<engine::UserState> for user::UserState {
    fn from(state: engine::UserState) -> Self {
        match state {
            engine::UserState::Active => user::UserState::Active,
            engine::UserState::Inactive => user::UserState::Inactive,
            engine::UserState::Deleted => user::UserState::Deleted,
            engine::UserState::Locked => user::UserState::Locked,
            engine::UserState::Initial => user::UserState::Initial,
        }
    }
}

impl From<user::Gender> for engine::Gender {
    fn from(gender: user::Gender) -> Self {
        match gender {
            user::Gender::Unspecified => engine::Gender::Unspecified,
            user::Gender::Female => engine::Gender::Female,
            user::Gender::Male => engine::Gender::Male,
            user::Gender::Diverse => engine::Gender::Diverse,
        }
    }
}

impl From<engine::Gender> for user::Gender {
    fn from(gender: engine::Gender) -> Self {
        match gender {
            engine::Gender::Unspecified => user::Gender::Unspecified,
            engine::Gender::Female => user::Gender::Female,
            engine::Gender::Male => user::Gender::Male,
            engine::Gender::Diverse => user::Gender::Diverse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers written one after another on one thread share its scratch buffer: each body is
    /// exactly its own bytes, whether copied out (short) or handed over (long), and a long one
    /// leaves no trace in the next.
    #[tokio::test]
    async fn json_answers_on_one_thread_carry_only_their_own_bytes() {
        for len in [2, 256, 257, 5000, 3, 1024, 1] {
            let text = "x".repeat(len);
            let response = json_response(|out| {
                out.extend_from_slice(text.as_bytes());
                Ok(())
            })
            .unwrap();
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(body, text.as_bytes(), "{len}");
        }
    }

    /// The block-wise check finds every byte JSON escapes wherever it sits — first, last, in a
    /// full block or the padded rest — and nothing else, at every length up to three blocks.
    #[test]
    fn every_byte_that_needs_escaping_is_found_wherever_it_sits() {
        for len in 0..48 {
            let plain = vec![b'a'; len];
            assert!(!needs_escaping(&plain), "{len} plain bytes");
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = plain.clone();
                    bytes[at] = b;
                    let expected = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escaping(&bytes), expected, "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    /// The direct writer and chrono agree, over days spread from year 0 to 9999 (leap years,
    /// century rules, negative seconds before 1970) and every fraction width.
    #[test]
    fn timestamps_written_directly_match_chronos() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let (first, last) = (-62_167_219_200i64, 253_402_300_799i64); // 0000-01-01 .. 9999-12-31
        for case in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let seconds = first + (seed % (last - first + 1) as u64) as i64;
            let nanos = match case % 4 {
                0 => 0,
                1 => (seed % 1_000) as i32 * 1_000_000,
                2 => (seed % 1_000_000) as i32 * 1_000,
                _ => (seed % 1_000_000_000) as i32,
            };
            let mut direct = Vec::new();
            assert!(
                push_rfc3339(&mut direct, seconds, nanos),
                "{seconds} {nanos}"
            );
            let at = DateTime::from_timestamp(seconds, nanos as u32).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                timestamp(&at),
                "{seconds}"
            );
        }
        // Edges: the epoch, a leap day, the first and last instants written directly.
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (first, "0000-01-01T00:00:00Z"),
            (last, "9999-12-31T23:59:59Z"),
        ] {
            let mut direct = Vec::new();
            assert!(push_rfc3339(&mut direct, seconds, 0));
            assert_eq!(String::from_utf8(direct).unwrap(), text);
        }
        // Beyond: left to chrono, nothing written.
        let mut out = Vec::new();
        assert!(!push_rfc3339(&mut out, last + 1, 0));
        assert!(!push_rfc3339(&mut out, first - 1, 0));
        assert!(!push_rfc3339(&mut out, 0, -1));
        assert!(!push_rfc3339(&mut out, 0, 1_000_000_000));
        assert!(out.is_empty());
    }

    fn answer(sequence: u64, owner: &str) -> user::UnlockUserResponse {
        let at = DateTime::from_timestamp_micros(1_764_527_656_304_768).unwrap();
        user::UnlockUserResponse {
            details: Some(details(engine::Details {
                sequence,
                change_date: at,
                resource_owner: owner.into(),
                creation_date: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            })),
        }
    }

    #[test]
    fn the_details_answer_is_written_as_the_protojson_impls_write_it() {
        let mut cases: Vec<user::UnlockUserResponse> = [
            (0, "o"),
            (1, "117706827580047360"),
            (
                u64::MAX,
                "quote \" backslash \\ newline \n control \u{1} unicode é 🦀",
            ),
            (42, ""),
        ]
        .into_iter()
        .map(|(sequence, owner)| answer(sequence, owner))
        .collect();
        let mut no_dates = answer(7, "o");
        if let Some(d) = no_dates.details.as_mut() {
            d.change_date = None;
            d.creation_date = None;
        }
        cases.push(no_dates);
        cases.push(user::UnlockUserResponse { details: None });
        for answer in cases {
            let mut fast = Vec::new();
            write_details_answer(answer.details.as_ref(), &mut fast).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&answer).unwrap()
            );
        }
    }

    #[test]
    fn sequences_are_strings_and_timestamps_end_in_z() {
        let json = serde_json::to_value(answer(3, "o")).unwrap();
        assert_eq!(json["details"]["sequence"], "3");
        assert_eq!(json["details"]["changeDate"], "2025-11-30T18:34:16.304768Z");
        assert_eq!(json["details"]["creationDate"], "2023-11-14T22:13:20Z");
        assert_eq!(json["details"]["resourceOwner"], "o");
    }

    #[test]
    fn timestamps_parse_any_offset_and_refuse_garbage() {
        let at: Timestamp = serde_json::from_str("\"2025-03-05T22:29:22.046+01:00\"").unwrap();
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            "\"2025-03-05T21:29:22.046Z\""
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("7").is_err());
        let beyond = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(serde_json::to_string(&beyond).is_err());
    }

    #[test]
    fn enums_by_name_or_number_and_unknown_numbers_named() {
        let by_name: user::ListUsersRequest =
            serde_json::from_str(r#"{"sortingColumn":"USER_FIELD_NAME_EMAIL"}"#).unwrap();
        let by_number: user::ListUsersRequest =
            serde_json::from_str(r#"{"sortingColumn":6}"#).unwrap();
        assert_eq!(by_name.sorting_column, 6);
        assert_eq!(by_number.sorting_column, 6);
        assert!(serde_json::from_str::<user::ListUsersRequest>(r#"{"sortingColumn":99}"#).is_err());
        let err = known::<user::UserFieldName>("sortingColumn", 99).unwrap_err();
        assert_eq!(err.id, engine::ErrorId::InvalidArgument);
        assert!(err.message().contains("sortingColumn"), "{err}");
    }

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        let check = |at: DateTime<Utc>| {
            assert_eq!(
                timestamp(&at),
                at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
        };
        // Every fraction width, the epoch, the ends of the four-digit years, a leap day.
        for text in [
            "1970-01-01T00:00:00Z",
            "2025-03-05T21:29:22Z",
            "2025-03-05T21:29:22.046Z",
            "2025-03-05T21:29:22.046100Z",
            "2025-03-05T21:29:22.000000001Z",
            "2024-02-29T23:59:59.999999999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.5Z",
        ] {
            check(
                DateTime::parse_from_rfc3339(text)
                    .unwrap()
                    .with_timezone(&Utc),
            );
        }
        // Beyond four digits: chrono's own form.
        check(DateTime::from_timestamp(253_402_300_800, 0).unwrap());
        // A spread of microsecond timestamps, as the engine records them.
        let mut x: u64 = 0x5EED;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let micros = (x % 8_000_000_000_000_000) as i64;
            check(DateTime::from_timestamp_micros(micros).unwrap());
        }
    }
}
