//! Dingo's store: one sled database per home, every value sealed with the storage key
//! (XChaCha20-Poly1305, location as associated data), keys prefixed by [`Table`].
//!
//! sled is blocking, so [`StoreHandle`] runs every operation on the store's own thread and the
//! async runtime only awaits replies. Durability is group-committed: [`StoreHandle::flush`]
//! callers that arrive while a flush is running share the next one, so a burst of messages
//! costs a few fsyncs, not one each. Keys are never secret (ids and sequence numbers only);
//! values are never stored in clear, so a copied store directory shows no plaintext.

pub mod chunks;
mod durable;

pub use durable::sync_dir;

use dingo_crypto::at_rest::StorageKey;
use durable::Syncer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::oneshot;

/// The on-disk format version, stored (sealed) under the meta table.
pub const FORMAT_VERSION: u32 = 1;
/// sled page cache cap; its 1 GiB default would dominate a node's memory.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Queued store jobs before callers wait.
pub const JOB_QUEUE: usize = 1024;
/// Room a record is serialized into before it grows (most records are messages, under 1 KiB).
const PUT_CAPACITY: usize = 1024;
/// Queued flush requests before callers wait.
pub const FLUSH_QUEUE: usize = 4096;

/// Logical tables, each a one-byte key prefix in the single sled tree (so a batch across
/// tables is atomic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Table {
    /// Store format and identity check.
    Meta = 0,
    /// Contacts by user id.
    Contacts = 1,
    /// Contact user id by device key.
    ContactByDevice = 2,
    /// Ratchet sessions by peer user id.
    Sessions = 3,
    /// Messages by conversation, time and id.
    Messages = 4,
    // 5 is unused: messages are found by their key (conversation, time, sequence, id), which
    // outbox entries and read receipts carry, so no id index is kept.
    /// Sealed envelopes waiting for delivery, by peer and sequence.
    Outbox = 6,
    /// Conversation state (sequence counters, unread count).
    Conversations = 7,
    /// Received-sequence windows by conversation and sender device.
    Replay = 8,
    /// Peer addresses by device key.
    Addresses = 9,
    /// Team membership ops by team and op hash.
    TeamOps = 10,
    /// This home's team, pending join and settings.
    Team = 11,
    /// Join codes this admin issued, by token.
    JoinTokens = 12,
    /// Sender-key chains by group and device (mine and other members').
    GroupKeys = 13,
    /// Group envelopes (mine and other members'), by group, author device and sequence number:
    /// one copy, whatever the number of recipients, served to members who lack them.
    GroupLog = 14,
    /// Per-member delivery and read status of my group messages, by message key and member.
    Receipts = 15,
    /// DINGs sent and received, by id.
    Dings = 16,
    /// 1:1 envelopes carried for other devices, by recipient device, author and sequence.
    Mailbox = 17,
    /// Automerge documents (projects' task boards), saved whole, by group id.
    Docs = 18,
    /// Shared files (manifest, where shared, by whom), by file id.
    Files = 19,
    /// Where this node's plaintext copy of a fetched file is, by file id.
    FileCopies = 20,
    /// Which fetched file and chunk index a chunk hash names (to serve it from the copy).
    ChunkSources = 21,
    /// My 1:1 messages acknowledged as stored, one record per delivery batch, by conversation
    /// and first sequence number (so "delivered" costs one write per batch, not a rewrite of
    /// every message record).
    Delivered = 22,
    /// My group messages by group and sequence number: which message (id and record key) each
    /// of my group envelopes carries, for per-member receipts.
    GroupSent = 23,
    /// Per member and group: the sequence number of my next group envelope to deliver to that
    /// member (one cursor over the group log instead of an outbox entry per member).
    GroupCursors = 24,
}

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// Another process (a running `dingo run`, usually) has the store open.
    #[error("the store is in use by another Dingo process")]
    Locked,
    /// sled reported an I/O or internal error.
    #[error("store I/O error: {0}")]
    Io(#[from] sled::Error),
    /// The directory is not a Dingo store, or its data does not decrypt with this identity.
    #[error("the store at {0} is corrupt or belongs to another identity")]
    Foreign(String),
    /// A record failed to decrypt or decode (corruption or tampering).
    #[error("corrupt record in table {0:?}")]
    Corrupt(Table),
    /// The store thread has stopped.
    #[error("the store has shut down")]
    Closed,
}

