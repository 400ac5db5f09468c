//! Shared files.
//!
//! - Sharing reads the file once: each chunk is sealed with a fresh per-file key, stored in the
//!   home's chunk directory under the BLAKE3 hash of its sealed bytes, and the manifest (chunk
//!   hashes and key) goes to the target in an ordinary end-to-end encrypted message. Sharing a
//!   name again in the same place makes a new version.
//! - Fetching asks every connected teammate or contact for the chunks it lacks over the
//!   `/dingo/file/1` stream protocol, several chunks per request and two requests in flight per
//!   peer. Each chunk is checked against its hash before anything is kept; a peer that serves a
//!   bad chunk is dropped for the rest of the fetch and its chunks are asked of the others.
//!   The fetched file is the fetcher's only copy (see [`crate::copies`]): an interrupted fetch
//!   resumes from its partial file, and the fetcher serves the chunks to others from it.
//! - Serving answers contacts and team members only (removed ones are refused by the network
//!   before they get here): a sharer sends the stored sealed bytes as they are, a fetcher seals
//!   its copy's bytes again and sends them only if they are still the named chunk.

use crate::chat::{Core, SealCtx};
use crate::copies::{read_range, seal_matches, FileCopy};
use crate::records::{FileView, TransferView};
use crate::{Node, NodeError};
use dingo_crypto::file::{chunk_hash, new_file_key, open_chunk, seal_chunk};
use dingo_crypto::Secret32;
use dingo_net::{IncomingStreams, Net, Peer, Stream};
use dingo_store::chunks::ChunkStore;
use dingo_store::{Batch, Store, Table};
use dingo_types::content::Content;
use dingo_types::file::{
    check_file_name, decode_chunk_answer_head, decode_chunk_request_head, encode_chunk_answer_head,
    encode_chunk_request, ChunkHash, FileManifest, CHUNK_ANSWER_HEAD, CHUNK_REQUEST_HEAD, FILE_PROTOCOL,
};
use dingo_types::{ConvId, DeviceKey, FileId, MsgId, UserId};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Chunks asked for in one request.
pub const CHUNKS_PER_REQUEST: usize = 8;
/// Requests a fetcher keeps in flight per peer (so the pipe never drains between them).
pub const REQUESTS_IN_FLIGHT: usize = 2;
/// Received chunks a fetcher checks and writes at once, per peer, while the next arrives.
pub(crate) const CHUNKS_BEING_WRITTEN: usize = 2;
/// Streams this node serves at once; more wait for their peers to retry.
pub const MAX_SERVING_STREAMS: usize = 16;
/// Finished transfers remembered for progress queries.
pub const MAX_TRANSFERS_KEPT: usize = 256;
/// How long a peer may take to answer for one chunk, or to send its next request.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a file was shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Place {
    /// In the 1:1 conversation with this contact.
    Direct(UserId),
    /// In a channel, project or document.
    Group(ConvId),
}

/// A file version this node knows of (shared by it or to it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FileRec {
    pub manifest: FileManifest,
    pub place: Place,
    pub from: UserId,
    pub from_device: DeviceKey,
    pub shared_at: u64,
    pub msg: MsgId,
}

/// How a file message reads in a conversation.
pub(crate) fn file_line(m: &FileManifest) -> String {
    format!("[file] {} ({}), id {}", m.name, human_size(m.size), &m.id().to_hex()[..12])
}

