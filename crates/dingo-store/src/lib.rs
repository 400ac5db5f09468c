//! Dingo's store: one sled database per home, every value sealed with the storage key
//! (XChaCha20-Poly1305, location as associated data), keys prefixed by [`Table`].
//!
//! sled is blocking, so [`StoreHandle`] runs every operation on the store's own thread and the
//! async runtime only awaits replies. Durability is the store's own write-ahead log (`wal.rs`):
//! a flush writes the applied batches' records and `fdatasync`s once, and sled gets the writes
//! after that, on an applier thread, while reads see them at once (`overlay.rs`). Flushes are
//! group-committed: [`StoreHandle::flush`] callers that arrive while a flush is running share
//! the next one, so a burst of messages costs a few fsyncs, not one each. Keys are never secret
//! (ids and sequence numbers only); values are never stored in clear, so a copied store
//! directory shows no plaintext.

pub mod chunks;
mod durable;
mod handle;
mod overlay;
mod wal;

pub use durable::sync_dir;
pub use handle::{Lane, StoreHandle, FLUSH_QUEUE, JOB_QUEUE, LOCAL_RUN};

use dingo_crypto::at_rest::StorageKey;
use durable::Syncer;
use overlay::{Merged, Overlay, Pending, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::IVec;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use thiserror::Error;

/// The on-disk format version, stored (sealed) under the meta table. Version 2 added the
/// write-ahead log; a version 1 store is taken over as it opens.
pub const FORMAT_VERSION: u32 = 2;
/// sled page cache cap; its 1 GiB default would dominate a node's memory.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Room a record is serialized into before it grows (most records are messages, under 1 KiB).
const PUT_CAPACITY: usize = 1024;
/// Flushed rounds waiting for the applier before a flush waits for it (sled slower than the
/// log for that long).
const APPLY_QUEUE: usize = 1024;
/// Values this large may land in a sled blob file (sled's limit is a quarter of its 512 KiB
/// segment; this stays well under it).
const LARGE_VALUE: usize = 32 * 1024;
/// How long the applier gathers durable records before it puts them into sled: a key written
/// again meanwhile (a ratchet session, a conversation's counters, an outbox entry and its
/// removal) goes into sled once, and the applier wakes once per window, not per record.
/// Nobody waits for it but a checkpoint: reads have the overlay.
const APPLY_GATHER: Duration = Duration::from_millis(10);

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

fn io_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(sled::Error::Io(std::io::Error::other(e.to_string())))
}

