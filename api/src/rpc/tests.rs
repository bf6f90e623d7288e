//! The table kept honest, and request decoding under random input (the part of the server a
//! fuzzer would target; a `cargo fuzz` target needs a nightly toolchain, which the build does not
//! use): every method's JSON and protobuf decoding, fed seeded random and mutated bytes, must
//! return Ok or an InvalidArgument-class error — never panic.

use std::collections::HashSet;

use super::*;
use latchkey_engine::Code;

struct Fuzz {
    seed: u64,
    cases: usize,
}

impl Fuzz {
    fn next(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    fn input(&mut self, seeds: &[&[u8]]) -> Vec<u8> {
        let mut bytes = seeds[(self.next() % seeds.len() as u64) as usize].to_vec();
        for _ in 0..(self.next() % 8) {
            let at = (self.next() as usize) % (bytes.len() + 1);
            match self.next() % 4 {
                0 if at < bytes.len() => bytes[at] = self.next() as u8,
                1 => bytes.insert(at, self.next() as u8),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
        }
        bytes
    }
}

const SEEDS: &[&[u8]] = &[
    br#"{"userId":"1234","profile":{"givenName":"A","familyName":"B"},"email":{"email":"a@b.c","isVerified":true}}"#,
    br#"{"query":{"offset":"1","limit":2,"asc":true},"queries":[{"stateQuery":{"state":"USER_STATE_LOCKED"}},{"orQuery":{"queries":[{"userNameQuery":{"userName":"a","method":1}}]}}]}"#,
    br#"{"organizationId":"o","machine":{"name":"m"},"human":{"profile":{}}}"#,
    br#"{"userId":"u","resource":{"organizationId":"o"},"roles":["ORG_OWNER"],"expirationDate":"2030-01-01T00:00:00Z"}"#,
    b"\x0a\x04abcd\x12\x02\x08\x01\x22\x03\x0a\x01x\x5a\x02\x0a\x00",
    b"\x0a\x01\x31",
    b"",
];

impl Visitor for Fuzz {
    fn visit<R: Routed>(&mut self) {
        for _ in 0..self.cases {
            let input = self.input(SEEDS);
            if let Err(e) = decode_json::<R::Request>(&input) {
                assert_eq!(e.code(), Code::InvalidArgument, "{}: {e}", R::INFO.method);
            }
            if let Err(e) = decode_proto::<R::Request>(&input) {
                assert_eq!(e.code(), Code::InvalidArgument, "{}: {e}", R::INFO.method);
            }
        }
    }
}

#[test]
fn request_decoding_never_panics_on_random_input() {
    for_each(&mut Fuzz {
        seed: 0x00DE_C0DE,
        cases: 2_000,
    });
}

fn streamed(pieces: &[&'static str]) -> Body {
    let frames: Vec<Result<Bytes, std::io::Error>> = pieces
        .iter()
        .map(|p| Ok(Bytes::from_static(p.as_bytes())))
        .collect();
    Body::from_stream(futures::stream::iter(frames))
}

#[tokio::test]
async fn bodies_are_read_whole_in_one_frame_or_many() {
    assert_eq!(read_body(&mut Body::from("{}")).await.unwrap(), "{}");
    assert_eq!(read_body(&mut Body::empty()).await.unwrap(), "");
    assert_eq!(
        read_body(&mut streamed(&["{\"user", "Id\":", "\"1\"}"]))
            .await
            .unwrap(),
        "{\"userId\":\"1\"}"
    );
    assert_eq!(read_body(&mut streamed(&["", "{}"])).await.unwrap(), "{}");
}

#[tokio::test]
async fn bodies_past_the_limit_are_refused_whole_or_streamed() {
    let big = vec![b'x'; BODY_LIMIT + 1];
    let err = read_body(&mut Body::from(big)).await.unwrap_err();
    assert_eq!(err.id, ErrorId::BodyTooLarge);
    let half: &'static str = Box::leak("y".repeat(BODY_LIMIT / 2 + 1).into_boxed_str());
    let err = read_body(&mut streamed(&[half, half])).await.unwrap_err();
    assert_eq!(err.id, ErrorId::BodyTooLarge);
    let exact: &'static str = Box::leak("z".repeat(BODY_LIMIT / 2).into_boxed_str());
    assert_eq!(
        read_body(&mut streamed(&[exact, exact]))
            .await
            .unwrap()
            .len(),
        BODY_LIMIT
    );
}

/// A streamed body refused at the limit is left as it was, not swapped for an empty one: the
/// keep-alive rule of a handler that holds its body (`unread_body::close_if_unread`) must see
/// that it was not read to its end.
#[tokio::test]
async fn a_body_refused_at_the_limit_is_still_unread_afterwards() {
    let half: &'static str = Box::leak("y".repeat(BODY_LIMIT / 2 + 1).into_boxed_str());
    let mut body = streamed(&[half, half, half]);
    let err = read_body(&mut body).await.unwrap_err();
    assert_eq!(err.id, ErrorId::BodyTooLarge);
    assert!(!http_body::Body::is_end_stream(&body));
}

/// The edge closes HTTP/1.1 connections whose body was left unread; a body read here must
/// count as read, or every answer would close its connection.
#[tokio::test]
async fn a_body_read_here_counts_as_read_for_keep_alive() {
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v2/users/1/unlock")
        .header(header::CONTENT_LENGTH, "2")
        .body(Body::from("{}"))
        .unwrap();
    let (request, read) = crate::unread_body::watch(request);
    let read = read.expect("an HTTP/1.1 body is watched");
    assert!(!read.finished());
    assert_eq!(read_body(&mut request.into_body()).await.unwrap(), "{}");
    assert!(read.finished());
}

/// Every `{segment}` of a REST path sets a field of its request, so no path id is dropped.
#[test]
fn every_rest_path_segment_is_taken_by_its_request() {
    struct Paths;
    impl Visitor for Paths {
        fn visit<R: Routed>(&mut self) {
            let mut request = R::Request::default();
            for name in R::INFO.path_params() {
                assert!(
                    R::set_path(&mut request, name, "x"),
                    "{} does not take {{{name}}} from {}",
                    R::INFO.method,
                    R::INFO.rest
                );
            }
            assert!(!R::set_path(&mut request, "noSuchSegment", "x"));
        }
    }
    for_each(&mut Paths);
}

#[test]
fn the_table_has_one_row_per_method_and_route() {
    let mut methods = HashSet::new();
    let mut routes = HashSet::new();
    for info in METHODS {
        assert!(methods.insert(info.path()), "{} twice", info.path());
        assert!(
            routes.insert((info.verb, info.rest)),
            "{} {} twice",
            info.verb.as_str(),
            info.rest
        );
        assert!(info.rest.starts_with('/') && !info.permission.is_empty());
    }
    struct Count(usize);
    impl Visitor for Count {
        fn visit<R: Routed>(&mut self) {
            self.0 += 1;
        }
    }
    let mut count = Count(0);
    for_each(&mut count);
    assert_eq!(count.0, METHODS.len());
    assert_eq!(
        services(),
        [USER, ORG, PERMISSION, SESSION, SETTINGS, ADMIN, MANAGEMENT, HISTORY, BULK]
    );
    // Only CreateSession answers REST with another success status (ZITADEL's
    // `http_response.success_code: 201`).
    for info in METHODS {
        let expected = if info.method == "CreateSession" {
            201
        } else {
            200
        };
        assert_eq!(info.rest_status, expected, "{}", info.method);
    }
}

/// The README's API table has a row for every RPC: its REST verb and path, its method and the
/// permission it checks.
#[test]
fn the_readme_lists_every_rpc() {
    let readme = include_str!("../../../README.md");
    for info in METHODS {
        let rest = format!("`{} {}`", info.verb.as_str(), info.rest);
        let row = readme
            .lines()
            .find(|line| line.starts_with("| ") && line.contains(&rest))
            .unwrap_or_else(|| panic!("README's API table has no row for {rest}"));
        assert!(
            row.contains(&format!("/{}`", info.method)) && row.contains(info.permission),
            "README's row for {rest} does not name {} and `{}`: {row}",
            info.method,
            info.permission
        );
    }
}
