//! ListUsers timings for `latchkey-loadtest scale`: the queries an admin console sends all day,
//! first and deep pages, each timed over HTTP against the server on the scale check's data.
//!
//! [`populate`] adds what the queries need to the users the scale check made (all in the
//! default organization, usernames `load-scale-N@example.com`): a second organization holding
//! 1 % as many users, and every 100th user locked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_engine::{Caller, Email, Engine, NewHuman, OrgSelector, PasswordInput, Profile};
use serde_json::{json, Value};

/// The bar at one million users: p99 of a page of 100 (docs/performance.md).
pub const BAR: Duration = Duration::from_millis(20);
/// Timed calls per query (after two untimed ones).
pub const RUNS: usize = 40;

/// What [`populate`] made: the second organization's id and how many users were locked.
pub struct Populated {
    pub org: String,
    pub org_users: usize,
    pub locked: usize,
}

/// A second organization with `ids.len() / 100` users, and every 100th of `ids` locked.
pub async fn populate(
    engine: &Engine,
    caller: &Caller,
    ids: &[String],
) -> Result<Populated, String> {
    let (org, _) = engine
        .add_organization(caller, "scale-org-b", None)
        .await
        .map_err(|e| e.to_string())?;
    let org_users = (ids.len() / 100).max(1);
    let caller = Arc::new(caller.clone());
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let (engine, caller, org) = (engine.clone(), caller.clone(), org.clone());
        tasks.push(tokio::spawn(async move {
            for n in (worker..org_users).step_by(32) {
                engine
                    .add_human_user(
                        &caller,
                        NewHuman {
                            organization: Some(OrgSelector::Id(org.clone())),
                            profile: Profile {
                                given_name: "Org".into(),
                                family_name: format!("B {n}"),
                                ..Default::default()
                            },
                            email: Email {
                                email: format!("org-b-{n}@example.com"),
                                is_verified: true,
                            },
                            password: Some(PasswordInput::Hashed {
                                hash: crate::target::HASH.into(),
                                change_required: false,
                            }),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    let locking: Vec<String> = ids.iter().step_by(100).cloned().collect();
    for chunk in locking.chunks(locking.len().div_ceil(32).max(1)) {
        let (engine, caller, chunk) = (engine.clone(), caller.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                engine
                    .lock_user(&caller, &id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(Populated {
        org,
        org_users,
        locked: locking.len(),
    })
}

/// One timed query.
pub struct Timing {
    pub name: String,
    /// Counts toward the bar (a first page of one of the four queries the issue names).
    pub barred: bool,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub returned: usize,
    pub total: u64,
    /// Refused as LIST-TOO-BROAD (the timings are of the refusals).
    pub refused: bool,
}

/// Times the list queries against the server at `base`.
pub async fn measure(
    base: &str,
    token: &str,
    users: usize,
    populated: &Populated,
) -> Result<Vec<Timing>, String> {
    let client = reqwest::Client::new();
    let deep = (users / 2) as u64;
    let org = &populated.org;
    let org_deep = (populated.org_users / 2) as u64;
    let locked_deep = (populated.locked / 2) as u64;
    // A prefix of a dozen usernames (12345 and 123450..=123459 at a million users).
    let prefix = format!("load-scale-{}", users / 81);
    // A page of 100 at `offset` of the users matching `queries`.
    let page = |offset: u64, queries: Value| json!({"query": {"limit": 100, "offset": offset}, "queries": queries});
    let in_org = json!([{"organizationIdQuery": {"organizationId": org}}]);
    let locked = json!([{"stateQuery": {"state": "USER_STATE_LOCKED"}}]);
    let username = |name: &str, method: &str| json!([{"userNameQuery": {"userName": name, "method": format!("TEXT_QUERY_METHOD_{method}")}}]);
    let queries: Vec<(String, bool, Value)> = vec![
        ("all, first page".into(), true, page(0, json!([]))),
        (format!("all, offset {deep}"), false, page(deep, json!([]))),
        (
            "all, sorted by username".into(),
            false,
            json!({"query": {"limit": 100, "asc": true}, "sortingColumn": "USER_FIELD_NAME_USER_NAME"}),
        ),
        (
            "organization (1 %), first page".into(),
            true,
            page(0, in_org.clone()),
        ),
        (
            format!("organization, offset {org_deep}"),
            false,
            page(org_deep, in_org),
        ),
        (
            "state LOCKED (1 %), first page".into(),
            true,
            page(0, locked.clone()),
        ),
        (
            format!("state LOCKED, offset {locked_deep}"),
            false,
            page(locked_deep, locked),
        ),
        (
            format!("username prefix {prefix}"),
            true,
            page(0, username(&prefix, "STARTS_WITH")),
        ),
        (
            "username prefix load-scale-1 (11 %), case-insensitive".into(),
            false,
            page(0, username("LOAD-SCALE-1", "STARTS_WITH_IGNORE_CASE")),
        ),
        (
            "username prefix load-scale-1 (11 %), case-sensitive".into(),
            false,
            page(0, username("load-scale-1", "STARTS_WITH")),
        ),
        (
            "username contains -scale-77777 (sorted by creation: a walk of every user)".into(),
            false,
            page(0, username("-scale-77777", "CONTAINS")),
        ),
        (
            "email equals, ignoring case".into(),
            false,
            page(
                0,
                json!([{"emailQuery": {"emailAddress": "LOAD-SCALE-7@EXAMPLE.COM", "method": "TEXT_QUERY_METHOD_EQUALS_IGNORE_CASE"}}]),
            ),
        ),
    ];
    let mut timings = Vec::new();
    for (name, barred, body) in queries {
        let mut samples = Vec::with_capacity(RUNS);
        let mut last = Value::Null;
        for run in 0..RUNS + 2 {
            let sent = Instant::now();
            let response = client
                .post(format!("{base}/v2/users"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            last = response.json().await.map_err(|e| e.to_string())?;
            let took = sent.elapsed();
            // A documented refusal is an outcome to report, anything else a failure.
            if !status.is_success() && last["details"][0]["id"] != "LIST-TOO-BROAD" {
                return Err(format!("{name}: HTTP {status}: {last}"));
            }
            if run >= 2 {
                samples.push(took);
            }
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        timings.push(Timing {
            name,
            barred,
            p50: at(0.5),
            p99: at(0.99),
            max: samples[samples.len() - 1],
            refused: last["details"][0]["id"] == "LIST-TOO-BROAD",
            returned: last["result"].as_array().map_or(0, Vec::len),
            total: last["details"]["totalResult"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .or_else(|| last["details"]["totalResult"].as_u64())
                .unwrap_or(0),
        });
    }
    Ok(timings)
}