/// The blocking store. Use it through [`StoreHandle`] from async code.
pub struct Store {
    db: sled::Db,
    key: StorageKey,
    syncer: Arc<Syncer>,
    /// A batch failed between its journal and the journal's removal.
    unfinished: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn full_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(table as u8);
    k.extend_from_slice(key);
    k
}

fn aad(full_key: &[u8]) -> Vec<u8> {
    [b"dingo/store/v1\0".as_slice(), full_key].concat()
}

/// One write: a full key and its sealed value, or `None` to delete it.
type Write = (Vec<u8>, Option<Vec<u8>>);

/// Writes applied together, atomically, in the order queued.
#[derive(Default)]
pub struct Batch {
    writes: Vec<Write>,
    bytes: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batch({} writes)", self.writes.len())
    }
}

impl Batch {
    /// Number of writes queued.
    pub fn len(&self) -> usize {
        self.writes.len()
    }
    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
    fn push(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        self.writes.push((key, value));
    }
}

/// Where a batch's writes wait while they are applied one by one (see [`Store::apply`]).
fn journal_key() -> Vec<u8> {
    full_key(Table::Meta, b"journal")
}

/// Batches up to this size go through the journal; larger ones (a whole document saved, a
/// long catch-up) through sled's own batch, whose fixed cost they amortize.
const JOURNAL_MAX_BYTES: usize = 64 * 1024;

