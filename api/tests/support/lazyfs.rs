//! A filesystem that forgets what was not synced, for power-loss tests (in the spirit of Jepsen's
//! LazyFS): an in-memory FUSE filesystem whose file contents become durable only at `fsync` /
//! `fdatasync` of that file. [`LazyFs::power_cut`] puts every file back to what its last sync
//! made durable — the page cache lost with the power. (A SIGKILL alone keeps the page cache, so
//! the kill -9 suite cannot show this.)
//!
//! The model, and what it leaves out: file data (writes, truncation, extension, fallocate) is
//! volatile until the file is synced; directory operations (create, mkdir, rename, unlink) are
//! durable at once, as with a journaling filesystem's metadata; a cut loses whole unsynced
//! writes, not parts of them (no torn sectors). Files are served with direct I/O, so the
//! kernel's own page cache never holds their data: every write reaches this model at once.
//!
//! Mounting needs `/dev/fuse` and root (the mount system call; no fusermount): [`LazyFs::mount`]
//! says why when it cannot, and the power-loss tests skip with that reason.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

const ROOT: u64 = 1;
const TTL: Duration = Duration::from_secs(0);

enum Content {
    File(FileData),
    Dir(BTreeMap<OsString, u64>),
}

#[derive(Default)]
struct FileData {
    data: Vec<u8>,
    /// Since the last sync, newest last: (offset, the bytes there before, the length before).
    undo: Vec<(usize, Vec<u8>, usize)>,
}