/// The blocking store. Use it through [`StoreHandle`] from async code.
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// What the store thread, the flusher thread and the applier share.
struct Shared {
    db: sled::Db,
    key: StorageKey,
    syncer: Arc<Syncer>,
    /// Batches applied and not yet in the log.
    queued: Mutex<Queued>,
    /// The log, held while it is written (flushes take turns).
    log: Mutex<LogState>,
    applier: Arc<Applier>,
    applier_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Queued {
    next_lsn: u64,
    records: Vec<QueuedRecord>,
}

struct QueuedRecord {
    lsn: u64,
    frame: Vec<u8>,
    writes: Vec<Pending>,
}

/// Records made durable, handed to the applier in order.
type Durable = Vec<(u64, Vec<Pending>)>;

struct LogState {
    file: wal::LogFile,
    /// The number of the next record to be written.
    written_upto: u64,
    to_applier: Option<SyncSender<Durable>>,
    /// Set by a failed log write: what was taken may or may not be on disk, so nothing more is
    /// promised durable (a later fsync could succeed over pages the kernel dropped).
    broken: Option<String>,
}

/// Puts durable records into sled on a thread of its own, the records of [`APPLY_GATHER`] at a
/// time with each key's newest write only: a flush answers as soon as the log is synced, and
/// the writes stay readable from the overlay meanwhile.
struct Applier {
    db: sled::Db,
    syncer: Arc<Syncer>,
    overlay: Mutex<Overlay>,
    progress: Mutex<Progress>,
    moved: Condvar,
}

struct Progress {
    /// The number of the next record to apply.
    applied_upto: u64,
    failure: Option<String>,
    hold: Hold,
}

/// Tests stop the applier to leave records only in the log, as a crash would.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    Run,
    #[cfg_attr(not(test), allow(dead_code))]
    Pause,
    #[cfg_attr(not(test), allow(dead_code))]
    Drop,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Applier {
    fn run(self: Arc<Self>, records: Receiver<Durable>) {
        /// However the applier ends (even by a panic in sled), a checkpoint waiting for it
        /// gets an error instead of waiting forever.
        struct Ended<'a>(&'a Applier);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                lock(&self.0.progress).failure.get_or_insert_with(|| "the store's applier stopped".into());
                self.0.moved.notify_all();
            }
        }
        let _ended = Ended(&self);
        while let Ok(first) = records.recv() {
            // The newest write of each key among the records gathered, and the last record.
            let mut newest: BTreeMap<IVec, (u64, Value)> = BTreeMap::new();
            let mut last = 0;
            let mut gather = |durable: Durable| {
                for (lsn, writes) in durable {
                    last = lsn;
                    newest.extend(writes.into_iter().map(|(k, v)| (k, (lsn, v))));
                }
            };
            gather(first);
            // Asleep, not waiting on the channel: records that come meanwhile wake nobody.
            std::thread::sleep(APPLY_GATHER);
            while let Ok(more) = records.try_recv() {
                gather(more);
            }
            if !self.wait_turn() {
                return;
            }
            // In key order, each key once: sled's cheapest way in. A crash halfway leaves a mix
            // of these records' writes in sled, which replaying the log completes.
            let large = newest.values().any(|(_, v)| v.as_ref().is_some_and(|v| v.len() >= LARGE_VALUE));
            let applied = newest.iter().try_for_each(|(k, (_, v))| write(&self.db, k, v.clone()));
            // sled writes a node holding a large value to a blob file of its own, which only a
            // sync makes durable: flush and sync now rather than at the next checkpoint, so
            // sled's log never points at a blob a power cut could take.
            let synced = match (applied, large) {
                (Ok(()), true) => self.db.flush().map(drop).and_then(|()| Ok(self.syncer.sync()?)),
                (other, _) => other,
            };
            if let Err(e) = synced {
                lock(&self.progress).failure = Some(e.to_string());
                self.moved.notify_all();
                return;
            }
            lock(&self.overlay).remove_applied(newest.iter().map(|(k, (lsn, _))| (k.as_ref(), *lsn)));
            lock(&self.progress).applied_upto = last + 1;
            self.moved.notify_all();
        }
    }

    /// False when the records are to be dropped unapplied (tests).
    fn wait_turn(&self) -> bool {
        let mut p = lock(&self.progress);
        while p.hold == Hold::Pause {
            p = self.moved.wait(p).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        p.hold == Hold::Run
    }

    /// Waits until every record before `lsn` is in sled.
    fn wait_applied(&self, lsn: u64) -> Result<(), StoreError> {
        let mut p = lock(&self.progress);
        while p.applied_upto < lsn {
            if let Some(why) = &p.failure {
                return Err(io_error(why));
            }
            p = self.moved.wait(p).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        Ok(())
    }
}

fn write(db: &sled::Db, k: &[u8], v: Value) -> sled::Result<()> {
    match v {
        Some(v) => db.insert(k, v)?,
        None => db.remove(k)?,
    };
    Ok(())
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

/// `value` serialized and sealed for `full_key`.
fn seal<T: Serialize>(key: &StorageKey, full_key: &[u8], value: &T) -> Vec<u8> {
    // Serialized behind room for the value header and sealed in place: one allocation.
    // Serializing Dingo's own record types into a Vec cannot fail.
    let buf = StorageKey::value_buffer(PUT_CAPACITY);
    let buf = postcard::to_extend(value, buf).unwrap_or_else(|_| StorageKey::value_buffer(0));
    key.seal_buffer(&aad(full_key), buf)
}

fn decode<T: DeserializeOwned>(key: &StorageKey, table: Table, k: &[u8], v: &[u8]) -> Result<T, StoreError> {
    let plain = key.open(&aad(k), v).map_err(|_| StoreError::Corrupt(table))?;
    postcard::from_bytes(&plain).map_err(|_| StoreError::Corrupt(table))
}

/// A record straight from sled (only while opening, before any batch).
fn get_direct<T: DeserializeOwned>(
    db: &sled::Db,
    key: &StorageKey,
    table: Table,
    k: &[u8],
) -> Result<Option<T>, StoreError> {
    let k = full_key(table, k);
    db.get(&k)?.map(|v| decode(key, table, &k, &v)).transpose()
}

/// One write: a full key and its sealed value, or `None` to delete it.
type Write = (Vec<u8>, Option<Vec<u8>>);

/// Writes applied together, atomically, in the order queued.
#[derive(Default)]
pub struct Batch {
    writes: Vec<Write>,
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
}

/// Where the first log record after the last checkpoint is numbered (see `wal.rs`).
const LOG_START: &[u8] = b"wal";
/// Format 1 applied small batches through a sealed journal record under this key.
const V1_JOURNAL: &[u8] = b"journal";

impl Store {
    /// Opens (or creates) the store in `dir` with the storage key. Batches a crash left only in
    /// the log are applied again first.
    pub fn open(dir: &Path, key: StorageKey) -> Result<Self, StoreError> {
        Self::open_with(dir, key, wal::CAPACITY)
    }

    fn open_with(dir: &Path, key: StorageKey, log_capacity: u64) -> Result<Self, StoreError> {
        let foreign = || StoreError::Foreign(dir.display().to_string());
        // Only a missing or empty directory may become a new store: sled quietly starts afresh
        // over files it cannot parse, and a damaged store must be reported, never replaced.
        let fresh = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true);
        // sled writes only when its log buffer fills and at checkpoints: durability is the log's.
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None);
        // sled can panic on some corrupt files; a corrupt store must be an error, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
        let db = match opened {
            Err(_) => return Err(foreign()),
            Ok(Err(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
            {
                return Err(StoreError::Locked)
            }
            Ok(Err(sled::Error::Corruption { .. })) | Ok(Err(sled::Error::Unsupported(_))) => {
                return Err(foreign())
            }
            Ok(r) => r?,
        };
        let (first_lsn, new_log) = match get_direct::<u32>(&db, &key, Table::Meta, b"format") {
            Ok(Some(FORMAT_VERSION)) => {
                let start = get_direct::<u64>(&db, &key, Table::Meta, LOG_START);
                (start.map_err(|_| foreign())?.ok_or_else(foreign)?, false)
            }
            Ok(Some(1)) => {
                finish_v1_journal(&db, &key)?;
                (0, true)
            }
            Ok(None) if fresh && db.is_empty() => (0, true),
            Ok(Some(_)) | Ok(None) | Err(_) => return Err(foreign()),
        };
        let file = wal::LogFile::open(dir, new_log, log_capacity).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => foreign(),
            _ => StoreError::Io(e.into()),
        })?;
        let replayed = file.replay(&key, first_lsn).map_err(|e| StoreError::Io(e.into()))?;
        for (k, v) in replayed.iter().flatten() {
            write(&db, k, v.as_deref().map(IVec::from))?;
        }
        let next_lsn = first_lsn + replayed.len() as u64;
        if new_log {
            db.insert(
                full_key(Table::Meta, b"format"),
                seal(&key, &full_key(Table::Meta, b"format"), &FORMAT_VERSION),
            )?;
        }
        let syncer = Arc::new(Syncer::open(dir).map_err(|e| StoreError::Io(e.into()))?);
        let applier = Arc::new(Applier {
            db: db.clone(),
            syncer: syncer.clone(),
            overlay: Mutex::default(),
            progress: Mutex::new(Progress { applied_upto: next_lsn, failure: None, hold: Hold::Run }),
            moved: Condvar::new(),
        });
        let (to_applier, durable) = sync_channel(APPLY_QUEUE);
        let thread = std::thread::Builder::new().name("dingo-apply".into()).spawn({
            let applier = applier.clone();
            move || applier.run(durable)
        });
        let thread = thread.map_err(|e| StoreError::Io(e.into()))?;
        let log = LogState { file, written_upto: next_lsn, to_applier: Some(to_applier), broken: None };
        let store = Self {
            shared: Arc::new(Shared {
                db,
                key,
                syncer,
                queued: Mutex::new(Queued { next_lsn, records: Vec::new() }),
                log: Mutex::new(log),
                applier,
                applier_thread: Mutex::new(Some(thread)),
            }),
        };
        if new_log || !replayed.is_empty() {
            store.checkpoint()?;
        }
        Ok(store)
    }

    /// Reads and decrypts one record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>, StoreError> {
        let s = &self.shared;
        let k = full_key(table, key);
        let value = match lock(&s.applier.overlay).get(&k) {
            Some(pending) => pending,
            None => s.db.get(&k)?,
        };
        value.map(|v| decode(&s.key, table, &k, &v)).transpose()
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
        let s = &self.shared;
        let full_prefix = full_key(table, prefix);
        let after = after.map(|a| full_key(table, a));
        let lower = match &after {
            Some(a) => Bound::Excluded(a.as_slice()),
            None => Bound::Included(full_prefix.as_slice()),
        };
        let pending = lock(&s.applier.overlay).range(lower, &full_prefix);
        let lower = lower.map(<[u8]>::to_vec);
        Merged::new(s.db.range::<Vec<u8>, _>((lower, Bound::Unbounded)), pending)
            .take_while(move |item| item.as_ref().map(|(k, _)| k.starts_with(&full_prefix)).unwrap_or(true))
            .map(move |item| {
                let (k, v) = item?;
                let value = decode(&s.key, table, &k, &v)?;
                Ok((k[1..].to_vec(), value))
            })
    }

    /// How many records of `table` have a key starting with `prefix` (nothing is decrypted).
    pub fn count(&self, table: Table, prefix: &[u8]) -> usize {
        let s = &self.shared;
        let p = full_key(table, prefix);
        let pending = lock(&s.applier.overlay).range(std::ops::Bound::Included(&p), &p);
        Merged::new(s.db.scan_prefix(&p), pending).count()
    }

    /// Queues an encrypted write of `value` into `batch`.
    pub fn put<T: Serialize>(&self, batch: &mut Batch, table: Table, key: &[u8], value: &T) {
        let k = full_key(table, key);
        let sealed = seal(&self.shared.key, &k, value);
        batch.writes.push((k, Some(sealed)));
    }

    /// Queues a delete into `batch`.
    pub fn delete(&self, batch: &mut Batch, table: Table, key: &[u8]) {
        batch.writes.push((full_key(table, key), None));
    }

    /// Applies a batch atomically: visible at once, durable after the next flush (which writes
    /// it to the log; sled gets it after that).
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.writes.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        let mut queued = lock(&s.queued);
        let lsn = queued.next_lsn;
        let frame = wal::frame(&s.key, lsn, &batch.writes);
        let writes: Vec<Pending> =
            batch.writes.into_iter().map(|(k, v)| (IVec::from(k), v.map(IVec::from))).collect();
        // In the overlay before the flush can take it, so the applier finds it there.
        lock(&s.applier.overlay).insert(lsn, &writes);
        queued.next_lsn += 1;
        queued.records.push(QueuedRecord { lsn, frame, writes });
        Ok(())
    }

    /// Makes every applied batch durable: its log record written and `fdatasync`ed, so it
    /// survives a power cut too.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.shared.flush()
    }

    /// Flushes, then moves everything into sled durably and starts the log over (also done when
    /// the log is full, and when the store closes).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.shared.flush()?;
        self.shared.checkpoint(&mut lock(&self.shared.log))
    }

    /// Stops the applier as a crash would: records not yet in sled stay only in the log.
    #[cfg(test)]
    fn hold_applier(&self, hold: Hold) {
        lock(&self.shared.applier.progress).hold = hold;
        self.shared.applier.moved.notify_all();
    }
}

