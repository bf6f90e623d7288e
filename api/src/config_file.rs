//! The configuration file: a TOML file of the same settings as the flags (`--config FILE` or
//! `LATCHKEY_CONFIG`), keys named as the flags (`data-dir` or `data_dir`). Precedence, highest
//! first: a flag on the command line, its environment variable, the file, the built-in default.
//! The file's values become the flags' defaults before the line is parsed, so clap applies that
//! order and validates a file's value exactly as it would the flag's. An unknown key, a nested
//! table or an unreadable file is refused at start-up.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::config::Cli;

/// The flag and variable that name the file.
pub const FLAG: &str = "config";
pub const ENV: &str = "LATCHKEY_CONFIG";

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    CommandLine,
    Environment,
    File,
    Default,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::CommandLine => "command line",
            Source::Environment => "environment",
            Source::File => "config file",
            Source::Default => "default",
        }
    }
}

/// The parsed command line, and each setting's value as given and where it came from (by flag
/// name; secrets masked).
pub struct Parsed {
    pub cli: Cli,
    pub file: Option<PathBuf>,
    pub settings: BTreeMap<String, (String, Source)>,
}

/// Settings whose values `config check` does not print.
const SECRETS: &[&str] = &["bootstrap-token"];

/// Parses `args` (the program name first) with the configuration file applied. `Err` carries
/// clap's error (help and version included), ready to be printed with `exit()`.
pub fn parse(args: Vec<OsString>) -> Result<Parsed, clap::Error> {
    let mut command = Cli::command();
    let file = file_path(&args);
    let mut from_file = Vec::new();
    if let Some(path) = &file {
        let settings = read(path)
            .map_err(|message| command.error(clap::error::ErrorKind::InvalidValue, message))?;
        for (key, value) in settings {
            let flag = key.replace('_', "-");
            let known = command
                .get_arguments()
                .find(|arg| arg.get_long() == Some(flag.as_str()) && flag != FLAG)
                .map(|arg| arg.get_id().clone());
            let Some(id) = known else {
                let message = format!(
                    "unknown setting `{key}` in {} (the keys are the flags' names, e.g. `data-dir`)",
                    path.display()
                );
                return Err(command.error(clap::error::ErrorKind::UnknownArgument, message));
            };
            command = command.mut_arg(id, |arg| arg.default_value(value));
            from_file.push(flag);
        }
    }
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let settings = settings(&command, &matches, &from_file);
    Ok(Parsed {
        cli,
        file,
        settings,
    })
}

/// `--config FILE` / `--config=FILE` on the line, else `LATCHKEY_CONFIG`.
fn file_path(args: &[OsString]) -> Option<PathBuf> {
    let long = format!("--{FLAG}");
    let with_value = format!("--{FLAG}=");
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == long {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = text.strip_prefix(&with_value) {
            return Some(PathBuf::from(value));
        }
        if text == "--" {
            break;
        }
    }
    std::env::var_os(ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The file's settings as the strings a flag would carry.
fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("config file {}: {e}", path.display()))?;
    table
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "config file {}: `{key}` must be a string, number or boolean, not {}",
                        path.display(),
                        other.type_str()
                    ))
                }
            };
            Ok((key, value))
        })
        .collect()
}

fn settings(
    command: &clap::Command,
    matches: &ArgMatches,
    from_file: &[String],
) -> BTreeMap<String, (String, Source)> {
    let mut settings = BTreeMap::new();
    for arg in command.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::CommandLine,
            Some(ValueSource::EnvVariable) => Source::Environment,
            Some(ValueSource::DefaultValue) if from_file.iter().any(|f| f == long) => Source::File,
            Some(_) => Source::Default,
            None => continue,
        };
        let value = if SECRETS.contains(&long) {
            "(set, not shown)".to_owned()
        } else {
            matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        settings.insert(long.to_owned(), (value, source));
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &[&str]) -> Vec<OsString> {
        line.iter().map(OsString::from).collect()
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latchkey.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_owned();
        (dir, path)
    }

    /// The flag beats the file, the file beats the default; the sources say which is which.
    /// (The environment's place is checked with the real binary, which owns its environment.)
    #[test]
    fn the_line_beats_the_file_and_the_file_beats_the_default() {
        let (_dir, path) = file(
            "listen = \"127.0.0.1:9100\"\ndata_dir = \"/srv/latchkey\"\ncheck-threads = 3\ncall-timeout = \"2s\"\n",
        );
        let parsed = parse(args(&[
            "latchkey",
            "--config",
            &path,
            "--listen",
            "127.0.0.1:9200",
        ]))
        .unwrap();
        let serve = parsed.cli.serve_args();
        assert_eq!(serve.listen.to_string(), "127.0.0.1:9200");
        assert_eq!(serve.data_dir, PathBuf::from("/srv/latchkey"));
        assert_eq!(serve.check_threads, 3);
        assert_eq!(serve.call_timeout, std::time::Duration::from_secs(2));
        let setting = |name: &str| parsed.settings[name].clone();
        assert_eq!(
            setting("listen"),
            ("127.0.0.1:9200".into(), Source::CommandLine)
        );
        assert_eq!(setting("data-dir"), ("/srv/latchkey".into(), Source::File));
        assert_eq!(setting("durability"), ("sync".into(), Source::Default));
    }

    #[test]
    fn a_bad_file_is_refused_with_the_reason() {
        for (text, expected) in [
            ("listen = \"nowhere\"", "nowhere"),
            ("colour = \"blue\"", "unknown setting `colour`"),
            ("log = \"verbose\"", "verbose"),
            ("[server]\nlisten = \"x\"", "must be a string"),
            ("listen = ", "config file"),
        ] {
            let (_dir, path) = file(text);
            let error = parse(args(&["latchkey", "--config", &path]))
                .err()
                .unwrap_or_else(|| panic!("{text:?} accepted"))
                .to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        let error = parse(args(&["latchkey", "--config=/no/such/file.toml"]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("cannot read the config file"), "{error}");
    }
}
