//! lazyfs: a FUSE passthrough over a backing directory that keeps every
//! write in memory until its file is fsynced (fsync or fdatasync), the way
//! a page cache does, and loses what was not synced when told to: a power
//! cut. The idea is Jepsen's LazyFS; this is a small one for palaver's
//! crash loop (`palaver-bench crash --lazyfs`).
//!
//! ```text
//! lazyfs BACKING MOUNTPOINT
//! ```
//!
//! Prints `mounted` once serving, then reads commands on standard input,
//! one a line, answering each with one line:
//! - `cut`: every write not yet synced is lost (`cut: lost N pages of M files`);
//! - `torn SEED`: each unsynced 4 KiB page independently reaches the disk
//!   or not (a seeded coin), the rest is lost: the disk wrote some of its
//!   cache back before the power went (`torn: kept K of N pages of M files`);
//! - `exit` (or end of input): unmount and exit.
//!
//! What it models, and what not:
//! - Data: a write is held per page (4 KiB) and per file, and reaches the
//!   backing file only on an fsync or fdatasync of that file (any handle),
//!   which writes the file's pages, its length, and `fdatasync`s the backing
//!   file. `sync_file_range` (sled's own "flush") is not a FUSE operation:
//!   it syncs nothing here, as it promises nothing durable on a real disk.
//!   A truncation is data too (held until a sync).
//! - Namespace operations (create, mkdir, rename, unlink, chmod) go to the
//!   backing directory at once: durable at once, like LazyFS. A real
//!   filesystem may lose a rename or a creation whose directory was not
//!   fsynced; this does not simulate that.
//! - Every open is `direct_io` and attributes are never cached, so the
//!   kernel keeps no copy of anything: after a cut, readers see what the
//!   "disk" kept.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};

const PAGE: u64 = 4096;
/// Nothing is cached by the kernel.
const TTL: Duration = Duration::ZERO;

/// A file's writes since its last sync.
struct Dirty {
    /// Page index → the page's bytes as the file's users see them.
    pages: BTreeMap<u64, Vec<u8>>,
    /// The file's length as its users see it.
    len: u64,
}

#[derive(Default)]
struct State {
    /// Inode → path relative to the backing root ("" is the root).
    paths: HashMap<u64, PathBuf>,
    inodes: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Open handles on backing files.
    handles: HashMap<u64, File>,
    next_fh: u64,
    /// Unsynced writes per inode.
    dirty: HashMap<u64, Dirty>,
}

struct LazyFs {
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl State {
    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.inodes.get(rel) {
            return ino;
        }
        self.next_ino += 1;
        let ino = self.next_ino;
        self.inodes.insert(rel.to_path_buf(), ino);
        self.paths.insert(ino, rel.to_path_buf());
        ino
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inodes.remove(rel) {
            self.paths.remove(&ino);
            self.dirty.remove(&ino);
        }
    }
}

impl LazyFs {
    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn rel(&self, state: &State, ino: u64) -> Option<PathBuf> {
        state.paths.get(&ino).cloned()
    }

    fn attr(&self, state: &State, ino: u64, rel: &Path) -> std::io::Result<FileAttr> {
        let m = fs::symlink_metadata(self.full(rel))?;
        let kind = if m.is_dir() {
            FileType::Directory
        } else if m.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        let size = state.dirty.get(&ino).map_or(m.len(), |d| d.len);
        let time = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(m.atime()),
            mtime: time(m.mtime()),
            ctime: time(m.ctime()),
            crtime: time(m.ctime()),
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn child(&self, state: &State, parent: u64, name: &OsStr) -> Option<PathBuf> {
        Some(self.rel(state, parent)?.join(name))
    }

    fn backing(&self, rel: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.full(rel))
    }
}