impl Shared {
    fn flush(&self) -> Result<(), StoreError> {
        let mut log = lock(&self.log);
        if let Some(why) = &log.broken {
            return Err(io_error(why));
        }
        let records = std::mem::take(&mut lock(&self.queued).records);
        let Some(last) = records.last().map(|r| r.lsn) else { return Ok(()) };
        let bytes = records.iter().map(|r| r.frame.len()).sum();
        if log.file.is_full_for(bytes) {
            self.checkpoint(&mut log)?;
        }
        let frames: Vec<&[u8]> = records.iter().map(|r| r.frame.as_slice()).collect();
        if let Err(e) = log.file.append_synced(&frames) {
            log.broken = Some(e.to_string());
            return Err(StoreError::Io(e.into()));
        }
        log.written_upto = last + 1;
        let durable = records.into_iter().map(|r| (r.lsn, r.writes)).collect();
        if let Some(tx) = &log.to_applier {
            if tx.send(durable).is_err() {
                log.broken = Some("the store's applier stopped".into());
            }
        }
        Ok(())
    }

    /// Once everything written to the log is in sled: sled flushed and synced, with the number
    /// of the next record, so the log starts over.
    fn checkpoint(&self, log: &mut LogState) -> Result<(), StoreError> {
        self.applier.wait_applied(log.written_upto)?;
        let k = full_key(Table::Meta, LOG_START);
        self.db.insert(&k, seal(&self.key, &k, &log.written_upto))?;
        self.db.flush()?;
        self.syncer.sync().map_err(|e| StoreError::Io(e.into()))?;
        log.file.rewind();
        Ok(())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let crashed = lock(&self.applier.progress).hold != Hold::Run;
        if !crashed {
            // Closing with an empty log makes the next open quick; if this fails, the log
            // still has everything and the next open applies it.
            let closed = self.flush().and_then(|()| self.checkpoint(&mut lock(&self.log)));
            if let Err(e) = closed {
                tracing::warn!("store not checkpointed at close: {e}");
            }
        }
        lock(&self.log).to_applier = None;
        if let Some(thread) = lock(&self.applier_thread).take() {
            let _ = thread.join();
        }
    }
}