/// `1.5 MB`, `12 KB`, `7 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl Core {
    /// Files a version this node learned of (once; a duplicate changes nothing).
    pub(crate) fn record_file(&self, s: &Store, batch: &mut Batch, rec: FileRec) -> Result<(), NodeError> {
        let id = rec.manifest.id();
        if s.get::<FileRec>(Table::Files, &id.0)?.is_none() {
            s.put(batch, Table::Files, &id.0, &rec);
        }
        Ok(())
    }

    /// Resolves a share target: `#channel`, `@contact`, `project:NAME`, `doc:NAME`, or a bare
    /// name (a contact, else a project, else a document).
    fn resolve_target(&self, s: &Store, target: &str) -> Result<(Place, String), NodeError> {
        let target = target.trim();
        let team = || self.team_state(s).map(|t| t.map(|t| t.1));
        if crate::channels::is_channel(target) {
            let state = team()?.ok_or(NodeError::NoTeam)?;
            let (name, chan) = self.channel_named(&state, target)?;
            return Ok((Place::Group(chan.id), format!("#{name}")));
        }
        if let Some(name) = target.strip_prefix("project:") {
            let state = team()?.ok_or(NodeError::NoTeam)?;
            let (name, chan) = self.project_named(&state, name)?;
            return Ok((Place::Group(chan.id), format!("project:{name}")));
        }
        if let Some(name) = target.strip_prefix("doc:") {
            let state = team()?.ok_or(NodeError::NoTeam)?;
            let (name, chan) = self.doc_named(&state, name)?;
            return Ok((Place::Group(chan.id), format!("doc:{name}")));
        }
        let who = target.strip_prefix('@').unwrap_or(target);
        match self.contact(s, who) {
            Ok(c) => Ok((Place::Direct(c.user_id), format!("@{}", c.name))),
            Err(NodeError::UnknownContact(_)) if !target.starts_with('@') => {
                let Some(state) = team()? else { return Err(NodeError::UnknownTarget(target.to_owned())) };
                if let Ok((name, chan)) = self.project_named(&state, target) {
                    return Ok((Place::Group(chan.id), format!("project:{name}")));
                }
                if let Ok((name, chan)) = self.doc_named(&state, target) {
                    return Ok((Place::Group(chan.id), format!("doc:{name}")));
                }
                Err(NodeError::UnknownTarget(target.to_owned()))
            }
            Err(e) => Err(e),
        }
    }

    /// How a place is named in views (the same forms a target takes).
    fn place_name(&self, s: &Store, place: &Place) -> Result<String, NodeError> {
        Ok(match place {
            Place::Direct(uid) => match s.get::<crate::records::ContactRec>(Table::Contacts, &uid.0)? {
                Some(c) => format!("@{}", c.name),
                None => format!("@{}", &uid.to_hex()[..8]),
            },
            Place::Group(g) => {
                let state = self.team_state(s)?.map(|t| t.1);
                let found = state.as_ref().and_then(|st| {
                    if let Some((n, _)) = st.channel_by_id(g) {
                        Some(format!("#{n}"))
                    } else if let Some((n, _)) = st.project_by_id(g) {
                        Some(format!("project:{n}"))
                    } else {
                        st.doc_by_id(g).map(|(n, _)| format!("doc:{n}"))
                    }
                });
                found.unwrap_or_else(|| format!("group {}", &g.to_hex()[..8]))
            }
        })
    }

    /// Announces a sealed file to `target` and files it; returns its id.
    pub(crate) fn share_file(
        &self,
        s: &Store,
        ctx: &mut SealCtx,
        target: &str,
        manifest: FileManifest,
        now: u64,
    ) -> Result<FileId, NodeError> {
        let (place, shown) = self.resolve_target(s, target)?;
        let line = file_line(&manifest);
        let file = manifest.clone();
        let make = move |id, sent_at| Content::File { id, sent_at, file };
        let (msg, shared_at) = match place {
            Place::Direct(_) => {
                let who = shown.trim_start_matches('@');
                let (id, _) = self.send_direct(s, ctx, who, &line, now, make)?;
                (id, now)
            }
            Place::Group(_) if shown.starts_with('#') => {
                (self.send_channel(s, ctx, &shown, &line, now, make)?, now)
            }
            Place::Group(g) => {
                let state = self.team_state(s)?.ok_or(NodeError::NoTeam)?.1;
                let (name, chan) = state
                    .project_by_id(&g)
                    .or_else(|| state.doc_by_id(&g))
                    .map(|(n, c)| (n.clone(), c.clone()))
                    .ok_or_else(|| NodeError::UnknownTarget(target.to_owned()))?;
                let id = MsgId::random();
                let (_, _, sent_at, _) =
                    self.seal_group(s, ctx, &state, &name, &chan, id, |t| make(id, t), now)?;
                (id, sent_at)
            }
        };
        let rec = FileRec {
            manifest,
            place,
            from: self.me.user_id(),
            from_device: self.me.device_key(),
            shared_at,
            msg,
        };
        let id = rec.manifest.id();
        self.record_file(s, &mut ctx.batch, rec)?;
        Ok(id)
    }

    /// Every file version known here, each numbered within its name and place (oldest is 1).
    pub(crate) fn files_view(&self, s: &Store) -> Result<Vec<(FileView, FileRec)>, NodeError> {
        let mut recs: Vec<FileRec> =
            s.scan::<FileRec>(Table::Files, &[]).map(|r| r.map(|(_, f)| f)).collect::<Result<_, _>>()?;
        recs.sort_by_key(|r| (r.shared_at, r.manifest.id()));
        let mut versions: BTreeMap<(Place, String), u32> = BTreeMap::new();
        let state = self.team_state(s)?.map(|t| t.1);
        let mut out = Vec::new();
        for rec in recs {
            let v = versions.entry((rec.place, rec.manifest.name.clone())).or_insert(0);
            *v += 1;
            let from = if rec.from == self.me.user_id() {
                "me".to_owned()
            } else if let Some(st) = &state {
                self.member_name(s, st, &rec.from)
            } else {
                match s.get::<crate::records::ContactRec>(Table::Contacts, &rec.from.0)? {
                    Some(c) => c.name,
                    None => rec.from.to_hex()[..8].to_owned(),
                }
            };
            let view = FileView {
                id: rec.manifest.id().to_hex(),
                name: rec.manifest.name.clone(),
                version: *v,
                size: rec.manifest.size,
                place: self.place_name(s, &rec.place)?,
                from,
                shared_at: rec.shared_at,
                chunks: rec.manifest.chunks.len(),
                chunks_here: 0,
            };
            out.push((view, rec));
        }
        Ok(out)
    }
}