/// Reads page `index` of `file` as stored (zeros past its end).
fn stored_page(file: &File, index: u64) -> Vec<u8> {
    let mut page = vec![0u8; PAGE as usize];
    let mut read = 0;
    while read < page.len() {
        match file.read_at(&mut page[read..], index * PAGE + read as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    page
}

/// Writes `dirty`'s pages (those `keep` accepts) and, with `set_len`, its
/// length to `file`.
fn write_back(
    file: &File,
    dirty: &Dirty,
    keep: &mut dyn FnMut() -> bool,
    set_len: bool,
) -> std::io::Result<usize> {
    let mut kept = 0;
    for (&index, page) in &dirty.pages {
        let start = index * PAGE;
        if start >= dirty.len || !keep() {
            continue;
        }
        let end = (start + PAGE).min(dirty.len);
        file.write_all_at(&page[..(end - start) as usize], start)?;
        kept += 1;
    }
    if set_len {
        file.set_len(dirty.len)?;
    }
    Ok(kept)
}

impl Filesystem for LazyFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut state = lock(&self.state);
        let Some(rel) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if fs::symlink_metadata(self.full(&rel)).is_err() {
            return reply.error(libc::ENOENT);
        }
        let ino = state.ino_for(&rel);
        match self.attr(&state, ino, &rel) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let state = lock(&self.state);
        let Some(rel) = self.rel(&state, ino) else {
            return reply.error(libc::ENOENT);
        };
        match self.attr(&state, ino, &rel) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
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
        let mut state = lock(&self.state);
        let Some(rel) = self.rel(&state, ino) else {
            return reply.error(libc::ENOENT);
        };
        if let Some(mode) = mode {
            if let Err(e) =
                fs::set_permissions(self.full(&rel), fs::Permissions::from_mode(mode & 0o7777))
            {
                return reply.error(errno(&e));
            }
        }
        if let Some(len) = size {
            // A truncation is a data change: held until a sync.
            let stored_len = fs::metadata(self.full(&rel)).map_or(0, |m| m.len());
            let dirty = state.dirty.entry(ino).or_insert_with(|| Dirty {
                pages: BTreeMap::new(),
                len: stored_len,
            });
            dirty.len = len;
            let last = len.div_ceil(PAGE);
            dirty.pages.retain(|&i, _| i < last);
            if len % PAGE != 0 {
                if let Some(page) = dirty.pages.get_mut(&(len / PAGE)) {
                    page[(len % PAGE) as usize..].fill(0);
                }
            }
        }
        match self.attr(&state, ino, &rel) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(errno(&e)),
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
        let mut state = lock(&self.state);
        let Some(rel) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        if let Err(e) = fs::create_dir(self.full(&rel)) {
            return reply.error(errno(&e));
        }
        let _ = fs::set_permissions(self.full(&rel), fs::Permissions::from_mode(mode & 0o7777));
        let ino = state.ino_for(&rel);
        match self.attr(&state, ino, &rel) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut state = lock(&self.state);
        let Some(rel) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match fs::remove_file(self.full(&rel)) {
            Ok(()) => {
                state.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut state = lock(&self.state);
        let Some(rel) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match fs::remove_dir(self.full(&rel)) {
            Ok(()) => {
                state.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
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
        let mut state = lock(&self.state);
        let (Some(from), Some(to)) = (
            self.child(&state, parent, name),
            self.child(&state, newparent, newname),
        ) else {
            return reply.error(libc::ENOENT);
        };
        if let Err(e) = fs::rename(self.full(&from), self.full(&to)) {
            return reply.error(errno(&e));
        }
        // The target's old inode is gone; the moved inode (and, for a
        // directory, everything under it) takes the new path.
        state.forget_path(&to);
        let moved: Vec<(PathBuf, u64)> = state
            .inodes
            .iter()
            .filter(|(p, _)| p.starts_with(&from))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            // (`join("")` would add a trailing slash: a file's path then
            // names no file.)
            let new = match old.strip_prefix(&from) {
                Ok(rest) if !rest.as_os_str().is_empty() => to.join(rest),
                _ => to.clone(),
            };
            state.inodes.remove(&old);
            state.inodes.insert(new.clone(), ino);
            state.paths.insert(ino, new);
        }
        reply.ok()
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let mut state = lock(&self.state);
        let Some(rel) = self.rel(&state, ino) else {
            return reply.error(libc::ENOENT);
        };
        match self.backing(&rel) {
            Ok(file) => {
                state.next_fh += 1;
                let fh = state.next_fh;
                state.handles.insert(fh, file);
                reply.opened(fh, fuser::consts::FOPEN_DIRECT_IO)
            }
            Err(e) => reply.error(errno(&e)),
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
        let mut state = lock(&self.state);
        let Some(rel) = self.child(&state, parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(mode & 0o7777)
            .open(self.full(&rel));
        match file {
            Ok(file) => {
                let ino = state.ino_for(&rel);
                state.next_fh += 1;
                let fh = state.next_fh;
                state.handles.insert(fh, file);
                match self.attr(&state, ino, &rel) {
                    Ok(attr) => reply.created(&TTL, &attr, 0, fh, fuser::consts::FOPEN_DIRECT_IO),
                    Err(e) => reply.error(errno(&e)),
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let state = lock(&self.state);
        let Some(file) = state.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let offset = offset.max(0) as u64;
        let len = match state.dirty.get(&ino) {
            Some(d) => d.len,
            None => file.metadata().map_or(0, |m| m.len()),
        };
        let end = (offset + u64::from(size)).min(len);
        if offset >= end {
            return reply.data(&[]);
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE;
            let page = match state.dirty.get(&ino).and_then(|d| d.pages.get(&index)) {
                Some(p) => std::borrow::Cow::Borrowed(p.as_slice()),
                None => std::borrow::Cow::Owned(stored_page(file, index)),
            };
            let from = (at % PAGE) as usize;
            let to = ((end - index * PAGE).min(PAGE)) as usize;
            out.extend_from_slice(&page[from..to]);
            at = index * PAGE + to as u64;
        }
        reply.data(&out)
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut state = lock(&self.state);
        let Some(file) = state.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let file = match file.try_clone() {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        let offset = offset.max(0) as u64;
        let stored_len = file.metadata().map_or(0, |m| m.len());
        let dirty = state.dirty.entry(ino).or_insert_with(|| Dirty {
            pages: BTreeMap::new(),
            len: stored_len,
        });
        let mut written = 0usize;
        while written < data.len() {
            let at = offset + written as u64;
            let index = at / PAGE;
            let within = (at % PAGE) as usize;
            let n = (PAGE as usize - within).min(data.len() - written);
            let page = dirty.pages.entry(index).or_insert_with(|| {
                // Past the held length the file reads as zeros.
                if index * PAGE >= dirty.len {
                    vec![0u8; PAGE as usize]
                } else {
                    let mut p = stored_page(&file, index);
                    let keep = (dirty.len - index * PAGE).min(PAGE) as usize;
                    p[keep..].fill(0);
                    p
                }
            });
            page[within..within + n].copy_from_slice(&data[written..written + n]);
            written += n;
        }
        dirty.len = dirty.len.max(offset + data.len() as u64);
        reply.written(data.len() as u32)
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        reply.ok()
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).handles.remove(&fh);
        reply.ok()
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut state = lock(&self.state);
        let Some(file) = state.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let file = match file.try_clone() {
            Ok(f) => f,
            Err(e) => return reply.error(errno(&e)),
        };
        if let Some(dirty) = state.dirty.remove(&ino) {
            if let Err(e) = write_back(&file, &dirty, &mut || true, true) {
                state.dirty.insert(ino, dirty);
                return reply.error(errno(&e));
            }
        }
        match file.sync_data() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
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
        // Namespace operations are durable at once here.
        reply.ok()
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = lock(&self.state);
        let Some(rel) = self.rel(&state, ino) else {
            return reply.error(libc::ENOENT);
        };
        let entries = match fs::read_dir(self.full(&rel)) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for entry in entries.flatten() {
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let child = rel.join(entry.file_name());
            let child_ino = state.ino_for(&child);
            all.push((child_ino, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(child, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok()
    }
}

/// The power cut: what was not synced is lost, except the pages `keep`
/// lets through. Answers (pages kept, pages in all, files).
fn cut(root: &Path, state: &Mutex<State>, keep: &mut dyn FnMut() -> bool) -> (usize, usize, usize) {
    let mut state = lock(state);
    let dirty = std::mem::take(&mut state.dirty);
    let (mut kept, mut pages) = (0, 0);
    for (ino, d) in &dirty {
        pages += d.pages.len();
        let Some(rel) = state.paths.get(ino) else {
            continue;
        };
        if let Ok(file) = OpenOptions::new().write(true).open(root.join(rel)) {
            // The length is metadata the disk did not get either.
            kept += write_back(&file, d, keep, false).unwrap_or(0);
            let _ = file.sync_data();
        }
    }
    (kept, pages, dirty.len())
}

/// A small seeded generator (xorshift64*) for `torn`.
struct Coin(u64);

impl Coin {
    fn flip(&mut self) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 63 == 1
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: lazyfs BACKING MOUNTPOINT");
        std::process::exit(2);
    }
    let root = PathBuf::from(&args[1]);
    let mountpoint = PathBuf::from(&args[2]);
    let state = Arc::new(Mutex::new(State::default()));
    {
        let mut s = lock(&state);
        s.paths.insert(fuser::FUSE_ROOT_ID, PathBuf::new());
        s.inodes.insert(PathBuf::new(), fuser::FUSE_ROOT_ID);
        s.next_ino = fuser::FUSE_ROOT_ID + 1;
    }
    let fs = LazyFs {
        root: root.clone(),
        state: state.clone(),
    };
    let options = [
        MountOption::FSName("lazyfs".into()),
        MountOption::RW,
        MountOption::DefaultPermissions,
    ];
    let session = match fuser::spawn_mount2(fs, &mountpoint, &options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lazyfs: cannot mount {}: {e}", mountpoint.display());
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "mounted");
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["cut"] => {
                let (_, pages, files) = cut(&root, &state, &mut || false);
                format!("cut: lost {pages} pages of {files} files")
            }
            ["torn", seed] => {
                let mut coin = Coin(seed.parse::<u64>().unwrap_or(1).max(1));
                let (kept, pages, files) = cut(&root, &state, &mut || coin.flip());
                format!("torn: kept {kept} of {pages} pages of {files} files")
            }
            ["exit"] => break,
            _ => format!("unknown command {line:?}"),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    drop(session);
}
