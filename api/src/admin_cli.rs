//! The admin CLI: `latchkey users list|get|lock|unlock` and `latchkey orgs create`, against a
//! running server over its REST API with a token — what an operator scripts. Output is a table
//! for people or JSON for scripts (`--output json`: the server's own answer as it came).
//!
//! Exit codes: 0 done; 1 the server could not be reached or failed (5xx); 4 the server refused
//! the command (4xx: not found, not locked, no permission, ...), its error id and message on
//! stderr; 2 a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::config::ServeArgs;

/// The server refused the command.
pub const EXIT_REFUSED: u8 = 4;

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's base URL (default: the --listen address over http).
    #[arg(long, global = true, env = "LATCHKEY_SERVER")]
    pub server: Option<String>,
    /// A token of a caller allowed to do this (default: <data-dir>/admin.pat when readable).
    #[arg(long, global = true, env = "LATCHKEY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token.
    #[arg(long, global = true, env = "LATCHKEY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Output for people or for scripts.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Subcommand)]
pub enum UsersAction {
    /// List users (newest last), optionally by organization, state or username prefix.
    List {
        #[arg(long)]
        org: Option<String>,
        /// active, inactive, locked, initial or deleted.
        #[arg(long)]
        state: Option<String>,
        /// Usernames starting with this (case-insensitive).
        #[arg(long)]
        username_prefix: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Show one user.
    Get { id: String },
    /// Lock a user.
    Lock { id: String },
    /// Unlock a locked user.
    Unlock { id: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum OrgsAction {
    /// Create an organization.
    Create { name: String },
}

/// A failed command: the exit code and its line for stderr.
struct Failed(u8, String);

type Outcome = Result<(), Failed>;

fn base_url(client: &ClientArgs, serve: &ServeArgs) -> String {
    base_or_local(client.server.as_deref(), serve.listen)
}

/// `url` without a trailing slash, else the server listening at `listen` as seen from this
/// machine (an unspecified address means this one).
pub(crate) fn base_or_local(url: Option<&str>, mut listen: std::net::SocketAddr) -> String {
    match url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{listen}")
        }
    }
}

/// Runs one client call of a command on a runtime of its own (the commands are synchronous).
pub(crate) fn block_on<F: std::future::Future>(call: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok(runtime.block_on(call))
}

fn token(client: &ClientArgs, serve: &ServeArgs) -> Result<String, Failed> {
    let default = serve.data_dir.join(crate::run::ADMIN_TOKEN_FILE);
    read_token(
        client.token.as_deref(),
        client.token_file.as_deref(),
        Some(&default),
    )
    .map_err(|message| Failed(1, message))
}

/// The token given on the line (or its variable), else read from its file, else from
/// `default_file` when there is one.
pub(crate) fn read_token(
    token: Option<&str>,
    file: Option<&std::path::Path>,
    default_file: Option<&std::path::Path>,
) -> Result<String, String> {
    if let Some(token) = token {
        return Ok(token.trim().to_owned());
    }
    let Some(path) = file.or(default_file) else {
        return Err("give --token (LATCHKEY_TOKEN) or --token-file".into());
    };
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| {
            format!(
                "no token: give --token (LATCHKEY_TOKEN) or --token-file ({}: {e})",
                path.display()
            )
        })
}

/// Sends one REST call and returns the answer's JSON, or why it failed.
fn call(
    client: &ClientArgs,
    serve: &ServeArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failed> {
    let base = base_url(client, serve);
    let token = token(client, serve)?;
    block_on(async {
        let mut request = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failed(1, format!("cannot reach {base}: {e}")))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(answer);
        }
        let id = answer["details"][0]["id"].as_str().unwrap_or("");
        let message = answer["message"].as_str().unwrap_or("");
        let code = if status.is_client_error() {
            EXIT_REFUSED
        } else {
            1
        };
        Err(Failed(code, format!("{status}: {id}: {message}")))
    })
    .map_err(|e| Failed(1, e))?
}

fn state_name(state: &str) -> Result<&'static str, Failed> {
    Ok(match state.to_ascii_lowercase().as_str() {
        "active" => "USER_STATE_ACTIVE",
        "inactive" => "USER_STATE_INACTIVE",
        "locked" => "USER_STATE_LOCKED",
        "initial" => "USER_STATE_INITIAL",
        "deleted" => "USER_STATE_DELETED",
        other => {
            return Err(Failed(
                2,
                format!("unknown state {other:?} (active, inactive, locked, initial, deleted)"),
            ))
        }
    })
}

