//! Backups and restores of a whole engine (the format and the consistent read are the store's:
//! `latchkey_storage::backup`). A running engine backs up online: the backup holds every write
//! acknowledged before it started and none that began after its point, and the engine keeps
//! serving meanwhile. A stopped data directory is backed up by opening its store alone (the log
//! replayed, no actors started). A restore goes into an empty directory and checks the schema
//! version before it is moved into place.

use std::io::{Read, Write};

use latchkey_storage::Store;

pub use latchkey_storage::backup::{check_backup, BackupSummary, BACKUP_FORMAT};

use crate::access::{Caller, Permission, Reach};
use crate::error::{Error, ErrorId, OpenError};
use crate::{store_config, Config, Engine};

impl Engine {
    /// A backup reads everything: only a caller with the instance-wide backup permission
    /// (IAM_OWNER) may take one.
    pub fn authorize_backup(&self, caller: &Caller) -> Result<(), Error> {
        self.check_open()?;
        if caller.reach(Permission::Backup)? != Reach::Instance {
            return Err(ErrorId::PermissionDenied.into());
        }
        Ok(())
    }

    /// Writes a backup of the whole store to `out`, at one instant. Blocking: call it from a
    /// blocking thread. Checkpoints wait until it ends, so a slow `out` grows the memtable.
    pub fn write_backup(&self, out: impl Write) -> Result<BackupSummary, Error> {
        Ok(self.inner.store.backup(out)?)
    }
}

/// Backs up the stopped data directory of `config` to `out`. Fails if a server holds it.
pub fn backup_offline(config: &Config, out: impl Write) -> Result<BackupSummary, OpenError> {
    let store = Store::open(&store_config(config))?;
    let summary = store.backup(out);
    store.close()?;
    Ok(summary?)
}

/// Restores the backup read from `input` into `config.data_dir`, which must be empty or
/// missing. Nothing is left behind if the file is damaged or of an unknown schema.
pub fn restore(input: impl Read, config: &Config) -> Result<BackupSummary, OpenError> {
    Ok(latchkey_storage::backup::restore(
        input,
        &store_config(config),
    )?)
}