/// Finds one file version by id (a unique prefix of at least 4 hex digits) or by name (its
/// newest version).
fn pick(all: Vec<(FileView, FileRec)>, wanted: &str) -> Result<(FileView, FileRec), NodeError> {
    let w = wanted.trim().to_lowercase();
    let by_id: Vec<_> = all.iter().filter(|(v, _)| w.len() >= 4 && v.id.starts_with(&w)).cloned().collect();
    match by_id.len() {
        1 => return by_id.into_iter().next().ok_or(NodeError::UnknownFile(wanted.to_owned())),
        n if n > 1 => {
            return Err(NodeError::UnknownFile(format!("{wanted} (matches {n} files; give more digits)")))
        }
        _ => {}
    }
    all.into_iter()
        .filter(|(v, _)| v.name == wanted.trim())
        .max_by_key(|(v, _)| v.shared_at)
        .ok_or_else(|| NodeError::UnknownFile(wanted.to_owned()))
}

// ---- progress ----

/// A share or fetch in progress (or finished), as the API reports it.
#[derive(Debug)]
pub(crate) struct Transfer {
    kind: &'static str,
    name: Mutex<String>,
    file_id: Mutex<Option<String>>,
    path: Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
    fetched: AtomicU64,
    reused: AtomicU64,
    rejected: AtomicU64,
    outcome: Mutex<Option<Result<(), String>>>,
    peers: Mutex<BTreeMap<String, u64>>,
    started: Instant,
    elapsed_ms: AtomicU64,
}

impl Transfer {
    fn new(kind: &'static str, name: &str, path: &Path) -> Self {
        Self {
            kind,
            name: Mutex::new(name.to_owned()),
            file_id: Mutex::new(None),
            path: Mutex::new(path.display().to_string()),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            outcome: Mutex::new(None),
            peers: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
            elapsed_ms: AtomicU64::new(0),
        }
    }

    fn finish<T>(&self, r: &Result<T, NodeError>) {
        self.elapsed_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        *locked(&self.outcome) = Some(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    }

    pub(crate) fn view(&self, id: &str) -> TransferView {
        let outcome = locked(&self.outcome).clone();
        let elapsed = match outcome {
            Some(_) => self.elapsed_ms.load(Ordering::Relaxed),
            None => self.started.elapsed().as_millis() as u64,
        };
        TransferView {
            transfer: id.to_owned(),
            kind: self.kind.to_owned(),
            name: locked(&self.name).clone(),
            file_id: locked(&self.file_id).clone(),
            path: locked(&self.path).clone(),
            state: match &outcome {
                None => "running",
                Some(Ok(())) => "done",
                Some(Err(_)) => "failed",
            }
            .to_owned(),
            error: outcome.and_then(|o| o.err()),
            total_bytes: self.total.load(Ordering::Relaxed),
            done_bytes: self.done.load(Ordering::Relaxed),
            chunks_fetched: self.fetched.load(Ordering::Relaxed),
            chunks_reused: self.reused.load(Ordering::Relaxed),
            chunks_rejected: self.rejected.load(Ordering::Relaxed),
            from_peers: locked(&self.peers).clone(),
            elapsed_ms: elapsed,
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The transfers of this node's lifetime, by id.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    all: Mutex<HashMap<String, Arc<Transfer>>>,
}

impl Transfers {
    fn start(&self, t: Transfer) -> (String, Arc<Transfer>) {
        let id = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 8]>());
        let t = Arc::new(t);
        let mut all = locked(&self.all);
        // Finished transfers are kept for their progress queries, up to a bound.
        if all.len() >= MAX_TRANSFERS_KEPT {
            let finished: Vec<String> =
                all.iter().filter(|(_, t)| locked(&t.outcome).is_some()).map(|(k, _)| k.clone()).collect();
            for k in finished.into_iter().take(all.len() + 1 - MAX_TRANSFERS_KEPT) {
                all.remove(&k);
            }
        }
        all.insert(id.clone(), t.clone());
        (id, t)
    }

    pub(crate) fn view(&self, id: &str) -> Option<TransferView> {
        locked(&self.all).get(id).map(|t| t.view(id))
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io { path: path.display().to_string(), source }
}

fn join_err(e: tokio::task::JoinError) -> NodeError {
    NodeError::Unavailable(format!("a file task failed: {e}"))
}

// ---- sharing ----

/// Reads `path` once: seals each chunk with a new key and stores it (durably) under its hash.
fn seal_file(path: &Path, name: &str, chunks: &ChunkStore, t: &Transfer) -> Result<FileManifest, NodeError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let chunk_size = FileManifest::chunk_size_for(size)
        .ok_or(NodeError::FileTooLarge(size, dingo_types::file::MAX_FILE_BYTES))?;
    t.total.store(size, Ordering::Relaxed);
    let key = new_file_key();
    let count = FileManifest::chunk_count(size, chunk_size);
    let mut hashes = Vec::with_capacity(count as usize);
    for index in 0..count {
        let len = size.saturating_sub(index * u64::from(chunk_size)).min(u64::from(chunk_size)) as usize;
        let mut buf = Vec::with_capacity(len + 16);
        (&mut f).take(len as u64).read_to_end(&mut buf).map_err(io_err(path))?;
        if buf.len() != len {
            return Err(NodeError::Unavailable(format!(
                "{} changed while it was being shared",
                path.display()
            )));
        }
        let hash = seal_chunk(&key, index, &mut buf)?;
        chunks.write(&hash, &buf).map_err(io_err(chunks.dir()))?;
        hashes.push(hash);
        t.done.fetch_add(len as u64, Ordering::Relaxed);
    }
    // The manifest goes out only once every chunk it names is on disk, names included.
    chunks.make_durable(&hashes).map_err(io_err(chunks.dir()))?;
    let manifest =
        FileManifest { name: name.to_owned(), size, chunk_size, chunks: hashes, key: *key.expose() };
    manifest.check().map_err(|e| NodeError::BadName(e.to_string()))?;
    Ok(manifest)
}

impl Node {
    fn chunk_store(&self) -> ChunkStore {
        ChunkStore::new(self.inner.home.dir().join("chunks"))
    }

