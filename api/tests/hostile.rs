//! Hostile input over HTTP: seeded random requests built from the things that break servers —
//! odd methods, path tricks and very long ids, duplicate and garbage headers, truncated, huge,
//! deeply nested, wrongly typed and non-UTF-8 bodies. None of them is a valid request by
//! construction (ids never exist, bodies never parse into a valid command), so each must get a
//! 4xx in the documented error shape — never a 5xx, never a dropped connection (except that a
//! body over the 1 MiB limit may be cut off unread) — and the store must be byte-for-byte what it
//! was before.
//!
//! `LATCHKEY_HOSTILE_CASES=100000 cargo test --release -p latchkey-api --test hostile` runs more.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod support;

use std::collections::BTreeMap;

use latchkey_storage::Store;
use reqwest::Method;
use serde_json::Value;
use support::{Rng, TestServer, ADMIN_TOKEN};

const METHODS: &[&str] = &[
    "GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW",
];

const PATHS: &[&str] = &[
    "/v2/users/{id}/unlock",
    "/v2/users/{id}/lock",
    "/v2/users/{id}/deactivate",
    "/v2/users/{id}/reactivate",
    "/v2/users/{id}",
    "/v2/users/{id}/pats",
    "/v2/users/{id}/pats/{id}",
    "/v2/users",
    "/v2/users/human",
    "/v2/users/new",
    "/v2/organizations",
    "/v2beta/administrators",
    "/zitadel.user.v2.UserService/UnlockUser",
    "/zitadel.user.v2.UserService/GetUserByID",
    "/zitadel.user.v2.UserService/AddHumanUser",
    "/zitadel.user.v2.UserService/CreateUser",
    "/zitadel.user.v2.UserService/ListUsers",
    "/zitadel.org.v2.OrganizationService/AddOrganization",
    "/zitadel.internal_permission.v2beta.InternalPermissionService/CreateAdministrator",
    "/zitadel.user.v2.UserService/NoSuchMethod",
    "/v2/users/{id}/unlock/extra",
    "/v2/users/{id}/../../v2/organizations",
    "/%2e%2e/v2/users/{id}/unlock",
    "/v2//users///{id}/lock",
    "/v2/users/{id}/lock?userId=other&userId=again",
    "/",
    "/v3/users/{id}",
];

fn ids() -> Vec<String> {
    vec![
        "missing-user".into(),
        "a".repeat(201),
        "b".repeat(8000),
        "%20".into(),
        "..".into(),
        "%2e%2e".into(),
        "%00".into(),
        "%FF%FE".into(),
        "%F0%9F%92%A9".into(),
        "ünïcödé".into(),
        "'%20OR%201=1%20--".into(),
        "$(reboot)".into(),
        "%2F".into(),
        "-1".into(),
        "0".into(),
    ]
}

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/json"),
    Some("application/json; charset=latin1"),
    Some("application/proto"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    Some("application/x-www-form-urlencoded"),
    Some(""),
    Some("application/grpc"),
    Some("application/grpc-web+proto"),
];

fn bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        "{",
        "{\"userId\":",
        "null",
        "[]",
        "123",
        "\"text\"",
        "{\"userId\": 5}",
        "{\"userId\": [\"a\"]}",
        "{\"profile\": \"Ada\", \"email\": 7}",
        "{\"profile\": {\"givenName\": 1}, \"email\": {}}",
        "{\"email\": {\"email\": \"a@b.c\"}}",
        "{\"organizationId\": {}, \"machine\": 3}",
        "{\"query\": {\"limit\": -1}}",
        "{\"query\": {\"offset\": \"minus one\"}}",
        "{\"queries\": [{\"noSuchQuery\": {}}]}",
        "{\"queries\": [{\"stateQuery\": {\"state\": \"USER_STATE_NOPE\"}}]}",
        "{\"sortingColumn\": 99}",
        "{\"name\": 7}",
        "{\"name\": \"\"}",
        "{\"userId\": true, \"resource\": 3, \"roles\": \"IAM_OWNER\"}",
        "{\"userId\": \"x\", \"resource\": {\"instance\": true}, \"roles\": [\"GOD\"]}",
        "{\"userId\":\"a\",\"userId\":\"b\"}",
        "{\"hashedPassword\": {\"hash\": \"not-a-hash\"}, \"profile\": {\"givenName\": \"A\", \"familyName\": \"B\"}, \"email\": {\"email\": \"x@example.com\"}}",
        "\u{0000}\u{0000}",
        "\n\t{}\u{feff}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    bodies.push(vec![0xff, 0xfe, 0xfd, b'{', b'}']);
    bodies.push(b"{\"userId\": \"\xc3\x28\"}".to_vec());
    bodies.push("[".repeat(100_000).into_bytes());
    bodies.push("{\"a\":".repeat(50_000).into_bytes());
    bodies.push(vec![b' '; 2 * 1024 * 1024]);
    bodies.push(format!("{{\"userId\": \"{}\"}}", "z".repeat(1_500_000)).into_bytes());
    bodies.push(vec![0x0a, 0x7f, 0x01]); // a protobuf field claiming 127 bytes it lacks
    bodies
}

