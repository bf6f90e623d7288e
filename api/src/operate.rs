//! The operator's commands beside `serve`: `backup`, `restore` and `verify`. Each prints what it
//! did on stdout and returns the process's exit code; failures are one line on stderr.
//!
//! Exit codes scripts can rely on: 0 done (for `verify`: no problem found), 1 the command could
//! not do its work (the message says why), 3 `verify` found problems (listed on stdout).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use latchkey_engine::{BackupSummary, Config};

/// `verify` found problems.
pub const EXIT_PROBLEMS: u8 = 3;

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The backup file to write (written beside it first, moved into place once read back whole).
    #[arg(long)]
    pub to: PathBuf,
    /// A running server to back up online (e.g. http://127.0.0.1:8080); it keeps serving.
    /// Without it, the stopped data directory (--data-dir) is read.
    #[arg(long, env = "LATCHKEY_SERVER")]
    pub server: Option<String>,
    /// An IAM_OWNER's token, for --server.
    #[arg(long, env = "LATCHKEY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the token (e.g. the data directory's admin.pat), for --server.
    #[arg(long, env = "LATCHKEY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file to restore into --data-dir (which must be empty or missing).
    #[arg(long)]
    pub from: PathBuf,
}

fn failed(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("latchkey: {message}");
    ExitCode::from(1)
}

fn print_summary(what: &str, path: &Path, summary: &BackupSummary) {
    println!(
        "{what} {}: {} entries, {} bytes, taken at {} ms since the epoch",
        path.display(),
        summary.entries,
        summary.bytes,
        summary.created_ms
    );
}

/// `latchkey backup --to FILE [--server URL --token T]`.
pub fn backup(args: &BackupArgs, config: &Config) -> ExitCode {
    let partial = partial_path(&args.to);
    let written = match &args.server {
        Some(server) => online_backup(args, server, &partial),
        None => offline_backup(config, &partial),
    }
    .and_then(|()| {
        let file = File::open(&partial).map_err(|e| format!("reading the backup back: {e}"))?;
        latchkey_engine::check_backup(BufReader::new(file))
            .map_err(|e| format!("the backup did not read back whole: {e}"))
    })
    .and_then(|summary| {
        std::fs::rename(&partial, &args.to)
            .map_err(|e| format!("moving the backup to {}: {e}", args.to.display()))?;
        sync_parent(&args.to);
        Ok(summary)
    });
    match written {
        Ok(summary) => {
            print_summary("backup written to", &args.to, &summary);
            ExitCode::SUCCESS
        }
        Err(message) => {
            let _ = std::fs::remove_file(&partial);
            failed(message)
        }
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

fn create(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn offline_backup(config: &Config, partial: &Path) -> Result<(), String> {
    let mut out = BufWriter::new(create(partial)?);
    latchkey_engine::backup_offline(config, &mut out).map_err(|e| {
        let mut message = e.to_string();
        let locked = matches!(&e, latchkey_engine::OpenError::Store(store) if store.is_locked());
        if locked {
            message.push_str(
                " — a server holds it: back it up online with --server URL and an owner's --token",
            );
        }
        message
    })?;
    let file = out
        .into_inner()
        .map_err(|e| format!("writing {}: {e}", partial.display()))?;
    file.sync_all()
        .map_err(|e| format!("syncing {}: {e}", partial.display()))
}

fn online_backup(args: &BackupArgs, server: &str, partial: &Path) -> Result<(), String> {
    let token =
        crate::admin_cli::read_token(args.token.as_deref(), args.token_file.as_deref(), None)
            .map_err(|e| format!("--server needs a token: {e}"))?;
    let url = format!("{}{}", server.trim_end_matches('/'), crate::backup::PATH);
    crate::admin_cli::block_on(async {
        let mut response = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("the server refused the backup: {status} {body}"));
        }
        let mut out = BufWriter::new(create(partial)?);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("the backup stream broke off: {e}"))?
        {
            out.write_all(&chunk)
                .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        file.sync_all()
            .map_err(|e| format!("syncing {}: {e}", partial.display()))
    })?
}

/// `latchkey restore --from FILE --data-dir DIR`.
pub fn restore(args: &RestoreArgs, config: &Config) -> ExitCode {
    let file = match File::open(&args.from) {
        Ok(file) => file,
        Err(e) => return failed(format!("cannot open {}: {e}", args.from.display())),
    };
    let started = std::time::Instant::now();
    match latchkey_engine::restore(BufReader::with_capacity(1 << 20, file), config) {
        Ok(summary) => {
            print_summary("restored", &args.from, &summary);
            println!(
                "into {} in {:.1} s",
                config.data_dir.display(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(format!("restore failed (nothing was written): {e}")),
    }
}

/// `latchkey verify --data-dir DIR`.
pub fn verify(config: &Config) -> ExitCode {
    let report = match latchkey_engine::verify(config) {
        Ok(report) => report,
        Err(e) => return failed(format!("cannot verify {}: {e}", config.data_dir.display())),
    };
    println!(
        "verified {}: {} users, {} events, {} index entries",
        config.data_dir.display(),
        report.users,
        report.events,
        report.index_entries
    );
    if report.is_clean() {
        println!("no problems found");
        return ExitCode::SUCCESS;
    }
    for problem in &report.problems {
        println!("problem: {}: {}", problem.subject, problem.what);
    }
    let unlisted = report.problem_count - report.problems.len() as u64;
    if unlisted > 0 {
        println!("… and {unlisted} more");
    }
    println!(
        "{} problems found; restore from a backup (latchkey restore) or keep this directory for analysis",
        report.problem_count
    );
    ExitCode::from(EXIT_PROBLEMS)
}

/// `latchkey config check`: every setting with its value and source; exit 1 if one that is
/// only read when used (the bootstrap token file, the data directory) is unusable.
pub fn config_check(
    args: &crate::config::ServeArgs,
    file: Option<&Path>,
    settings: &std::collections::BTreeMap<String, (String, crate::config_file::Source)>,
) -> ExitCode {
    match file {
        Some(file) => println!("config file: {}", file.display()),
        None => println!("config file: none (--config / LATCHKEY_CONFIG)"),
    }
    let width = settings.keys().map(String::len).max().unwrap_or(0);
    for (name, (value, source)) in settings {
        println!("{name:width$} = {value:<24} ({})", source.name());
    }
    let mut problems = Vec::new();
    if let Err(e) = args.bootstrap_token() {
        problems.push(e);
    }
    if args.data_dir.exists() && !args.data_dir.is_dir() {
        problems.push(format!(
            "the data directory {} is not a directory",
            args.data_dir.display()
        ));
    }
    if problems.is_empty() {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    for problem in &problems {
        eprintln!("latchkey: {problem}");
    }
    ExitCode::from(1)
}

/// `latchkey healthcheck`: GET <url>/readyz; 0 when it answers 200 within 3 s.
pub fn healthcheck(url: Option<&str>, args: &crate::config::ServeArgs) -> ExitCode {
    let base = crate::admin_cli::base_or_local(url, args.management_listen.unwrap_or(args.listen));
    let answer = crate::admin_cli::block_on(async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()
            .map_err(|e| e.to_string())?
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map_err(|e| e.to_string())
    })
    .and_then(|answer| answer);
    match answer {
        Ok(response) if response.status().is_success() => {
            println!("{base}: ready");
            ExitCode::SUCCESS
        }
        Ok(response) => failed(format!("{base}: not ready ({})", response.status())),
        Err(e) => failed(format!("{base}: unreachable: {e}")),
    }
}