    /// Shares a file with a contact, channel, project or document (see [`Core::resolve_target`]
    /// for the forms `target` takes); returns the version shared.
    pub async fn file_share(&self, target: &str, path: &Path) -> Result<FileView, NodeError> {
        let (_, t) = self.inner.transfers.start(Transfer::new("share", "", path));
        self.share_tracked(target, path, t).await
    }

    /// Starts sharing a file and returns at once; follow it with [`Node::transfer`].
    pub async fn file_share_start(&self, target: &str, path: &Path) -> Result<TransferView, NodeError> {
        let (target, path) = (target.to_owned(), path.to_owned());
        self.check_target(&target).await?;
        let (id, t) = self.inner.transfers.start(Transfer::new("share", "", &path));
        let node = self.clone();
        tokio::spawn(async move {
            let _ = node.share_tracked(&target, &path, t).await;
        });
        self.transfer(&id).ok_or_else(|| NodeError::Unavailable("transfer lost".into()))
    }

    async fn check_target(&self, target: &str) -> Result<(), NodeError> {
        let target = target.to_owned();
        self.job(move |c, s| c.resolve_target(s, &target).map(|_| ())).await
    }

    async fn share_tracked(
        &self,
        target: &str,
        path: &Path,
        t: Arc<Transfer>,
    ) -> Result<FileView, NodeError> {
        let r = self.share_inner(target, path, &t).await;
        t.finish(&r);
        r
    }

    async fn share_inner(&self, target: &str, path: &Path, t: &Arc<Transfer>) -> Result<FileView, NodeError> {
        self.check_target(target).await?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| NodeError::BadName(format!("{} has no usable file name", path.display())))?
            .to_owned();
        check_file_name(&name)
            .map_err(|_| NodeError::BadName(format!("{name:?} cannot be shared as a file name")))?;
        *locked(&t.name) = name.clone();
        let (chunks, p, tt) = (self.chunk_store(), path.to_owned(), t.clone());
        let manifest = tokio::task::spawn_blocking(move || seal_file(&p, &name, &chunks, &tt))
            .await
            .map_err(join_err)??;
        let target = target.to_owned();
        let now = dingo_types::now_ms();
        let id = self.sealing_job(move |c, s, ctx| c.share_file(s, ctx, &target, manifest, now)).await?;
        *locked(&t.file_id) = Some(id.to_hex());
        self.file_view(&id.to_hex()).await
    }

    /// Every file version known here (shared by this user or to them).
    pub async fn files(&self) -> Result<Vec<FileView>, NodeError> {
        let (all, copies) = self.job(|c, s| Ok((c.files_view(s)?, c.file_copies(s)?))).await?;
        let chunks = self.chunk_store();
        Ok(all
            .into_iter()
            .map(|(v, r)| {
                let copy = copies.get(&r.manifest.id());
                with_presence(v, &r, &chunks, copy)
            })
            .collect())
    }

    /// The versions of the file called `name`, oldest first.
    pub async fn file_versions(&self, name: &str) -> Result<Vec<FileView>, NodeError> {
        let name = name.trim().to_owned();
        let out: Vec<FileView> = self.files().await?.into_iter().filter(|v| v.name == name).collect();
        if out.is_empty() {
            return Err(NodeError::UnknownFile(name));
        }
        Ok(out)
    }

    async fn file_view(&self, wanted: &str) -> Result<FileView, NodeError> {
        let all = self.job(|c, s| c.files_view(s)).await?;
        let (v, r) = pick(all, wanted)?;
        let id = r.manifest.id();
        let copy = self.job(move |c, s| c.file_copy(s, &id)).await?;
        Ok(with_presence(v, &r, &self.chunk_store(), copy.as_ref()))
    }

