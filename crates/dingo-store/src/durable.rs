//! What makes a sled flush durable against power loss, not only against a crashed process.
//!
//! sled 0.34 ends a flush with `sync_file_range`, which sends the log's pages to the device but
//! neither flushes the device's volatile write cache nor the file's metadata (a log that grew
//! needs its new size on disk too): after a power cut or an OS crash, a "stored" message could
//! be gone while its sender, told it was stored, has dropped it (sled issue #1452). sled also
//! writes a node too large for its log (a big document, say) to a file of its own under
//! `blobs/`, never synced. So after each sled flush, [`Syncer::sync`] `fdatasync`s the log file,
//! and `fsync`s every blob file not synced before, and the blob directory, when the directory
//! changed since it last looked.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old the blob directory's modification time must be before a listing is trusted to cover
/// it: the kernel stamps times from a coarse clock, so a file created in the same tick as an
/// earlier change, after the listing, would leave the time unchanged.
const SETTLED: Duration = Duration::from_secs(1);

/// Syncs one sled store's files. Shared by the store thread and the flusher thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    log: File,
    blobs: PathBuf,
    seen: Mutex<BlobsSeen>,
}

#[derive(Debug, Default)]
struct BlobsSeen {
    /// The blob directory's modification time when it was last listed, if that listing is
    /// known to be complete (see [`SETTLED`]).
    listed_at: Option<SystemTime>,
    /// Blob files already synced.
    synced: HashSet<OsString>,
    /// Whether the blob directory itself was synced once.
    dir_synced: bool,
}

impl Syncer {
    /// For the sled store in `dir` (already opened, so its files exist). Makes the store's
    /// directory entries durable once, as a new store's are not yet.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        // A read-only descriptor is enough: fsync flushes the file, whoever wrote it.
        let log = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        let syncer = Self { log, blobs: dir.join("blobs"), seen: Mutex::default() };
        syncer.sync_blobs()?;
        Ok(syncer)
    }

    /// Call after sled's flush returned: everything it flushed is then on stable storage.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.sync_blobs()?;
        self.log.sync_data()
    }

    /// Syncs blob files that appeared since the directory was last listed, then the directory;
    /// blobs are rare, so this is usually one `stat`. sled writes a blob before the log record
    /// that points to it, so the blobs of everything flushed are in the directory by now.
    fn sync_blobs(&self) -> io::Result<()> {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let modified = match std::fs::metadata(&self.blobs) {
            Ok(m) => m.modified()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if seen.listed_at == Some(modified) {
            return Ok(());
        }
        let mut present = HashSet::new();
        // The directory's own entries need a sync the first time and whenever a blob is new.
        let mut new_entries = !seen.dir_synced;
        for entry in std::fs::read_dir(&self.blobs)? {
            let name = entry?.file_name();
            if !seen.synced.contains(&name) {
                match File::open(self.blobs.join(&name)) {
                    Ok(f) => f.sync_all()?,
                    // sled removed it meanwhile (a rewritten node's old blob).
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new_entries = true;
            }
            present.insert(name);
        }
        if new_entries {
            sync_dir(&self.blobs)?;
            seen.dir_synced = true;
        }
        seen.synced = present;
        let settled = SystemTime::now().duration_since(modified).is_ok_and(|age| age >= SETTLED);
        seen.listed_at = settled.then_some(modified);
        Ok(())
    }

    /// The blob files synced so far (for tests).
    #[cfg(test)]
    pub(crate) fn synced_blobs(&self) -> HashSet<OsString> {
        self.seen.lock().map(|s| s.synced.clone()).unwrap_or_default()
    }
}

/// Makes `dir`'s entries (files created, renamed or removed in it) durable. Unix only: other
/// systems cannot open a directory this way and keep their entries by other means.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
