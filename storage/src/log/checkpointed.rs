//! The proof that sled holds what the log retired. Before a checkpoint retires log segments, it
//! records how far it got twice: in sled, in the checkpoint's own last batch (under a key of the
//! store's own: the run chunks' tag alone), and — once sled's flush and fsync returned — in
//! `wal/checkpointed`, written and synced on its own. At open, sled must hold at least what the
//! file says; if it holds less, sled lost a checkpoint the log no longer has (a medium that
//! lied about a sync, a damaged store), acknowledged writes may be gone, and the store refuses
//! to open — with a message naming the way back — instead of serving what is left.

use std::io::Write;
use std::path::Path;

use crate::{Backend, Runs};

const FILE: &str = "checkpointed";

/// sled's record of the last checkpoint: the chunks' tag alone (every chunk key is longer).
pub(crate) fn marker_key(runs: Runs) -> Vec<u8> {
    vec![runs.chunk_tag]
}

/// After the checkpoint up to segment `upto` is durable in sled: says so in the log directory.
pub(super) fn record(wal_dir: &Path, upto: u64) -> std::io::Result<()> {
    let tmp = wal_dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&upto.to_be_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, wal_dir.join(FILE))?;
    std::fs::File::open(wal_dir)?.sync_all()
}

fn read_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Refuses a store whose sled holds less than the log directory says was checkpointed.
pub(super) fn check(inner: &dyn Backend, wal_dir: &Path, runs: Runs) -> Result<(), String> {
    let claimed = match std::fs::read(wal_dir.join(FILE)) {
        Ok(bytes) => read_u64(&bytes).ok_or("wal/checkpointed is damaged")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("reading wal/checkpointed: {e}")),
    };
    let held = inner
        .get(&marker_key(runs))
        .map_err(|e| e.to_string())?
        .and_then(|bytes| read_u64(&bytes))
        .unwrap_or(0);
    if held < claimed {
        return Err(format!(
            "the store lost a checkpoint: the log was retired up to segment {claimed}, but the \
             store holds its checkpoints only up to segment {held} — acknowledged writes may be \
             missing. Keep this directory for analysis and restore the last backup into a new \
             one (latchkey restore)"
        ));
    }
    Ok(())
}