    /// Turns `--attach` values into task attachments: an existing file is shared into the
    /// project (`file:ID`), a known file id or prefix names that version, and any other hex id
    /// is taken as a message's (`msg:ID`).
    pub(crate) async fn resolve_attachments(
        &self,
        project: &str,
        values: Vec<String>,
    ) -> Result<Vec<String>, NodeError> {
        let mut out = Vec::new();
        for v in values {
            let path = Path::new(&v);
            if path.is_file() {
                let shared = self.file_share(&format!("project:{project}"), path).await?;
                out.push(format!("file:{}", shared.id));
                continue;
            }
            let hex = v.trim().to_lowercase();
            if !(4..=64).contains(&hex.len()) || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(NodeError::BadName(format!(
                    "--attach {v:?}: give a file to share, a shared file's id or a message id"
                )));
            }
            match self.file_view(&hex).await {
                Ok(f) => out.push(format!("file:{}", f.id)),
                Err(NodeError::UnknownFile(_)) if hex.len() <= 32 => out.push(format!("msg:{hex}")),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// A transfer's progress.
    pub fn transfer(&self, id: &str) -> Option<TransferView> {
        self.inner.transfers.view(id)
    }

    // ---- fetching ----

    /// Fetches a file version (by id prefix, or the newest version of a name) into `out`.
    pub async fn file_get(&self, wanted: &str, out: &Path) -> Result<TransferView, NodeError> {
        let (id, t) = self.inner.transfers.start(Transfer::new("get", "", out));
        let r = self.get_inner(wanted, out, &t).await;
        t.finish(&r);
        r?;
        self.transfer(&id).ok_or_else(|| NodeError::Unavailable("transfer lost".into()))
    }

    /// Starts fetching a file and returns at once; follow it with [`Node::transfer`].
    pub async fn file_get_start(&self, wanted: &str, out: &Path) -> Result<TransferView, NodeError> {
        self.file_view(wanted).await?;
        let (id, t) = self.inner.transfers.start(Transfer::new("get", "", out));
        let (node, wanted, out) = (self.clone(), wanted.to_owned(), out.to_owned());
        tokio::spawn(async move {
            let r = node.get_inner(&wanted, &out, &t).await;
            t.finish(&r);
        });
        self.transfer(&id).ok_or_else(|| NodeError::Unavailable("transfer lost".into()))
    }

    async fn get_inner(&self, wanted: &str, out: &Path, t: &Arc<Transfer>) -> Result<(), NodeError> {
        let all = self.job(|c, s| c.files_view(s)).await?;
        let (view, rec) = pick(all, wanted)?;
        // Into a directory the file goes under its own name, never over an existing file.
        let out = if out.is_dir() {
            let p = out.join(&view.name);
            if p.exists() {
                return Err(NodeError::Io {
                    path: p.display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "already exists; pass -o PATH to choose where the file goes",
                    ),
                });
            }
            p
        } else {
            out.to_owned()
        };
        let out = out.as_path();
        *locked(&t.path) = out.display().to_string();
        *locked(&t.name) = view.name.clone();
        *locked(&t.file_id) = Some(view.id.clone());
        t.total.store(rec.manifest.size, Ordering::Relaxed);
        let part = part_path(out);
        let resuming = part.is_file();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(io_err(&part))?;
        file.set_len(rec.manifest.size).map_err(io_err(&part))?;
        let fetch = Arc::new(Fetch {
            key: Secret32::from_bytes(rec.manifest.key),
            manifest: rec.manifest,
            chunks: self.chunk_store(),
            out: file,
            part: part.clone(),
            t: t.clone(),
            work: Mutex::new(Work::default()),
        });
        // Chunks of this file found here already are used first: our own share's, what an
        // interrupted fetch wrote, an earlier copy's.
        let (id, manifest, part_at) = (fetch.manifest.id(), fetch.manifest.clone(), part.clone());
        let earlier = self
            .job(move |c, s| {
                let earlier = c.file_copy(s, &id)?.filter(|c| c.complete).map(|c| PathBuf::from(c.path));
                // Chunks are served from the part file while it fills, unless a whole copy is
                // here already (kept as the one to serve from, should this fetch fail).
                if earlier.is_none() {
                    c.record_copy(s, &manifest, &part_at, false)?;
                }
                Ok(earlier)
            })
            .await?;
        let f = fetch.clone();
        let missing = tokio::task::spawn_blocking(move || f.use_local(resuming, earlier.as_deref()))
            .await
            .map_err(join_err)??;
        if !missing.is_empty() {
            let net = self.inner.net.get().ok_or_else(|| {
                NodeError::FileUnavailable(format!(
                    "{} of {} chunks are not here and the node is not running; start `dingo run` to fetch them",
                    missing.len(),
                    fetch.manifest.chunks.len()
                ))
            })?;
            locked(&fetch.work).queue = missing.into();
            let peers = self.file_sources(&rec.from_device).await?;
            fetch_missing(&fetch, net, peers).await?;
        }
        // Written through the page cache like any download (no fsync): a file damaged by a
        // crash is found by the hash checks when it is fetched again or served, and repaired.
        std::fs::rename(&part, out).map_err(io_err(out))?;
        let (manifest, out) = (fetch.manifest.clone(), out.to_owned());
        self.job(move |c, s| c.record_copy(s, &manifest, &out, true)).await
    }

    /// Connected peers that may serve chunks: contacts and teammates, the sharer first.
    async fn file_sources(&self, sharer: &DeviceKey) -> Result<Vec<Peer>, NodeError> {
        let connected = self.inner.carrier.connected_peers();
        let allowed = self
            .job(move |c, s| {
                let mut ok = Vec::new();
                for d in connected {
                    if matches!(c.contact_by_device(s, &DeviceKey(d))?, Some(rec) if !rec.removed) {
                        ok.push(d);
                    }
                }
                Ok(ok)
            })
            .await?;
        let mut peers: Vec<(bool, Peer)> =
            allowed.iter().filter_map(|d| dingo_net::peer_id_of(d).map(|p| (d != &sharer.0, p))).collect();
        peers.sort();
        Ok(peers.into_iter().map(|(_, p)| p).collect())
    }
}

/// Counts the chunks this node holds: sealed in its chunk store, or all of them while its
/// complete copy is where it was put, at its size (its bytes are checked when served).
fn with_presence(mut v: FileView, r: &FileRec, chunks: &ChunkStore, copy: Option<&FileCopy>) -> FileView {
    let copy_intact = copy.is_some_and(|c| {
        c.complete && std::fs::metadata(&c.path).is_ok_and(|m| m.is_file() && m.len() == r.manifest.size)
    });
    v.chunks_here = if copy_intact {
        r.manifest.chunks.len()
    } else {
        r.manifest.chunks.iter().filter(|h| chunks.has(h)).count()
    };
    v
}

/// Where a fetch writes until the file is complete.
fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".dingo-part");
    out.with_file_name(name)
}

