//! The store's write-ahead log: what makes a batch durable, instead of a sled flush.
//!
//! A sled flush hands its log buffer to sled's I/O threads (waking all seven of them), waits
//! for a `sync_file_range`, and still needs an `fdatasync` to survive a power cut (see
//! `durable.rs`). Here a flush is one `pwrite` of the batches' records and one `fdatasync`, on
//! the flushing thread. sled is written only with batches whose record is already durable (see
//! `lib.rs`), so after any crash sled holds the last checkpoint's state and some of the writes
//! of durable batches, and replaying the log's records in order on top gives every key its last
//! value: every write is a blind put or delete, so applying one again is harmless.
//!
//! The file (`wal` beside sled's) is reused from its start after each checkpoint (the number
//! of the next record written into sled, then sled flushed and synced). A record is
//! `len: u32 LE`, `lsn: u64 LE`, then its writes sealed with the storage key, the log version
//! and the lsn as associated data. Replay starts at offset 0 with the checkpoint's number and
//! stops at the first record that is not the next number or does not open: the tail of a
//! write a crash cut, or what is left of records from before the last checkpoint.

use crate::Write;
use dingo_crypto::at_rest::StorageKey;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::path::Path;

/// The log's file name in the store directory.
pub(crate) const FILE: &str = "wal";
/// Bytes written before the next flush checkpoints and starts the file over (a round that
/// alone is larger still goes in whole: the file grows).
pub(crate) const CAPACITY: u64 = 4 * 1024 * 1024;
/// `len` and `lsn`.
const FRAME_HEADER: usize = 4 + 8;
/// What opening reads of the log first (most opens find a checkpoint's empty log).
const FIRST_READ: u64 = 64 * 1024;

fn aad(lsn: u64) -> [u8; 21] {
    let mut a = [0u8; 21];
    a[..13].copy_from_slice(b"dingo/wal/v1\0");
    a[13..].copy_from_slice(&lsn.to_le_bytes());
    a
}

/// One batch as a log record, ready to write.
pub(crate) fn frame(key: &StorageKey, lsn: u64, writes: &[Write]) -> Vec<u8> {
    let room = writes.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 8).sum::<usize>();
    let buf = StorageKey::value_buffer(room);
    // Byte vectors always serialize.
    let buf = postcard::to_extend(writes, buf).unwrap_or_else(|_| StorageKey::value_buffer(0));
    let sealed = key.seal_buffer(&aad(lsn), buf);
    let mut out = Vec::with_capacity(FRAME_HEADER + sealed.len());
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&sealed);
    out
}

/// The batches recorded in `log` from `first_lsn` on, in order (see the module doc for where
/// replay stops).
#[cfg(test)]
fn records(key: &StorageKey, log: &[u8], first_lsn: u64) -> Vec<Vec<Write>> {
    parse(key, log, first_lsn).0
}

/// [`records`], and whether parsing stopped only because `log` ended inside a record (more of
/// the file would tell).
fn parse(key: &StorageKey, log: &[u8], first_lsn: u64) -> (Vec<Vec<Write>>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut lsn = first_lsn;
    loop {
        let Some(header) = log.get(at..at + FRAME_HEADER) else { return (out, true) };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut n = [0u8; 8];
        n.copy_from_slice(&header[4..]);
        if u64::from_le_bytes(n) != lsn || len == 0 {
            return (out, false);
        }
        let Some(sealed) = log.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else { return (out, true) };
        let Ok(plain) = key.open(&aad(lsn), sealed) else { return (out, false) };
        let Ok(writes) = postcard::from_bytes::<Vec<Write>>(&plain) else { return (out, false) };
        out.push(writes);
        at += FRAME_HEADER + len;
        lsn += 1;
    }
}

/// The open log file and where the next record goes.
#[derive(Debug)]
pub(crate) struct LogFile {
    file: File,
    offset: u64,
    capacity: u64,
}

