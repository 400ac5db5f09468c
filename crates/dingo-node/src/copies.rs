//! Fetched files are kept once: as the plaintext file the user asked for.
//!
//! A sharer keeps its chunks sealed in the chunk store and sends them as stored. A fetcher
//! does not keep a second, sealed copy of what it fetched: that would write every byte to disk
//! twice (which halves the speed of a fetch once the disk, not the CPU, is the limit) and take
//! twice the space. Instead it records where its copy is, and serves a chunk from it by
//! reading the plaintext and sealing it again. Sealing is deterministic (the file's own key, the
//! chunk's index as nonce), so the result is byte for byte the chunk the sharer made; it is
//! sent only if it hashes to the name it was asked by. A copy the user changed, moved or
//! deleted is therefore never served wrong: its chunks are simply not here any more.
//!
//! The same check lets a fetch resume from its own partial file and reuse an earlier copy.

use crate::chat::Core;
use crate::files::FileRec;
use crate::NodeError;
use dingo_crypto::file::seal_chunk;
use dingo_crypto::Secret32;
use dingo_store::{Batch, Store, Table};
use dingo_types::file::{ChunkHash, FileManifest};
use dingo_types::FileId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where this node's plaintext copy of a file version is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FileCopy {
    /// The file (the fetch's `.dingo-part` file until the fetch completes).
    pub path: String,
    /// Whether every chunk was written and checked.
    pub complete: bool,
}

/// Which file version, and which chunk of it, a chunk hash names.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ChunkSource {
    file: FileId,
    index: u32,
}

/// What a server needs to make a chunk again from a plaintext copy.
pub(crate) struct CopiedChunk {
    path: PathBuf,
    key: Secret32,
    index: usize,
    offset: u64,
    len: u64,
    hash: ChunkHash,
}

impl CopiedChunk {
    /// The sealed chunk, if the copy still holds exactly what was fetched.
    pub(crate) fn reseal(&self) -> std::io::Result<Option<Vec<u8>>> {
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(mut buf) = read_range(&file, self.offset, self.len)? else { return Ok(None) };
        Ok(seal_matches(&self.key, self.index, &mut buf, &self.hash).then_some(buf))
    }
}