impl FileData {
    /// Records what `offset..offset + len` and the length were, before changing them.
    fn remember(&mut self, offset: usize, len: usize) {
        let end = (offset + len).min(self.data.len());
        let old = self
            .data
            .get(offset..end)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        self.undo.push((offset, old, self.data.len()));
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        self.remember(offset, bytes.len());
        if self.data.len() < offset + bytes.len() {
            self.data.resize(offset + bytes.len(), 0);
        }
        self.data[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    fn set_len(&mut self, len: usize) {
        let keep = self.data.len().min(len);
        self.remember(keep, self.data.len() - keep);
        self.data.resize(len, 0);
    }

    /// Back to the last synced contents.
    fn revert(&mut self) -> usize {
        let lost = self.undo.len();
        while let Some((offset, old, len)) = self.undo.pop() {
            if self.data.len() < offset + old.len() {
                self.data.resize(offset + old.len(), 0);
            }
            self.data[offset..offset + old.len()].copy_from_slice(&old);
            self.data.truncate(len);
            self.data.resize(len, 0);
        }
        lost
    }
}

struct Node {
    content: Content,
    perm: u16,
    mtime: SystemTime,
}

#[derive(Default)]
struct State {
    nodes: HashMap<u64, Node>,
    next: u64,
}

/// The filesystem's state, shared between the FUSE thread and the test.
#[derive(Clone)]
pub struct LazyFs(Arc<Mutex<State>>);

/// A mounted [`LazyFs`]; unmounted when dropped.
pub struct Mounted {
    pub fs: LazyFs,
    _session: fuser::BackgroundSession,
}

impl LazyFs {
    /// Mounts an empty filesystem at `mountpoint` (an existing empty directory).
    pub fn mount(mountpoint: &Path) -> Result<Mounted, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse does not exist".into());
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting without fusermount needs root".into());
        }
        let mut state = State {
            next: ROOT + 1,
            ..Default::default()
        };
        state.nodes.insert(
            ROOT,
            Node {
                content: Content::Dir(BTreeMap::new()),
                perm: 0o755,
                mtime: SystemTime::now(),
            },
        );
        let fs = LazyFs(Arc::new(Mutex::new(state)));
        let options = [
            MountOption::FSName("lazyfs".into()),
            MountOption::AllowOther,
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(Handler(fs.clone()), mountpoint, &options)
            .map_err(|e| format!("mounting lazyfs at {}: {e}", mountpoint.display()))?;
        Ok(Mounted {
            fs,
            _session: session,
        })
    }

    /// The power goes: every file loses what was written since its last sync. Returns how many
    /// unsynced writes were lost.
    pub fn power_cut(&self) -> usize {
        let mut state = self.0.lock().unwrap();
        state
            .nodes
            .values_mut()
            .map(|node| match &mut node.content {
                Content::File(file) => file.revert(),
                Content::Dir(_) => 0,
            })
            .sum()
    }
}

struct Handler(LazyFs);

fn attr(ino: u64, node: &Node) -> FileAttr {
    let (kind, size, nlink) = match &node.content {
        Content::File(file) => (FileType::RegularFile, file.data.len() as u64, 1),
        Content::Dir(_) => (FileType::Directory, 0, 2),
    };
    FileAttr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: node.mtime,
        mtime: node.mtime,
        ctime: node.mtime,
        crtime: node.mtime,
        kind,
        perm: node.perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl State {
    fn dir(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, i32> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.content) {
            Some(Content::Dir(children)) => Ok(children),
            Some(Content::File(_)) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut FileData, i32> {
        match self.nodes.get_mut(&ino).map(|n| &mut n.content) {
            Some(Content::File(file)) => Ok(file),
            Some(Content::Dir(_)) => Err(libc::EISDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, content: Content, perm: u16) -> Result<u64, i32> {
        let ino = self.next;
        let children = self.dir(parent)?;
        if children.contains_key(name) {
            return Err(libc::EEXIST);
        }
        children.insert(name.to_owned(), ino);
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                content,
                perm,
                mtime: SystemTime::now(),
            },
        );
        Ok(ino)
    }

    fn touch(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.mtime = SystemTime::now();
        }
    }
}

impl Handler {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0 .0.lock().unwrap()
    }
}

impl Filesystem for Handler {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.state();
        let found = state
            .dir(parent)
            .and_then(|d| d.get(name).copied().ok_or(libc::ENOENT));
        match found.and_then(|ino| {
            state
                .nodes
                .get(&ino)
                .map(|n| attr(ino, n))
                .ok_or(libc::ENOENT)
        }) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.state().nodes.get(&ino) {
            Some(node) => reply.attr(&TTL, &attr(ino, node)),
            None => reply.error(libc::ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        if let Some(size) = size {
            if let Err(e) = state.file(ino).map(|f| f.set_len(size as usize)) {
                return reply.error(e);
            }
        }
        match state.nodes.get_mut(&ino) {
            Some(node) => {
                if let Some(mode) = mode {
                    node.perm = (mode & 0o7777) as u16;
                }
                node.mtime = SystemTime::now();
                reply.attr(&TTL, &attr(ino, node))
            }
            None => reply.error(libc::ENOENT),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let made = state.add(
            parent,
            name,
            Content::Dir(BTreeMap::new()),
            (mode & 0o7777) as u16,
        );
        match made {
            Ok(ino) => reply.entry(&TTL, &attr(ino, &state.nodes[&ino]), 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let made = state.add(
            parent,
            name,
            Content::File(FileData::default()),
            (mode & 0o7777) as u16,
        );
        match made {
            Ok(ino) => reply.created(
                &TTL,
                &attr(ino, &state.nodes[&ino]),
                0,
                ino,
                FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        reply.opened(ino, FOPEN_DIRECT_IO);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let mut state = self.state();
        match state.file(ino) {
            Ok(file) => {
                let start = (offset as usize).min(file.data.len());
                let end = (start + size as usize).min(file.data.len());
                reply.data(&file.data[start..end])
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        match state.file(ino) {
            Ok(file) => {
                file.write(offset as usize, data);
                state.touch(ino);
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let mut state = self.state();
        match state.file(ino) {
            Ok(file) => {
                let end = (offset + length) as usize;
                if file.data.len() < end {
                    file.set_len(end);
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        match state.file(ino) {
            Ok(file) => {
                file.undo.clear();
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        match state.dir(parent).map(|d| d.remove(name)) {
            Ok(Some(_)) => reply.ok(),
            Ok(None) => reply.error(libc::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let Ok(Some(ino)) = state.dir(parent).map(|d| d.get(name).copied()) else {
            return reply.error(libc::ENOENT);
        };
        if state.dir(ino).map(|d| !d.is_empty()).unwrap_or(true) {
            return reply.error(libc::ENOTEMPTY);
        }
        let _ = state.dir(parent).map(|d| d.remove(name));
        reply.ok()
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let Ok(Some(ino)) = state.dir(parent).map(|d| d.remove(name)) else {
            return reply.error(libc::ENOENT);
        };
        match state.dir(newparent) {
            Ok(children) => {
                children.insert(newname.to_owned(), ino);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.state();
        let children: Vec<(OsString, u64)> = match state.dir(ino) {
            Ok(children) => children.iter().map(|(n, i)| (n.clone(), *i)).collect(),
            Err(e) => return reply.error(e),
        };
        let entries = [(OsString::from("."), ino), (OsString::from(".."), ROOT)]
            .into_iter()
            .chain(children);
        for (i, (name, child)) in entries.enumerate().skip(offset as usize) {
            let kind = match state.nodes.get(&child).map(|n| &n.content) {
                Some(Content::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(child, (i + 1) as i64, kind, &name) {
                break;
            }
        }
        reply.ok()
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        // Plenty of room: 64 GiB in 4 KiB blocks, all free.
        let blocks = 16 << 20;
        reply.statfs(blocks, blocks, blocks, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::FileData;

    #[test]
    fn a_cut_restores_the_synced_contents() {
        let mut file = FileData::default();
        file.write(0, b"hello");
        file.undo.clear(); // synced
        file.write(3, b"LOWORLD");
        file.set_len(4);
        file.write(10, b"x");
        assert_eq!(file.revert(), 3);
        assert_eq!(file.data, b"hello");
    }
}