fn authorizations() -> Vec<Vec<String>> {
    vec![
        vec![],
        vec![format!("Bearer {ADMIN_TOKEN}")],
        vec![format!("Bearer {ADMIN_TOKEN}")],
        vec!["Bearer".into()],
        vec!["Bearer    ".into()],
        vec![format!("Bearer {}", "t".repeat(4000))],
        vec!["Basic dXNlcjpwYXNz".into()],
        vec![format!("bearer {ADMIN_TOKEN}")],
        vec![format!("Bearer {ADMIN_TOKEN}"), "Bearer wrong".into()],
        vec!["Bearer wrong".into(), format!("Bearer {ADMIN_TOKEN}")],
    ]
}

/// The gRPC codes a refused request may get: InvalidArgument, NotFound, AlreadyExists,
/// PermissionDenied, ResourceExhausted, FailedPrecondition, Unimplemented, Unauthenticated — the
/// ones REST answers with a 4xx. Never Unknown, Internal, Unavailable or DataLoss.
const CLIENT_ERROR_CODES: &[u32] = &[3, 5, 6, 7, 8, 9, 12, 16];

/// `grpc-status` from the headers (a trailers-only answer) or from the trailer frame (flag 0x80)
/// of a gRPC-web body.
fn grpc_status(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Option<u32> {
    let parse = |value: &str| value.trim().parse().ok();
    if let Some(value) = headers.get("grpc-status") {
        return parse(value.to_str().ok()?);
    }
    let mut at = 0;
    while at + 5 <= body.len() {
        let len = u32::from_be_bytes(body[at + 1..at + 5].try_into().ok()?) as usize;
        let payload = body.get(at + 5..at + 5 + len)?;
        if body[at] & 0x80 != 0 {
            let trailers = String::from_utf8_lossy(payload);
            return trailers.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("grpc-status")
                    .then(|| parse(value))?
            });
        }
        at += 5 + len;
    }
    None
}

/// Every key and value of the store under `dir`.
fn store_contents(dir: &std::path::Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let store = Store::open(&latchkey_engine::store_config(
        &latchkey_engine::Config::default().data_dir(dir),
    ))
    .expect("open store");
    let contents = store
        .scan_prefix(&[])
        .map(|item| item.expect("entry"))
        .collect();
    store.close().expect("close");
    contents
}