#[derive(Default)]
struct Work {
    /// Chunk indices nobody is fetching now.
    queue: VecDeque<usize>,
    /// Peers that said they lack a chunk.
    lacking: HashMap<usize, HashSet<Peer>>,
    /// Peers dropped for this fetch (a bad chunk, a broken stream).
    dropped: HashSet<Peer>,
}

impl Work {
    /// Up to `n` queued chunks that `peer` has not said it lacks.
    fn take(&mut self, peer: &Peer, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut rest = VecDeque::with_capacity(self.queue.len());
        while let Some(i) = self.queue.pop_front() {
            if out.len() < n && !self.lacking.get(&i).is_some_and(|l| l.contains(peer)) {
                out.push(i);
            } else {
                rest.push_back(i);
            }
        }
        self.queue = rest;
        out
    }

    /// Whether `peer` could still help.
    fn useful(&self, peer: &Peer) -> bool {
        !self.dropped.contains(peer)
            && self.queue.iter().any(|i| !self.lacking.get(i).is_some_and(|l| l.contains(peer)))
    }
}

struct Fetch {
    manifest: FileManifest,
    key: Secret32,
    chunks: ChunkStore,
    out: std::fs::File,
    part: PathBuf,
    t: Arc<Transfer>,
    work: Mutex<Work>,
}

/// A received chunk being checked and written: the outcome, and its buffer back for reuse.
type KeepJob = tokio::task::JoinHandle<(Result<(), Refused>, Vec<u8>)>;

/// Why a chunk was not kept.
enum Refused {
    Corrupt,
    Failed(NodeError),
}

impl Fetch {
    /// Writes out the chunks found here (see [`Node::get_inner`]); returns the indices still
    /// to fetch. A stored chunk that does not open is deleted and fetched again.
    fn use_local(&self, resuming: bool, earlier: Option<&Path>) -> Result<Vec<usize>, NodeError> {
        let earlier = earlier.and_then(|p| Some((p, std::fs::File::open(p).ok()?)));
        let mut missing = Vec::new();
        for (i, h) in self.manifest.chunks.iter().enumerate() {
            let found = match self.chunks.read(h).map_err(io_err(self.chunks.dir()))? {
                Some(mut sealed) => match self.keep(i, &mut sealed) {
                    Ok(()) => true,
                    Err(Refused::Corrupt) => {
                        tracing::warn!(chunk = i, "a stored chunk is damaged; fetching it again");
                        self.chunks.remove(h).map_err(io_err(self.chunks.dir()))?;
                        false
                    }
                    Err(Refused::Failed(e)) => return Err(e),
                },
                None => false,
            };
            let found = found
                || (resuming && self.part_holds(i)?)
                || earlier.as_ref().map(|(p, f)| self.copy_from(p, f, i)).transpose()?.unwrap_or(false);
            if found {
                self.t.reused.fetch_add(1, Ordering::Relaxed);
            } else {
                missing.push(i);
            }
        }
        Ok(missing)
    }

    /// Where chunk `index` goes in the file, and how long it is.
    fn range(&self, index: usize) -> (u64, u64) {
        (self.manifest.chunk_offset(index), self.manifest.chunk_len(index))
    }

    /// Whether an interrupted fetch already wrote chunk `index` to the part file, whole.
    fn part_holds(&self, index: usize) -> Result<bool, NodeError> {
        let (offset, len) = self.range(index);
        let Some(mut plain) = read_range(&self.out, offset, len).map_err(io_err(&self.part))? else {
            return Ok(false);
        };
        // Never written: the part file starts as a hole of zeros (no need to seal those).
        if plain.iter().all(|b| *b == 0) {
            return Ok(false);
        }
        let held = seal_matches(&self.key, index, &mut plain, &self.manifest.chunks[index]);
        if held {
            self.t.done.fetch_add(len, Ordering::Relaxed);
        }
        Ok(held)
    }

