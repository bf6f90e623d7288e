//! protojson conventions shared by every message: 64-bit integers as JSON strings (numbers
//! accepted on input), enums by full name (numbers accepted on input), timestamps as RFC 3339 UTC
//! with `Z`, and the engine-to-JSON mapping of the messages used by more than one method; and how
//! an answer becomes a JSON response ([`json_response`], [`JsonAnswer`]).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use latchkey_engine as engine;

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

/// How an answer is written as JSON: by serde, unless the type knows a cheaper way to write
/// exactly the same bytes (the `{details}` answer of every state command does).
pub trait JsonAnswer: Serialize {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, self)
    }
}

/// Error answers carry no value.
impl JsonAnswer for () {}

/// A JSON answer (`application/json`), written into a buffer big enough for the usual
/// `{details}` answer at once (axum's `Json` starts at 128 bytes and grows).
pub fn json_response<T: JsonAnswer>(value: &T) -> Result<Response, engine::Error> {
    let mut body = Vec::with_capacity(256);
    value.write_json(&mut body).map_err(|e| {
        engine::Error::with(
            engine::ErrorId::Internal,
            format!("encoding the answer: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

pub fn parse_timestamp(field: &str, text: &str) -> Result<DateTime<Utc>, engine::Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| engine::Error::invalid(format!("{field} must be an RFC 3339 timestamp")))
}

/// `u64` that is a string on output and a string or number on input.
pub mod u64_string {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
            Null(()),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => t
                .parse()
                .map_err(|_| de::Error::custom(format!("invalid uint64 {t:?}"))),
            Either::Null(()) => Ok(0),
        }
    }
}

/// A protobuf enum: names indexed by number.
pub trait ProtoEnum: Sized + Copy {
    const NAMES: &'static [&'static str];
    fn from_number(n: i32) -> Option<Self>;
    fn number(self) -> i32;
}

/// Deserializes a proto enum from its name or its number.
pub fn enum_from<'de, D: Deserializer<'de>, E: ProtoEnum>(d: D) -> Result<E, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(i32),
        Name(String),
    }
    let n = match Either::deserialize(d)? {
        Either::Number(n) => n,
        Either::Name(name) => E::NAMES
            .iter()
            .position(|candidate| *candidate == name)
            .map(|i| i as i32)
            .ok_or_else(|| de::Error::custom(format!("unknown enum value {name:?}")))?,
    };
    E::from_number(n).ok_or_else(|| de::Error::custom(format!("unknown enum number {n}")))
}

pub fn enum_name<E: ProtoEnum>(value: E) -> &'static str {
    E::NAMES.get(value.number() as usize).copied().unwrap_or("")
}

macro_rules! proto_enum {
    ($name:ident { $($variant:ident = $n:literal => $text:literal,)* }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name { #[default] $($variant,)* }
        impl ProtoEnum for $name {
            const NAMES: &'static [&'static str] = &[$($text,)*];
            fn from_number(n: i32) -> Option<Self> {
                match n { $($n => Some($name::$variant),)* _ => None }
            }
            fn number(self) -> i32 { match self { $($name::$variant => $n,)* } }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(enum_name(*self))
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                enum_from(d)
            }
        }
    };
}

proto_enum!(UserStateJson {
    Unspecified = 0 => "USER_STATE_UNSPECIFIED",
    Active = 1 => "USER_STATE_ACTIVE",
    Inactive = 2 => "USER_STATE_INACTIVE",
    Deleted = 3 => "USER_STATE_DELETED",
    Locked = 4 => "USER_STATE_LOCKED",
    Initial = 5 => "USER_STATE_INITIAL",
});

proto_enum!(GenderJson {
    Unspecified = 0 => "GENDER_UNSPECIFIED",
    Female = 1 => "GENDER_FEMALE",
    Male = 2 => "GENDER_MALE",
    Diverse = 3 => "GENDER_DIVERSE",
});

proto_enum!(TypeJson {
    Unspecified = 0 => "TYPE_UNSPECIFIED",
    Human = 1 => "TYPE_HUMAN",
    Machine = 2 => "TYPE_MACHINE",
});

proto_enum!(AccessTokenTypeJson {
    Bearer = 0 => "ACCESS_TOKEN_TYPE_BEARER",
    Jwt = 1 => "ACCESS_TOKEN_TYPE_JWT",
});

proto_enum!(TextQueryMethodJson {
    Equals = 0 => "TEXT_QUERY_METHOD_EQUALS",
    EqualsIgnoreCase = 1 => "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE",
    StartsWith = 2 => "TEXT_QUERY_METHOD_STARTS_WITH",
    StartsWithIgnoreCase = 3 => "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE",
    Contains = 4 => "TEXT_QUERY_METHOD_CONTAINS",
    ContainsIgnoreCase = 5 => "TEXT_QUERY_METHOD_CONTAINS_IGNORE_CASE",
    EndsWith = 6 => "TEXT_QUERY_METHOD_ENDS_WITH",
    EndsWithIgnoreCase = 7 => "TEXT_QUERY_METHOD_ENDS_WITH_IGNORE_CASE",
});

proto_enum!(UserFieldNameJson {
    Unspecified = 0 => "USER_FIELD_NAME_UNSPECIFIED",
    UserName = 1 => "USER_FIELD_NAME_USER_NAME",
    FirstName = 2 => "USER_FIELD_NAME_FIRST_NAME",
    LastName = 3 => "USER_FIELD_NAME_LAST_NAME",
    NickName = 4 => "USER_FIELD_NAME_NICK_NAME",
    DisplayName = 5 => "USER_FIELD_NAME_DISPLAY_NAME",
    Email = 6 => "USER_FIELD_NAME_EMAIL",
    State = 7 => "USER_FIELD_NAME_STATE",
    Type = 8 => "USER_FIELD_NAME_TYPE",
    CreationDate = 9 => "USER_FIELD_NAME_CREATION_DATE",
});