fn documented_shape(path: &str, body: &Value) -> bool {
    let details_ok = body["details"]
        .as_array()
        .is_some_and(|d| !d.is_empty() && d.iter().all(|x| x.is_object()));
    let message_ok = body["message"].is_string();
    if path.starts_with("/zitadel.") {
        body["code"].is_string() && message_ok && details_ok
    } else {
        body["code"].is_u64()
            && message_ok
            && details_ok
            && body["details"][0]["id"].is_string()
            && body["details"][0]["@type"] == "type.googleapis.com/zitadel.v1.ErrorDetail"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_documented_4xx_and_change_nothing() {
    let cases: usize = std::env::var("LATCHKEY_HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    // Some real state to protect.
    let server = TestServer::start().await;
    for i in 0..3 {
        let id = server.create_human(&format!("keep{i}@example.com")).await;
        if i == 0 {
            server
                .post(&format!("/v2/users/{id}/lock"), serde_json::json!({}))
                .await;
        }
    }
    let dir = server.stop().await;
    let before = store_contents(dir.path());
    let server = TestServer::reopen(dir).await;

    let (ids, bodies, authorizations) = (ids(), bodies(), authorizations());
    let mut rng = Rng::new(0x0BAD_5EED);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut grpc_codes: BTreeMap<u32, usize> = BTreeMap::new();
    for case in 0..cases {
        let method = *rng.pick(METHODS);
        let id = rng.pick(&ids).clone();
        let path = rng.pick(PATHS).replace("{id}", &id);
        let content_type = *rng.pick(CONTENT_TYPES);
        let body = rng.pick(&bodies).clone();
        let auth = rng.pick(&authorizations).clone();
        let url = format!("{}{path}", server.base);
        let mut request = server.client.request(
            Method::from_bytes(method.as_bytes()).expect("method"),
            url.as_str(),
        );
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
            if rng.below(8) == 0 {
                request = request.header("content-type", "text/html"); // a duplicate
            }
        }
        for value in auth {
            request = request.header("authorization", value);
        }
        if rng.below(10) == 0 {
            request = request.header("x-garbage", "~".repeat(8000));
        }
        if rng.below(6) == 0 {
            request = request.header("connect-protocol-version", "1");
        }
        let shown = format!(
            "case {case}: {method} {} ({:?}, {} body bytes)",
            &path.chars().take(120).collect::<String>(),
            content_type,
            body.len()
        );
        let oversized = body.len() > latchkey_api::rpc::BODY_LIMIT;
        let response = match request.body(body).send().await {
            Ok(response) => response,
            Err(e) if e.is_builder() => continue, // a URL the client itself refuses to send
            // A body over the limit is not read: the server answers and closes while the
            // client may still be writing it. That is the one allowed way to be cut off.
            Err(e) if oversized && format!("{e:?}").contains("BodyWrite") => {
                *statuses.entry(0).or_default() += 1;
                continue;
            }
            Err(e) => panic!("{shown}: connection failed: {e:?}"),
        };
        let status = response.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        let grpc = content_type.is_some_and(|c| c.starts_with("application/grpc"));
        let headers = response.headers().clone();
        let text = response.bytes().await.expect("body");
        assert!(
            status < 500,
            "{shown}: {status} {}",
            String::from_utf8_lossy(&text)
        );
        if grpc && status == 200 {
            // gRPC answers 200 and puts the outcome in `grpc-status`: a header when the answer
            // is trailers-only, else the trailer frame at the end of a gRPC-web body.
            let code = grpc_status(&headers, &text)
                .unwrap_or_else(|| panic!("{shown}: a gRPC answer without grpc-status"));
            assert!(
                CLIENT_ERROR_CODES.contains(&code),
                "{shown}: grpc-status {code} ({:?})",
                headers.get("grpc-message")
            );
            *grpc_codes.entry(code).or_default() += 1;
            continue;
        }
        if grpc {
            continue;
        }
        assert!(
            !(200..300).contains(&status)
                || method == "GET"
                || path.contains("ListUsers")
                || path == "/v2/users",
            "{shown}: a hostile write was accepted: {status}"
        );
        if status >= 400 && method != "HEAD" {
            let body: Value = serde_json::from_slice(&text)
                .unwrap_or_else(|_| panic!("{shown}: error body is not JSON: {text:?}"));
            let checked_path = path.split('?').next().unwrap_or("");
            assert!(
                documented_shape(checked_path, &body),
                "{shown}: undocumented error shape {body}"
            );
        }
    }
    eprintln!("statuses: {statuses:?}, grpc-status: {grpc_codes:?}");
    assert!(
        grpc_codes.keys().any(|code| *code != 0),
        "the gRPC cases were all answered without an error code"
    );
    assert_eq!(server.get("/healthz").await.status, reqwest::StatusCode::OK);
    let dir = server.stop().await;
    assert_eq!(
        store_contents(dir.path()),
        before,
        "rejected requests changed the store"
    );
}

/// One HTTP/1.1 exchange on a held connection: the answer's status and its `connection` header.
async fn exchange(stream: &mut tokio::net::TcpStream, request: &str) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed mid-answer"
        );
        seen.push(byte[0]);
    }
    let head = String::from_utf8(seen).unwrap();
    let header = |name: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
    };
    let length: usize = header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    let status = head[9..12].parse().unwrap();
    (status, header("connection"))
}

/// An answer sent before the request's body was read (a 401 here) says `Connection: close`, so
/// a pooling client does not send its next request into a socket about to close; an answer after
/// the body was read keeps the connection. The same on the hot routes (`hot_routes.rs`, which
/// hold the body themselves) and on the router's.
#[tokio::test]
async fn answers_that_leave_the_body_unread_close_the_connection_and_say_so() {
    let server = TestServer::start().await;
    let user = server.create_human("unread@example.com").await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    for path in [
        format!("/v2/users/{user}/unlock"), // hot
        format!("/v2/users/{user}/pats"),   // the router's
        "/v2/organizations".to_owned(),     // the router's
    ] {
        let request = |auth: &str, body: &str| {
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (status, connection) = exchange(&mut stream, &request("", "{}")).await;
        assert_eq!(
            (status, connection.as_deref()),
            (401, Some("close")),
            "{path}"
        );
        // And the server does close it, as it said.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest),
        )
        .await;
        assert!(matches!(read, Ok(Ok(0))), "{path}: {read:?}");

        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let auth = format!("Authorization: Bearer {ADMIN_TOKEN}\r\n");
        for _ in 0..2 {
            // Read, answered (whatever the answer), and the connection kept for the next one.
            let (status, connection) = exchange(&mut stream, &request(&auth, "{}")).await;
            assert!(status < 500, "{path}: {status}");
            assert_eq!(connection, None, "{path}");
        }
    }
}