    /// Copies chunk `index` from an earlier copy of the file, if that still holds it.
    fn copy_from(&self, path: &Path, earlier: &std::fs::File, index: usize) -> Result<bool, NodeError> {
        let (offset, len) = self.range(index);
        let Some(plain) = read_range(earlier, offset, len).map_err(io_err(path))? else {
            return Ok(false);
        };
        let mut sealed = Vec::with_capacity(plain.len() + 16);
        sealed.extend_from_slice(&plain);
        if !seal_matches(&self.key, index, &mut sealed, &self.manifest.chunks[index]) {
            return Ok(false);
        }
        self.out.write_all_at(&plain, offset).map_err(io_err(&self.part))?;
        self.t.done.fetch_add(len, Ordering::Relaxed);
        Ok(true)
    }

    /// Checks a sealed chunk, opens it and writes it out; `sealed` is left holding the
    /// plaintext.
    fn keep(&self, index: usize, sealed: &mut Vec<u8>) -> Result<(), Refused> {
        if chunk_hash(sealed) != self.manifest.chunks[index] {
            return Err(Refused::Corrupt);
        }
        open_chunk(&self.key, index as u64, sealed).map_err(|_| Refused::Corrupt)?;
        if sealed.len() as u64 != self.manifest.chunk_len(index) {
            return Err(Refused::Corrupt);
        }
        let offset = self.manifest.chunk_offset(index);
        self.out.write_all_at(sealed, offset).map_err(|e| Refused::Failed(io_err(&self.part)(e)))?;
        self.t.done.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Fetches the queued chunks from `peers`, in rounds: every peer that can still help works
/// at once; chunks a peer lacked or failed go to the others in the next round.
async fn fetch_missing(f: &Arc<Fetch>, net: &Net, peers: Vec<Peer>) -> Result<(), NodeError> {
    loop {
        let (left, helpers) = {
            let w = locked(&f.work);
            (w.queue.len(), peers.iter().filter(|p| w.useful(p)).copied().collect::<Vec<_>>())
        };
        if left == 0 {
            return Ok(());
        }
        if helpers.is_empty() {
            return Err(NodeError::FileUnavailable(format!(
                "{left} of {} chunks are on no connected peer; the fetch resumes from here when one that has them is online",
                f.manifest.chunks.len()
            )));
        }
        let runs = helpers.iter().map(|p| {
            let (f, net, p) = (f.clone(), net.clone(), *p);
            async move {
                if let Err(e) = fetch_from(&f, &net, p).await {
                    tracing::info!(peer = %p, "stopped fetching from this peer: {e}");
                    locked(&f.work).dropped.insert(p);
                }
            }
        });
        futures::future::join_all(runs).await;
    }
}

/// One peer's share of a fetch, on one stream, until it has nothing more to give.
async fn fetch_from(f: &Arc<Fetch>, net: &Net, peer: Peer) -> Result<(), NodeError> {
    let mut mine: HashSet<usize> = HashSet::new();
    let r = fetch_stream(f, net, peer, &mut mine).await;
    // Whatever this peer did not deliver goes back for the others.
    let mut w = locked(&f.work);
    w.queue.extend(mine);
    r
}

async fn fetch_stream(
    f: &Arc<Fetch>,
    net: &Net,
    peer: Peer,
    mine: &mut HashSet<usize>,
) -> Result<(), NodeError> {
    let mut stream = net.open_stream(peer, FILE_PROTOCOL).await?;
    let mut in_flight: VecDeque<Vec<usize>> = VecDeque::new();
    let mut writing: VecDeque<(usize, KeepJob)> = VecDeque::new();
    let mut spare: Vec<Vec<u8>> = Vec::new();
    let timeout = |what: &'static str| move |_| NodeError::Unavailable(format!("{what} timed out"));
    loop {
        while in_flight.len() < REQUESTS_IN_FLIGHT {
            let batch = locked(&f.work).take(&peer, CHUNKS_PER_REQUEST);
            if batch.is_empty() {
                break;
            }
            mine.extend(&batch);
            let hashes: Vec<_> = batch.iter().map(|i| f.manifest.chunks[*i]).collect();
            stream.write_all(&encode_chunk_request(&hashes)).await.map_err(stream_err(peer))?;
            stream.flush().await.map_err(stream_err(peer))?;
            in_flight.push_back(batch);
        }
        let Some(batch) = in_flight.pop_front() else { break };
        for index in batch {
            let mut head = [0u8; CHUNK_ANSWER_HEAD];
            tokio::time::timeout(CHUNK_TIMEOUT, stream.read_exact(&mut head))
                .await
                .map_err(timeout("a chunk answer"))?
                .map_err(stream_err(peer))?;
            let Some(len) = decode_chunk_answer_head(&head).map_err(|e| bad_peer(peer, &e.to_string()))?
            else {
                mine.remove(&index);
                let mut w = locked(&f.work);
                w.lacking.entry(index).or_default().insert(peer);
                w.queue.push_back(index);
                continue;
            };
            // The buffer of a chunk already written is reused: no new 1 MiB to zero per chunk.
            let mut sealed = spare.pop().unwrap_or_default();
            sealed.resize(len as usize, 0);
            tokio::time::timeout(CHUNK_TIMEOUT, stream.read_exact(&mut sealed))
                .await
                .map_err(timeout("a chunk"))?
                .map_err(stream_err(peer))?;
            // Earlier chunks are checked and written while this one arrives, a few at a time.
            while writing.len() >= CHUNKS_BEING_WRITTEN {
                let Some((i, job)) = writing.pop_front() else { break };
                let (kept, buf) = job.await.map_err(join_err)?;
                finish_keep(f, peer, i, kept, mine)?;
                spare.push(buf);
            }
            let ff = f.clone();
            writing.push_back((
                index,
                tokio::task::spawn_blocking(move || {
                    let kept = ff.keep(index, &mut sealed);
                    (kept, sealed)
                }),
            ));
        }
    }
    while let Some((i, job)) = writing.pop_front() {
        finish_keep(f, peer, i, job.await.map_err(join_err)?.0, mine)?;
    }
    let _ = stream.close().await;
    Ok(())
}

fn finish_keep(
    f: &Fetch,
    peer: Peer,
    index: usize,
    r: Result<(), Refused>,
    mine: &mut HashSet<usize>,
) -> Result<(), NodeError> {
    match r {
        Ok(()) => {
            mine.remove(&index);
            f.t.fetched.fetch_add(1, Ordering::Relaxed);
            *locked(&f.t.peers).entry(peer.to_string()).or_default() += 1;
            Ok(())
        }
        Err(Refused::Corrupt) => {
            f.t.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, chunk = index, "peer served a chunk that does not match its hash");
            Err(bad_peer(peer, "served a corrupted chunk"))
        }
        Err(Refused::Failed(e)) => Err(e),
    }
}

fn stream_err(peer: Peer) -> impl Fn(std::io::Error) -> NodeError {
    move |e| NodeError::Net(dingo_net::NetError::Request { peer, reason: e.to_string() })
}

fn bad_peer(peer: Peer, why: &str) -> NodeError {
    NodeError::Net(dingo_net::NetError::Request { peer, reason: why.to_owned() })
}

// ---- serving ----

/// Answers chunk requests from contacts and teammates until the node shuts down.
pub(crate) async fn serve_loop(node: Node, mut incoming: IncomingStreams) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_SERVING_STREAMS));
    let mut shutdown = node.inner.shutdown.subscribe();
    loop {
        let (peer, stream) = tokio::select! {
            _ = shutdown.changed() => break,
            s = incoming.next() => match s { Some(s) => s, None => break },
        };
        let Some(device) = dingo_net::device_key_of(&peer) else { continue };
        let allowed = node
            .job(move |c, s| Ok(matches!(c.contact_by_device(s, &DeviceKey(device))?, Some(r) if !r.removed)))
            .await
            .unwrap_or(false);
        if !allowed {
            tracing::info!(%peer, "refused a chunk request from a stranger");
            node.inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many chunk streams; this one must retry");
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(&node, stream).await {
                tracing::debug!(%peer, "chunk stream ended: {e}");
            }
            drop(permit);
        });
    }
}