impl LogFile {
    /// Opens the log in `dir`, creating it only if `create`.
    pub(crate) fn open(dir: &Path, create: bool, capacity: u64) -> io::Result<Self> {
        let path = dir.join(FILE);
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Self { file, offset: 0, capacity })
    }

    /// The batches to replay (see the module doc). The file keeps older records after the current
    /// ones, so it is read only as far as they go: a first slice, then more while a record
    /// runs past what was read.
    pub(crate) fn replay(&self, key: &StorageKey, first_lsn: u64) -> io::Result<Vec<Vec<Write>>> {
        let size = self.file.metadata()?.len();
        let mut want = FIRST_READ.min(size);
        loop {
            let mut log = vec![0u8; want as usize];
            (&self.file).seek(SeekFrom::Start(0))?;
            (&self.file).read_exact(&mut log)?;
            let (batches, cut) = parse(key, &log, first_lsn);
            if !cut || want == size {
                return Ok(batches);
            }
            want = (want * 4).min(size);
        }
    }

    /// Whether `bytes` more must wait for a checkpoint (the file is full, and not empty).
    pub(crate) fn is_full_for(&self, bytes: usize) -> bool {
        self.offset > 0 && self.offset + bytes as u64 > self.capacity
    }

    /// Writes `frames` after the last records and makes them durable.
    pub(crate) fn append_synced(&mut self, frames: &[&[u8]]) -> io::Result<()> {
        let joined;
        let bytes: &[u8] = match frames {
            [one] => one,
            many => {
                joined = many.concat();
                &joined
            }
        };
        (&self.file).seek(SeekFrom::Start(self.offset))?;
        (&self.file).write_all(bytes)?;
        self.file.sync_data()?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Starts over at the beginning: everything recorded so far is in sled, durably.
    pub(crate) fn rewind(&mut self) {
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dingo_crypto::Secret32;

    fn key() -> StorageKey {
        StorageKey::new(Secret32::from_bytes([3; 32]))
    }

    fn batch(i: u8) -> Vec<Write> {
        vec![(vec![4, i], Some(vec![i; 10])), (vec![5, i], None)]
    }

    #[test]
    fn records_replay_in_order_and_stop_at_a_cut_or_an_older_record() {
        let k = key();
        let mut log: Vec<u8> = (7..10).flat_map(|lsn| frame(&k, lsn, &batch(lsn as u8))).collect();
        assert_eq!(records(&k, &log, 7), vec![batch(7), batch(8), batch(9)]);
        assert!(records(&k, &log, 6).is_empty(), "a record before the checkpoint's is not replayed");
        assert!(records(&k, &log, 8).is_empty(), "nor one after a missing record");
        // A write a crash cut short, and then the bytes of one past record.
        let whole = log.len();
        log.truncate(whole - 5);
        assert_eq!(records(&k, &log, 7).len(), 2);
        log.extend(frame(&k, 3, &batch(3)));
        assert_eq!(records(&k, &log, 7).len(), 2);
    }

    #[test]
    fn a_record_changed_or_under_another_key_does_not_replay() {
        let k = key();
        let mut log = frame(&k, 1, &batch(1));
        assert!(records(&StorageKey::new(Secret32::from_bytes([4; 32])), &log, 1).is_empty());
        let last = log.len() - 1;
        log[last] ^= 1;
        assert!(records(&k, &log, 1).is_empty());
        let mut lying = frame(&k, 1, &batch(1));
        lying[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(records(&k, &lying, 1).is_empty(), "a length past the end is a cut, not a panic");
    }

    fn bytes(len: std::ops::Range<usize>) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::prelude::any::<u8>(), len)
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_replay_without_a_panic_and_records_round_trip(
            noise in bytes(0..600),
            batches in proptest::collection::vec(
                proptest::collection::vec((bytes(1..40), proptest::option::of(bytes(0..200))), 1..5),
                0..6,
            ),
        ) {
            let k = key();
            let _ = records(&k, &noise, 0);
            let mut log: Vec<u8> = Vec::new();
            for (i, b) in batches.iter().enumerate() {
                log.extend(frame(&k, 40 + i as u64, b));
            }
            log.extend(&noise);
            proptest::prop_assert_eq!(records(&k, &log, 40), batches);
        }
    }

    #[test]
    fn the_log_is_sealed() {
        let canary = b"CANARY-IN-THE-LOG";
        let log = frame(&key(), 1, &[(canary.to_vec(), Some(canary.to_vec()))]);
        assert!(!log.windows(canary.len()).any(|w| w == canary));
    }
}