/// Format 1 (before the log) applied small batches through a journal record; a crash could
/// leave one to finish.
fn finish_v1_journal(db: &sled::Db, key: &StorageKey) -> Result<(), StoreError> {
    let Some(writes) = get_direct::<Vec<Write>>(db, key, Table::Meta, V1_JOURNAL)? else { return Ok(()) };
    for (k, v) in writes {
        write(db, &k, v.map(IVec::from))?;
    }
    db.remove(full_key(Table::Meta, V1_JOURNAL))?;
    Ok(())
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
    fn batches_apply_in_order_and_reads_see_them_before_sled_does() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        let mut b = Batch::default();
        for i in [1u8, 2, 3] {
            store.put(&mut b, Table::Messages, &[i], &format!("sled {i}"));
        }
        store.apply(b).expect("apply");
        store.checkpoint().expect("into sled");
        store.hold_applier(Hold::Pause);
        let mut b = Batch::default();
        store.put(&mut b, Table::Messages, b"gone", &"x");
        store.delete(&mut b, Table::Messages, b"gone");
        store.delete(&mut b, Table::Messages, &[2]);
        store.put(&mut b, Table::Messages, &[3], &"pending 3");
        store.put(&mut b, Table::Messages, &[4], &"pending 4");
        store.apply(b).expect("apply");
        store.flush().expect("flush");
        assert_eq!(store.get::<String>(Table::Messages, b"gone").expect("get"), None);
        assert_eq!(store.get::<String>(Table::Messages, &[2]).expect("get"), None);
        let all: Vec<String> = store.scan(Table::Messages, &[]).map(|r| r.expect("record").1).collect();
        assert_eq!(all, ["sled 1", "pending 3", "pending 4"]);
        let after: Vec<String> =
            store.scan_after(Table::Messages, &[], Some(&[1])).map(|r| r.expect("record").1).collect();
        assert_eq!(after, ["pending 3", "pending 4"]);
        assert_eq!(store.count(Table::Messages, &[]), 3);
        store.hold_applier(Hold::Run);
        store.checkpoint().expect("into sled");
        assert_eq!(lock(&store.shared.applier.overlay).len(), 0, "applied writes leave the overlay");
        let all: Vec<String> = store.scan(Table::Messages, &[]).map(|r| r.expect("record").1).collect();
        assert_eq!(all, ["sled 1", "pending 3", "pending 4"]);
    }

    /// What a crash leaves: flushed batches only in the log (the applier never got to them),
    /// and an applied batch never flushed.
    fn crash_after(dir: &Path, flushed: &[(&[u8], &str)], unflushed: (&[u8], &str)) {
        let store = reopen(dir, 1).expect("open");
        store.hold_applier(Hold::Pause);
        for (k, v) in flushed {
            let mut b = Batch::default();
            store.put(&mut b, Table::Messages, k, v);
            store.put(&mut b, Table::Conversations, k, &v.len());
            store.apply(b).expect("apply");
            store.flush().expect("flush");
        }
        let mut b = Batch::default();
        store.put(&mut b, Table::Messages, unflushed.0, &unflushed.1);
        store.apply(b).expect("apply");
        store.hold_applier(Hold::Drop);
    }

    #[test]
    fn flushed_batches_survive_a_crash_before_sled_has_them_and_unflushed_ones_are_gone() {
        let dir = tempfile::tempdir().expect("tmp");
        crash_after(dir.path(), &[(b"a", "one"), (b"b", "two"), (b"a", "one again")], (b"c", "never"));
        let store = reopen(dir.path(), 1).expect("reopen");
        assert_eq!(store.get::<String>(Table::Messages, b"a").expect("get"), Some("one again".into()));
        assert_eq!(store.get::<usize>(Table::Conversations, b"b").expect("get"), Some(3));
        assert_eq!(store.get::<String>(Table::Messages, b"c").expect("get"), None);
        // Replayed, checkpointed: the next crash starts from there, with new records numbered on.
        drop(store);
        crash_after(dir.path(), &[(b"d", "four")], (b"e", "never"));
        let store = reopen(dir.path(), 1).expect("reopen");
        let all: Vec<String> = store.scan(Table::Messages, &[]).map(|r| r.expect("record").1).collect();
        assert_eq!(all, ["one again", "two", "four"]);
    }

    /// One outbox record of `size` bytes per number in `range`, each its own batch and flush.
    fn flush_each(store: &Store, range: std::ops::Range<u32>, size: usize) {
        for i in range {
            let mut b = Batch::default();
            store.put(&mut b, Table::Outbox, &i.to_be_bytes(), &vec![i as u8; size]);
            store.apply(b).expect("apply");
            store.flush().expect("flush");
        }
    }

    #[test]
    fn a_log_longer_than_its_first_read_replays_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path(), key(1)).expect("open");
        store.hold_applier(Hold::Pause);
        flush_each(&store, 0..100, 3000);
        store.hold_applier(Hold::Drop);
        drop(store);
        assert!(std::fs::metadata(dir.path().join(wal::FILE)).expect("log").len() > 4 * 64 * 1024);
        let store = reopen(dir.path(), 1).expect("reopen");
        assert_eq!(store.count(Table::Outbox, &[]), 100);
    }

    #[test]
    fn a_cut_last_record_loses_only_its_batch() {
        let dir = tempfile::tempdir().expect("tmp");
        crash_after(dir.path(), &[(b"a", "one"), (b"b", "two")], (b"c", "never"));
        let log = dir.path().join(wal::FILE);
        let len = std::fs::metadata(&log).expect("log").len();
        std::fs::OpenOptions::new().write(true).open(&log).expect("log").set_len(len - 3).expect("cut");
        let store = reopen(dir.path(), 1).expect("reopen");
        assert_eq!(store.get::<String>(Table::Messages, b"a").expect("get"), Some("one".into()));
        assert_eq!(store.get::<String>(Table::Messages, b"b").expect("get"), None);
        assert_eq!(store.get::<usize>(Table::Conversations, b"b").expect("get"), None, "all or nothing");
    }

    #[test]
    fn the_log_starts_over_when_full_and_keeps_every_batch() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open_with(dir.path(), key(1), 4096).expect("open");
        flush_each(&store, 0..200, 100);
        let log_len = std::fs::metadata(dir.path().join(wal::FILE)).expect("log").len();
        assert!(log_len < 8192, "the log was reused, not grown: {log_len} bytes");
        // The last ones only in the log (started over, so they fit: a full log waits for the
        // applier), then a crash.
        store.checkpoint().expect("checkpoint");
        store.hold_applier(Hold::Pause);
        flush_each(&store, 200..210, 100);
        store.hold_applier(Hold::Drop);
        drop(store);
        let store = reopen(dir.path(), 1).expect("reopen");
        assert_eq!(store.count(Table::Outbox, &[]), 210);
    }

    #[test]
    fn a_missing_log_is_a_damaged_store_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tmp");
        drop(Store::open(dir.path(), key(1)).expect("open"));
        std::fs::remove_file(dir.path().join(wal::FILE)).expect("remove");
        assert!(matches!(reopen(dir.path(), 1), Err(StoreError::Foreign(_))));
    }

    #[test]
    fn a_format_1_store_is_taken_over_with_its_journal_finished() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            // A version 1 store as a crash left it: format 1, a journal not yet applied.
            let db = sled::Config::new().path(dir.path()).open().expect("sled");
            let k = key(1);
            let put = |table, name: &[u8], value: Vec<u8>| {
                let fk = full_key(table, name);
                db.insert(&fk, value).expect("insert");
            };
            put(Table::Meta, b"format", seal(&k, &full_key(Table::Meta, b"format"), &1u32));
            let msg = full_key(Table::Messages, b"m");
            let writes: Vec<Write> = vec![(msg.clone(), Some(seal(&k, &msg, &"from the journal")))];
            put(Table::Meta, V1_JOURNAL, seal(&k, &full_key(Table::Meta, V1_JOURNAL), &writes));
            db.flush().expect("flush");
        }
        let store = reopen(dir.path(), 1).expect("reopen");
        assert_eq!(store.get::<String>(Table::Messages, b"m").expect("get"), Some("from the journal".into()));
        assert_eq!(store.get::<u32>(Table::Meta, b"format").expect("get"), Some(FORMAT_VERSION));
        assert_eq!(store.get::<Vec<Write>>(Table::Meta, V1_JOURNAL).expect("get"), None);
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
    fn the_blob_files_sled_writes_are_synced_once_applied() {
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
        // No checkpoint: the applier flushes and syncs sled itself after a large value.
        let written = lock(&store.shared.log).written_upto;
        store.shared.applier.wait_applied(written).expect("applied");
        let on_disk = blobs();
        assert!(!on_disk.is_empty(), "sled wrote no blob: the test no longer covers blobs");
        let synced = store.shared.syncer.synced_blobs();
        assert!(on_disk.is_subset(&synced), "unsynced blobs: {on_disk:?} vs {synced:?}");
        assert_eq!(
            store.get::<Vec<u8>>(Table::Docs, b"big").expect("get").map(|v| v.len()),
            Some(400 * 1024)
        );
    }
}