/// A chunk to send: as stored if this node shared it, else sealed again from its copy.
async fn load_chunk(node: Node, hash: ChunkHash) -> std::io::Result<Option<Vec<u8>>> {
    let chunks = node.chunk_store();
    if let Some(sealed) = tokio::task::spawn_blocking(move || chunks.read(&hash)).await?? {
        return Ok(Some(sealed));
    }
    let copied = match node.job(move |c, s| c.copied_chunk(s, &hash)).await {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!("could not look up a chunk to serve: {e}");
            return Ok(None);
        }
    };
    tokio::task::spawn_blocking(move || copied.reseal()).await?
}

async fn serve_stream(node: &Node, mut stream: Stream) -> std::io::Result<()> {
    let read = |h: ChunkHash| tokio::spawn(load_chunk(node.clone(), h));
    loop {
        let mut head = [0u8; CHUNK_REQUEST_HEAD];
        match tokio::time::timeout(CHUNK_TIMEOUT, stream.read_exact(&mut head)).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r?,
        }
        let n = decode_chunk_request_head(&head).map_err(std::io::Error::other)?;
        let mut raw = vec![0u8; n * 32];
        stream.read_exact(&mut raw).await?;
        let hashes: Vec<[u8; 32]> = raw.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect();
        // Read the next chunk from disk while this one is sent.
        let mut next = hashes.first().map(|h| read(*h));
        for i in 0..hashes.len() {
            let data = match next.take() {
                Some(job) => job.await.map_err(std::io::Error::other)??,
                None => None,
            };
            next = hashes.get(i + 1).map(|h| read(*h));
            match data {
                Some(bytes) => {
                    stream.write_all(&encode_chunk_answer_head(Some(bytes.len() as u32))).await?;
                    stream.write_all(&bytes).await?;
                }
                None => stream.write_all(&encode_chunk_answer_head(None)).await?,
            }
        }
        stream.flush().await?;
    }
}