impl Store {
    /// Opens (or creates) the store in `dir` with the storage key.
    pub fn open(dir: &Path, key: StorageKey) -> Result<Self, StoreError> {
        // Only a missing or empty directory may become a new store: sled quietly starts afresh
        // over files it cannot parse, and a damaged store must be reported, never replaced.
        let fresh = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true);
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(1000));
        // sled can panic on some corrupt files; a corrupt store must be an error, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        let db = match opened {
            Err(_) => return Err(StoreError::Foreign(dir.display().to_string())),
            Ok(Err(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
            {
                return Err(StoreError::Locked)
            }
            Ok(Err(sled::Error::Corruption { .. })) | Ok(Err(sled::Error::Unsupported(_))) => {
                return Err(StoreError::Foreign(dir.display().to_string()))
            }
            Ok(r) => r?,
        };
        let syncer = Arc::new(Syncer::open(dir).map_err(|e| StoreError::Io(e.into()))?);
        let store = Self { db, key, syncer, unfinished: AtomicBool::new(false) };
        match store.get::<u32>(Table::Meta, b"format") {
            Ok(Some(FORMAT_VERSION)) => {}
            Ok(Some(_)) => return Err(StoreError::Foreign(dir.display().to_string())),
            Ok(None) if fresh && store.db.is_empty() => {
                let mut b = Batch::default();
                store.put(&mut b, Table::Meta, b"format", &FORMAT_VERSION);
                store.apply(b)?;
                store.flush()?;
            }
            Ok(None) | Err(_) => return Err(StoreError::Foreign(dir.display().to_string())),
        }
        if store.finish_journal()? > 0 {
            store.flush()?;
        }
        Ok(store)
    }

    /// Reads and decrypts one record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>, StoreError> {
        let k = full_key(table, key);
        match self.db.get(&k)? {
            None => Ok(None),
            Some(v) => self.decode(table, &k, &v).map(Some),
        }
    }

    fn decode<T: DeserializeOwned>(&self, table: Table, k: &[u8], v: &[u8]) -> Result<T, StoreError> {
        let plain = self.key.open(&aad(k), v).map_err(|_| StoreError::Corrupt(table))?;
        postcard::from_bytes(&plain).map_err(|_| StoreError::Corrupt(table))
    }

    /// Records of `table` whose key starts with `prefix`, in key order (keys without the table
    /// byte).
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, T), StoreError>> + '_ {
        self.scan_after(table, prefix, None)
    }

    /// Like [`Store::scan`], starting after `after` (a key without the table byte) if given.
    pub fn scan_after<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, T), StoreError>> + '_ {
        use std::ops::Bound;
        let full_prefix = full_key(table, prefix);
        let lower = match after {
            Some(a) => Bound::Excluded(full_key(table, a)),
            None => Bound::Included(full_prefix.clone()),
        };
        self.db
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
            .take_while(move |item| item.as_ref().map(|(k, _)| k.starts_with(&full_prefix)).unwrap_or(true))
            .map(move |item| {
                let (k, v) = item?;
                let value = self.decode(table, &k, &v)?;
                Ok((k[1..].to_vec(), value))
            })
    }

    /// How many records of `table` have a key starting with `prefix` (nothing is decrypted).
    pub fn count(&self, table: Table, prefix: &[u8]) -> usize {
        self.db.scan_prefix(full_key(table, prefix)).keys().count()
    }

    /// Queues an encrypted write of `value` into `batch`.
    pub fn put<T: Serialize>(&self, batch: &mut Batch, table: Table, key: &[u8], value: &T) {
        let k = full_key(table, key);
        // Serialized behind room for the value header and sealed in place: one allocation.
        // Serializing Dingo's own record types into a Vec cannot fail.
        let buf = StorageKey::value_buffer(PUT_CAPACITY);
        let buf = postcard::to_extend(value, buf).unwrap_or_else(|_| StorageKey::value_buffer(0));
        let sealed = self.key.seal_buffer(&aad(&k), buf);
        batch.push(k, Some(sealed));
    }

    /// Queues a delete into `batch`.
    pub fn delete(&self, batch: &mut Batch, table: Table, key: &[u8]) {
        batch.push(full_key(table, key), None);
    }

    /// Applies a batch atomically (visible at once; durable after the next flush).
    ///
    /// sled's own batch starts by writing out its current log buffer and a batch manifest, each
    /// a log write of its own through sled's I/O threads (waking all seven for each); a small
    /// batch costs a third of that through a journal instead: the writes go in as one sealed
    /// record, then one by one, then the record is removed, all in one log buffer. sled
    /// recovers a prefix of its log, so after a crash either the journal is absent (and none or
    /// all of the writes are there) or it is present and [`Store::open`] applies it again.
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if self.unfinished.load(Ordering::Acquire) {
            // A batch failed halfway: finish it from its journal before anything else.
            self.finish_journal()?;
        }
        match batch.writes.len() {
            0 => Ok(()),
            1 => batch.writes.into_iter().try_for_each(|w| self.write(w)),
            _ if batch.bytes > JOURNAL_MAX_BYTES => self.apply_as_sled_batch(batch),
            _ => match self.sealed_journal(&batch) {
                Some(journal) => {
                    self.write((journal_key(), Some(journal)))?;
                    let removal = (journal_key(), None);
                    let applied = batch.writes.into_iter().chain([removal]).try_for_each(|w| self.write(w));
                    if applied.is_err() {
                        self.unfinished.store(true, Ordering::Release);
                    }
                    applied
                }
                None => self.apply_as_sled_batch(batch),
            },
        }
    }

    fn apply_as_sled_batch(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.writes {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        Ok(self.db.apply_batch(b)?)
    }

    /// The journal record of `batch`: its writes, sealed like any value.
    fn sealed_journal(&self, batch: &Batch) -> Option<Vec<u8>> {
        let buf = StorageKey::value_buffer(batch.bytes + 8 * batch.writes.len());
        let buf = postcard::to_extend(&batch.writes, buf).ok()?;
        Some(self.key.seal_buffer(&aad(&journal_key()), buf))
    }

    fn write(&self, (k, v): Write) -> Result<(), StoreError> {
        match v {
            Some(v) => self.db.insert(k, v)?,
            None => self.db.remove(k)?,
        };
        Ok(())
    }

    /// Applies the journal's writes again, if one is there (a batch a crash or an error cut
    /// off), then removes it; returns how many writes it held.
    fn finish_journal(&self) -> Result<usize, StoreError> {
        let jk = journal_key();
        let Some(sealed) = self.db.get(&jk)? else {
            self.unfinished.store(false, Ordering::Release);
            return Ok(0);
        };
        let writes: Vec<Write> = self.decode(Table::Meta, &jk, &sealed)?;
        let n = writes.len();
        writes.into_iter().try_for_each(|w| self.write(w))?;
        self.db.remove(&jk)?;
        self.unfinished.store(false, Ordering::Release);
        Ok(n)
    }

    /// Makes every applied write durable: on stable storage, so it survives a power cut too
    /// (sled's own flush, then an `fdatasync` of its log and a sync of any new blob files).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.syncer.sync().map_err(|e| StoreError::Io(e.into()))
    }
}

type Job = Box<dyn FnOnce(&Store) + Send>;

/// The async face of the store: a cheap clonable handle to the store thread and the flusher.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: SyncSender<Job>,
    flushes: SyncSender<oneshot::Sender<Result<(), String>>>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreHandle")
    }
}