fn short_state(state: &Value) -> String {
    state
        .as_str()
        .unwrap_or("")
        .trim_start_matches("USER_STATE_")
        .to_ascii_lowercase()
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `latchkey users …`.
pub fn users(action: &UsersAction, client: &ClientArgs, serve: &ServeArgs) -> ExitCode {
    finish(run_users(action, client, serve))
}

/// `latchkey orgs …`.
pub fn orgs(action: &OrgsAction, client: &ClientArgs, serve: &ServeArgs) -> ExitCode {
    let OrgsAction::Create { name } = action;
    let outcome = call(
        client,
        serve,
        reqwest::Method::POST,
        "/v2/organizations",
        Some(json!({ "name": name })),
    )
    .map(|answer| match client.output {
        Output::Json => print_json(&answer),
        Output::Table => println!(
            "created organization {} ({name})",
            answer["organizationId"].as_str().unwrap_or("?")
        ),
    });
    finish(outcome)
}

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(code, message)) => {
            eprintln!("latchkey: {message}");
            ExitCode::from(code)
        }
    }
}

fn run_users(action: &UsersAction, client: &ClientArgs, serve: &ServeArgs) -> Outcome {
    match action {
        UsersAction::List {
            org,
            state,
            username_prefix,
            limit,
            offset,
        } => {
            let mut queries = Vec::new();
            if let Some(org) = org {
                queries.push(json!({"organizationIdQuery": {"organizationId": org}}));
            }
            if let Some(state) = state {
                queries.push(json!({"stateQuery": {"state": state_name(state)?}}));
            }
            if let Some(prefix) = username_prefix {
                queries.push(json!({"userNameQuery": {
                    "userName": prefix,
                    "method": "TEXT_QUERY_METHOD_STARTS_WITH_IGNORE_CASE"
                }}));
            }
            let body = json!({
                "query": {"offset": offset.to_string(), "limit": limit, "asc": true},
                "queries": queries,
            });
            let answer = call(
                client,
                serve,
                reqwest::Method::POST,
                "/v2/users",
                Some(body),
            )?;
            match client.output {
                Output::Json => print_json(&answer),
                Output::Table => {
                    let rows = answer["result"].as_array().cloned().unwrap_or_default();
                    println!(
                        "{:<20} {:<10} {:<20} USERNAME",
                        "ID", "STATE", "ORGANIZATION"
                    );
                    for user in &rows {
                        println!(
                            "{:<20} {:<10} {:<20} {}",
                            user["userId"].as_str().unwrap_or(""),
                            short_state(&user["state"]),
                            user["details"]["resourceOwner"].as_str().unwrap_or(""),
                            user["username"].as_str().unwrap_or(""),
                        );
                    }
                    println!(
                        "{} of {} users",
                        rows.len(),
                        answer["details"]["totalResult"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        UsersAction::Get { id } => {
            let answer = call(
                client,
                serve,
                reqwest::Method::GET,
                &format!("/v2/users/{id}"),
                None,
            )?;
            match client.output {
                Output::Json => print_json(&answer),
                Output::Table => {
                    let user = &answer["user"];
                    let kind = if user.get("human").is_some() {
                        "human"
                    } else {
                        "machine"
                    };
                    for (name, value) in [
                        ("id", user["userId"].as_str().unwrap_or("").to_owned()),
                        (
                            "username",
                            user["username"].as_str().unwrap_or("").to_owned(),
                        ),
                        ("state", short_state(&user["state"])),
                        ("type", kind.to_owned()),
                        (
                            "organization",
                            answer["details"]["resourceOwner"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        ),
                        (
                            "sequence",
                            answer["details"]["sequence"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        ),
                        (
                            "email",
                            user["human"]["email"]["email"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        ),
                    ] {
                        if !value.is_empty() {
                            println!("{name:<13} {value}");
                        }
                    }
                }
            }
        }
        UsersAction::Lock { id } | UsersAction::Unlock { id } => {
            let verb = if matches!(action, UsersAction::Lock { .. }) {
                "lock"
            } else {
                "unlock"
            };
            let path = format!("/v2/users/{id}/{verb}");
            let answer = call(client, serve, reqwest::Method::POST, &path, Some(json!({})))?;
            match client.output {
                Output::Json => print_json(&answer),
                Output::Table => println!(
                    "{verb}ed {id} (sequence {})",
                    answer["details"]["sequence"].as_str().unwrap_or("?")
                ),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_line_then_its_file_then_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let default = dir.path().join("admin.pat");
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::write(&default, "from-data-dir\n").unwrap();
        let read = |token, file: Option<&std::path::Path>| read_token(token, file, Some(&default));
        assert_eq!(read(Some(" given "), Some(&file)).unwrap(), "given");
        assert_eq!(read(None, Some(&file)).unwrap(), "from-file");
        assert_eq!(read(None, None).unwrap(), "from-data-dir");
        let missing = read_token(None, None, Some(&dir.path().join("none"))).unwrap_err();
        assert!(missing.contains("--token"), "{missing}");
        assert!(read_token(None, None, None).is_err());
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_this_machine() {
        let any: std::net::SocketAddr = "0.0.0.0:9000".parse().unwrap();
        assert_eq!(base_or_local(None, any), "http://127.0.0.1:9000");
        assert_eq!(
            base_or_local(Some("https://id.example/"), any),
            "https://id.example"
        );
    }
}