/// `len` bytes of `file` at `offset` (with room for a tag), or `None` if the file is shorter.
pub(crate) fn read_range(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(len as usize + 16);
    buf.resize(len as usize, 0);
    match file.read_exact_at(&mut buf, offset) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Seals `plain` (chunk `index`) in place and says whether it became the chunk named `hash`.
pub(crate) fn seal_matches(key: &Secret32, index: usize, plain: &mut Vec<u8>, hash: &ChunkHash) -> bool {
    matches!(seal_chunk(key, index as u64, plain), Ok(h) if &h == hash)
}

impl Core {
    /// Records `path` as this node's copy of `manifest`'s file, and every chunk of it as
    /// servable from there.
    pub(crate) fn record_copy(
        &self,
        s: &Store,
        manifest: &FileManifest,
        path: &Path,
        complete: bool,
    ) -> Result<(), NodeError> {
        let file = manifest.id();
        let mut b = Batch::default();
        let copy = FileCopy { path: path.display().to_string(), complete };
        s.put(&mut b, Table::FileCopies, &file.0, &copy);
        if !complete {
            for (index, hash) in manifest.chunks.iter().enumerate() {
                // A hash already served from another file's whole copy stays with it: a
                // teammate's manifest that names someone else's chunks cannot take them over.
                if let Some(other) = s.get::<ChunkSource>(Table::ChunkSources, hash)? {
                    if other.file != file && self.file_copy(s, &other.file)?.is_some_and(|c| c.complete) {
                        continue;
                    }
                }
                let source = ChunkSource { file, index: index as u32 };
                s.put(&mut b, Table::ChunkSources, hash, &source);
            }
        }
        self.apply(s, b)
    }

    /// This node's copy of a file version, if it made one.
    pub(crate) fn file_copy(&self, s: &Store, file: &FileId) -> Result<Option<FileCopy>, NodeError> {
        Ok(s.get::<FileCopy>(Table::FileCopies, &file.0)?)
    }

    /// Every copy this node made, by file version.
    pub(crate) fn file_copies(&self, s: &Store) -> Result<HashMap<FileId, FileCopy>, NodeError> {
        let mut out = HashMap::new();
        for r in s.scan::<FileCopy>(Table::FileCopies, &[]) {
            let (k, copy) = r?;
            if let Ok(id) = <[u8; 32]>::try_from(&k[..]) {
                out.insert(FileId(id), copy);
            }
        }
        Ok(out)
    }

    /// Where to make chunk `hash` again from, if this node fetched a file it belongs to.
    pub(crate) fn copied_chunk(&self, s: &Store, hash: &ChunkHash) -> Result<Option<CopiedChunk>, NodeError> {
        let Some(source) = s.get::<ChunkSource>(Table::ChunkSources, hash)? else { return Ok(None) };
        let Some(copy) = self.file_copy(s, &source.file)? else { return Ok(None) };
        let Some(rec) = s.get::<FileRec>(Table::Files, &source.file.0)? else { return Ok(None) };
        let index = source.index as usize;
        if rec.manifest.chunks.get(index) != Some(hash) {
            return Ok(None);
        }
        Ok(Some(CopiedChunk {
            path: PathBuf::from(copy.path),
            key: Secret32::from_bytes(rec.manifest.key),
            index,
            offset: rec.manifest.chunk_offset(index),
            len: rec.manifest.chunk_len(index),
            hash: *hash,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dingo_crypto::file::new_file_key;

    #[test]
    fn a_manifest_naming_another_files_chunks_does_not_take_them_over() {
        let dir = tempfile::tempdir().expect("tmp");
        let me = dingo_crypto::identity::Identity::generate("alice");
        let store = Store::open(dir.path(), dingo_store_key(&me)).expect("open");
        let core = Core::new(me);
        let shared = [[5u8; 32], [6u8; 32]];
        let ours = FileManifest {
            name: "plan.bin".into(),
            size: 2 << 20,
            chunk_size: 1 << 20,
            chunks: shared.to_vec(),
            key: [1; 32],
        };
        core.record_copy(&store, &ours, Path::new("/tmp/plan.bin.dingo-part"), false).expect("record");
        core.record_copy(&store, &ours, Path::new("/tmp/plan.bin"), true).expect("record");
        // A teammate's manifest that lists our chunks among its own (so another file id).
        let theirs = FileManifest {
            name: "bait.bin".into(),
            size: 3 << 20,
            chunk_size: 1 << 20,
            chunks: vec![shared[0], shared[1], [7; 32]],
            key: [2; 32],
        };
        assert_ne!(ours.id(), theirs.id());
        core.record_copy(&store, &theirs, Path::new("/tmp/bait.bin.dingo-part"), false).expect("record");
        let source =
            |h: &ChunkHash| store.get::<ChunkSource>(Table::ChunkSources, h).expect("get").expect("some");
        assert_eq!(source(&shared[0]).file, ours.id());
        assert_eq!(source(&shared[1]).file, ours.id());
        assert_eq!(source(&[7; 32]).file, theirs.id());
    }

    fn dingo_store_key(me: &dingo_crypto::identity::Identity) -> dingo_crypto::at_rest::StorageKey {
        dingo_crypto::at_rest::StorageKey::new(me.storage_key().clone())
    }

    #[test]
    fn a_copy_serves_its_chunks_only_while_it_is_unchanged() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = new_file_key();
        let plain: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut sealed = plain[1000..2000].to_vec();
        let hash = seal_chunk(&key, 1, &mut sealed).expect("seal");
        let path = dir.path().join("copy.bin");
        std::fs::write(&path, &plain).expect("write");
        let chunk = CopiedChunk {
            path: path.clone(),
            key: Secret32::from_bytes(*key.expose()),
            index: 1,
            offset: 1000,
            len: 1000,
            hash,
        };
        assert_eq!(chunk.reseal().expect("read").as_deref(), Some(&sealed[..]));
        // Edited: the same nonce over other bytes would leak; nothing is sent.
        let mut edited = plain.clone();
        edited[1500] ^= 1;
        std::fs::write(&path, &edited).expect("edit");
        assert_eq!(chunk.reseal().expect("read"), None);
        // Cut short, or gone.
        std::fs::write(&path, &plain[..1500]).expect("truncate");
        assert_eq!(chunk.reseal().expect("read"), None);
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(chunk.reseal().expect("read"), None);
    }
}