impl From<engine::UserState> for UserStateJson {
    fn from(state: engine::UserState) -> Self {
        match state {
            engine::UserState::Active => UserStateJson::Active,
            engine::UserState::Inactive => UserStateJson::Inactive,
            engine::UserState::Deleted => UserStateJson::Deleted,
            engine::UserState::Locked => UserStateJson::Locked,
            engine::UserState::Initial => UserStateJson::Initial,
        }
    }
}

impl From<GenderJson> for engine::Gender {
    fn from(g: GenderJson) -> Self {
        match g {
            GenderJson::Unspecified => engine::Gender::Unspecified,
            GenderJson::Female => engine::Gender::Female,
            GenderJson::Male => engine::Gender::Male,
            GenderJson::Diverse => engine::Gender::Diverse,
        }
    }
}

impl From<engine::Gender> for GenderJson {
    fn from(g: engine::Gender) -> Self {
        match g {
            engine::Gender::Unspecified => GenderJson::Unspecified,
            engine::Gender::Female => GenderJson::Female,
            engine::Gender::Male => GenderJson::Male,
            engine::Gender::Diverse => GenderJson::Diverse,
        }
    }
}

/// `zitadel.object.v2.Details`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsJson {
    #[serde(with = "u64_string")]
    pub sequence: u64,
    pub change_date: String,
    pub resource_owner: String,
    pub creation_date: String,
}

impl From<engine::Details> for DetailsJson {
    fn from(d: engine::Details) -> Self {
        DetailsJson {
            sequence: d.sequence,
            change_date: timestamp(&d.change_date),
            resource_owner: d.resource_owner,
            creation_date: timestamp(&d.creation_date),
        }
    }
}

impl From<&engine::Details> for DetailsJson {
    fn from(d: &engine::Details) -> Self {
        d.clone().into()
    }
}

/// The response of every method that returns only `details`.
#[derive(Debug, Serialize)]
pub struct DetailsResponse {
    pub details: DetailsJson,
}

impl From<engine::Details> for DetailsResponse {
    fn from(d: engine::Details) -> Self {
        DetailsResponse { details: d.into() }
    }
}

/// The answer of every state command (Unlock among them), written by hand: serde's map
/// machinery escapes each key and goes through a formatter per field, ≈ 2,500 instructions for
/// this 150-byte answer. The bytes are serde's (a unit test compares them).
impl JsonAnswer for DetailsResponse {
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let d = &self.details;
        out.extend_from_slice(br#"{"details":{"sequence":""#);
        push_u64(out, d.sequence);
        out.extend_from_slice(br#"","changeDate":"#);
        serde_json::to_writer(&mut *out, &d.change_date)?;
        out.extend_from_slice(br#","resourceOwner":"#);
        serde_json::to_writer(&mut *out, &d.resource_owner)?;
        out.extend_from_slice(br#","creationDate":"#);
        serde_json::to_writer(&mut *out, &d.creation_date)?;
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
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

/// Requests that name one user: `{userId}` (the path's id wins on REST).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserIdRequest {
    #[serde(default, alias = "user_id")]
    pub user_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_by_name_or_number() {
        let by_name: UserStateJson = serde_json::from_str("\"USER_STATE_LOCKED\"").unwrap();
        let by_number: UserStateJson = serde_json::from_str("4").unwrap();
        assert_eq!(by_name, UserStateJson::Locked);
        assert_eq!(by_number, UserStateJson::Locked);
        assert_eq!(
            serde_json::to_string(&by_name).unwrap(),
            "\"USER_STATE_LOCKED\""
        );
        assert!(serde_json::from_str::<UserStateJson>("\"LOCKED\"").is_err());
        assert!(serde_json::from_str::<UserStateJson>("9").is_err());
    }

    #[test]
    fn sequences_are_strings() {
        let d = engine::Details {
            sequence: 3,
            change_date: DateTime::parse_from_rfc3339("2025-03-05T21:29:22.046Z")
                .unwrap()
                .with_timezone(&Utc),
            resource_owner: "o".into(),
            creation_date: DateTime::parse_from_rfc3339("2025-03-05T21:29:22Z")
                .unwrap()
                .with_timezone(&Utc),
        };
        let json = serde_json::to_value(DetailsJson::from(&d)).unwrap();
        assert_eq!(json["sequence"], "3");
        assert_eq!(json["changeDate"], "2025-03-05T21:29:22.046Z");
        assert_eq!(json["creationDate"], "2025-03-05T21:29:22Z");
        assert_eq!(json["resourceOwner"], "o");
    }

    #[test]
    fn the_details_answer_is_written_as_serde_writes_it() {
        for (sequence, owner) in [
            (0, "o"),
            (1, "117706827580047360"),
            (
                u64::MAX,
                "quote \" backslash \\ newline \n control \u{1} unicode é 🦀",
            ),
            (42, ""),
        ] {
            let at = DateTime::from_timestamp_micros(1_764_527_656_304_768).unwrap();
            let answer = DetailsResponse::from(engine::Details {
                sequence,
                change_date: at,
                resource_owner: owner.into(),
                creation_date: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            });
            let mut fast = Vec::new();
            answer.write_json(&mut fast).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&answer).unwrap()
            );
        }
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