impl StoreHandle {
    /// Starts the store thread and the flusher thread for `store`.
    pub fn spawn(store: Store) -> Self {
        let (db, syncer) = (store.db.clone(), store.syncer.clone());
        let (jobs, job_rx) = sync_channel::<Job>(JOB_QUEUE);
        let (flushes, flush_rx) = sync_channel(FLUSH_QUEUE);
        std::thread::Builder::new()
            .name("dingo-store".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    job(&store);
                }
            })
            .ok();
        std::thread::Builder::new()
            .name("dingo-flush".into())
            .spawn(move || flush_loop(db, syncer, flush_rx))
            .ok();
        Self { jobs, flushes }
    }

    /// Runs `f` on the store thread. Jobs run one at a time, in order, so a job's
    /// read-modify-write is atomic with respect to other jobs.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |s: &Store| {
            let _ = tx.send(f(s));
        });
        send_waiting(&self.jobs, job).await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Waits until every write applied before this call is durable (group-committed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        send_waiting(&self.flushes, tx).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(sled::Error::Unsupported(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// Queues `item` to a store thread, waiting for room without blocking the runtime thread.
async fn send_waiting<T>(queue: &SyncSender<T>, mut item: T) -> Result<(), StoreError> {
    loop {
        match queue.try_send(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                item = back;
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
    }
}

fn flush_loop(db: sled::Db, syncer: Arc<Syncer>, rx: Receiver<oneshot::Sender<Result<(), String>>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = match db.flush() {
            Ok(_) => syncer.sync().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dingo_crypto::Secret32;

    fn key(b: u8) -> StorageKey {
        StorageKey::new(Secret32::from_bytes([b; 32]))
    }

    #[test]
    fn values_round_trip_and_scan_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        let mut b = Batch::default();
        for i in [3u8, 1, 2] {
            store.put(&mut b, Table::Messages, &[9, i], &format!("m{i}"));
        }
        store.put(&mut b, Table::Contacts, &[9, 1], &"other table");
        store.apply(b).expect("apply");
        let got: Vec<String> =
            store.scan::<String>(Table::Messages, &[9]).map(|r| r.expect("record").1).collect();
        assert_eq!(got, ["m1", "m2", "m3"]);
        assert_eq!(store.get::<String>(Table::Messages, &[9, 2]).expect("get"), Some("m2".into()));
    }

    /// Opens `dir`, waiting for sled to let go of a store dropped a moment ago.
    fn reopen(dir: &Path, k: u8) -> Result<Store, StoreError> {
        for _ in 0..100 {
            match Store::open(dir, key(k)) {
                Err(StoreError::Locked) => std::thread::sleep(std::time::Duration::from_millis(20)),
                other => return other,
            }
        }
        Err(StoreError::Locked)
    }

    #[test]
    fn batches_apply_in_order_small_and_large() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        let mut b = Batch::default();
        store.put(&mut b, Table::Messages, b"gone", &"x");
        store.delete(&mut b, Table::Messages, b"gone");
        store.delete(&mut b, Table::Messages, b"back");
        store.put(&mut b, Table::Messages, b"back", &"y");
        store.apply(b).expect("small batch, through the journal");
        let mut b = Batch::default();
        for i in 0..4u8 {
            store.put(&mut b, Table::Docs, &[i], &vec![i; 30 * 1024]);
        }
        assert!(b.bytes > JOURNAL_MAX_BYTES);
        store.apply(b).expect("large batch, through sled's");
        assert_eq!(store.get::<String>(Table::Messages, b"gone").expect("get"), None);
        assert_eq!(store.get::<String>(Table::Messages, b"back").expect("get"), Some("y".into()));
        assert_eq!(store.get::<Vec<u8>>(Table::Docs, &[3]).expect("get").map(|v| v.len()), Some(30 * 1024));
        assert!(store.db.get(journal_key()).expect("get").is_none(), "no journal left behind");
    }

    #[test]
    fn a_batch_cut_off_by_a_crash_is_finished_at_the_next_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        let mut b = Batch::default();
        store.put(&mut b, Table::Messages, b"old", &"before");
        store.apply(b).expect("apply");
        let mut b = Batch::default();
        store.put(&mut b, Table::Messages, b"m1", &"one");
        store.put(&mut b, Table::Conversations, b"c", &7u64);
        store.delete(&mut b, Table::Messages, b"old");
        // What a crash leaves when it strikes after the journal and the first write.
        store.db.insert(journal_key(), store.sealed_journal(&b).expect("sealed")).expect("journal");
        let first = b.writes.remove(0);
        store.write(first).expect("first write");
        store.flush().expect("flush");
        drop(store);
        let store = reopen(dir.path(), 1).expect("reopen");
        assert_eq!(store.get::<String>(Table::Messages, b"m1").expect("get"), Some("one".into()));
        assert_eq!(store.get::<u64>(Table::Conversations, b"c").expect("get"), Some(7));
        assert_eq!(store.get::<String>(Table::Messages, b"old").expect("get"), None);
        assert!(store.db.get(journal_key()).expect("get").is_none(), "the journal is removed once applied");
    }

    #[test]
    fn a_batch_that_failed_halfway_is_finished_before_the_next() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        let mut a = Batch::default();
        store.put(&mut a, Table::Messages, b"a1", &"one");
        store.put(&mut a, Table::Messages, b"a2", &"two");
        // What an I/O error after the journal leaves behind.
        store.db.insert(journal_key(), store.sealed_journal(&a).expect("sealed")).expect("journal");
        store.unfinished.store(true, Ordering::Release);
        let mut b = Batch::default();
        store.put(&mut b, Table::Messages, b"a2", &"two, rewritten");
        store.put(&mut b, Table::Messages, b"b", &"three");
        store.apply(b).expect("apply");
        assert_eq!(store.get::<String>(Table::Messages, b"a1").expect("get"), Some("one".into()));
        assert_eq!(store.get::<String>(Table::Messages, b"a2").expect("get"), Some("two, rewritten".into()));
        assert_eq!(store.get::<String>(Table::Messages, b"b").expect("get"), Some("three".into()));
        assert!(store.db.get(journal_key()).expect("get").is_none());
    }

    #[test]
    fn a_tampered_journal_is_a_corrupt_store_not_a_panic() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        store.db.insert(journal_key(), b"\x01not a sealed journal".to_vec()).expect("insert");
        store.flush().expect("flush");
        drop(store);
        assert!(matches!(reopen(dir.path(), 1), Err(StoreError::Corrupt(Table::Meta))));
    }

    #[test]
    fn a_store_opened_with_another_key_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        drop(Store::open(dir.path(), key(1)).expect("open"));
        // sled lets go of its file lock a moment after the handle is dropped (its I/O threads
        // hold the file a little longer); the node waits the same way (`open_store`).
        let second = reopen(dir.path(), 2);
        assert!(matches!(second, Err(StoreError::Foreign(_))), "{second:?}");
        assert!(reopen(dir.path(), 1).is_ok());
    }

    #[test]
    fn a_second_open_in_the_same_process_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let _first = Store::open(dir.path(), key(1)).expect("open");
        assert!(matches!(Store::open(dir.path(), key(1)), Err(StoreError::Locked)));
    }

    #[test]
    fn a_flush_syncs_the_blob_files_sled_wrote() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        let blobs = || -> std::collections::HashSet<std::ffi::OsString> {
            std::fs::read_dir(dir.path().join("blobs"))
                .expect("blob dir")
                .map(|e| e.expect("entry").file_name())
                .collect()
        };
        assert!(blobs().is_empty());
        // A value far over sled's inline limit (a quarter of its 512 KiB segment) is a blob.
        let mut b = Batch::default();
        store.put(&mut b, Table::Docs, b"big", &vec![7u8; 400 * 1024]);
        store.apply(b).expect("apply");
        store.flush().expect("flush");
        let on_disk = blobs();
        assert!(!on_disk.is_empty(), "sled wrote no blob: the test no longer covers blobs");
        let synced = store.syncer.synced_blobs();
        assert!(on_disk.is_subset(&synced), "unsynced blobs: {on_disk:?} vs {synced:?}");
        assert_eq!(
            store.get::<Vec<u8>>(Table::Docs, b"big").expect("get").map(|v| v.len()),
            Some(400 * 1024)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handle_runs_jobs_and_group_commits() {
        let dir = tempfile::tempdir().expect("tmp");
        let handle = StoreHandle::spawn(Store::open(dir.path(), key(1)).expect("open"));
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                h.call(move |s| {
                    let mut b = Batch::default();
                    s.put(&mut b, Table::Outbox, &i.to_be_bytes(), &i);
                    s.apply(b)
                })
                .await
                .expect("call")
                .expect("apply");
                h.flush().await.expect("flush");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let n = handle.call(|s| s.scan::<u32>(Table::Outbox, &[]).count()).await.expect("count");
        assert_eq!(n, 100);
    }
}
