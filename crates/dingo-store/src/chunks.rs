//! File chunks, kept as files named by their BLAKE3 hash (`chunks/ab/cdef…`), beside the sled
//! store rather than in it: they are already sealed with their file's key, are written once and
//! read whole, and at up to 16 MiB each would only bloat sled's log. A chunk appears under its
//! name only complete (written to a temporary file, then renamed), and every reader checks the
//! hash or the AEAD tag, so a damaged chunk is found and fetched again, never used.

use dingo_types::file::ChunkHash;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The chunk directory of one home.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ChunkStore {
    /// The chunk store at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Where chunk `hash` lives.
    pub fn path(&self, hash: &ChunkHash) -> PathBuf {
        let name = hex(hash);
        self.dir.join(&name[..2]).join(&name[2..])
    }

    /// Whether the chunk is here (complete; its bytes are checked when read).
    pub fn has(&self, hash: &ChunkHash) -> bool {
        self.path(hash).is_file()
    }

    /// The chunk's bytes, or `None` if it is not here.
    pub fn read(&self, hash: &ChunkHash) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(hash)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores a chunk under its hash (the caller has checked it), through the page cache: write
    /// many, then [`ChunkStore::make_durable`] them together.
    pub fn write(&self, hash: &ChunkHash, sealed: &[u8]) -> io::Result<()> {
        let path = self.path(hash);
        let parent = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".{}.{}.part", hex(&hash[..8]), std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(sealed)?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }

    /// Makes chunks written earlier durable: their bytes, and the directory entries naming
    /// them (a file synced but not its name can be gone after a power cut).
    pub fn make_durable<'a>(&self, hashes: impl IntoIterator<Item = &'a ChunkHash>) -> io::Result<()> {
        let mut parents = std::collections::BTreeSet::new();
        for hash in hashes {
            let path = self.path(hash);
            std::fs::File::open(&path)?.sync_all()?;
            if let Some(parent) = path.parent() {
                parents.insert(parent.to_path_buf());
            }
        }
        self.sync_dirs(parents.iter().map(PathBuf::as_path))
    }

    /// Syncs `dirs` (chunk subdirectories), then the chunk directory and the one holding it,
    /// which gained entries when the first chunks were written.
    fn sync_dirs<'a>(&'a self, dirs: impl IntoIterator<Item = &'a Path>) -> io::Result<()> {
        let root = [Some(self.dir.as_path()), self.dir.parent()];
        for dir in dirs.into_iter().chain(root.into_iter().flatten()) {
            crate::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Deletes a chunk found damaged.
    pub fn remove(&self, hash: &ChunkHash) -> io::Result<()> {
        match std::fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_stored_under_their_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = ChunkStore::new(dir.path().join("chunks"));
        let h = [0xab; 32];
        assert!(!store.has(&h));
        assert_eq!(store.read(&h).expect("read"), None);
        store.write(&h, b"sealed").expect("write");
        assert!(store.has(&h));
        let h2 = [0x01; 32];
        store.write(&h2, b"later").expect("write");
        store.make_durable([&h, &h2]).expect("sync");
        assert!(store.make_durable([&[0x02; 32]]).is_err(), "a missing chunk cannot be made durable");
        assert_eq!(store.read(&h).expect("read").as_deref(), Some(&b"sealed"[..]));
        store.remove(&h).expect("remove");
        store.remove(&h).expect("twice");
        assert!(!store.has(&h));
    }
}
