//! Requests over one long-lived stream per peer and direction (`/dingo/msg/2`).
//!
//! libp2p's request-response opens, negotiates and closes a Yamux stream per request and passes
//! every request and response through the swarm task. Measured on 127.0.0.1, that costs ~3× the
//! CPU of a frame on an open stream (BENCHMARKS.md). Here a node opens one stream to each peer
//! it sends to and keeps it while it is used: requests carry an id, the peer answers each on
//! the same stream with that id, in any order, and the frames move between the connection and
//! the node without the swarm task.
//!
//! - Outbound: a [`Link`] per peer. A writer task sends queued frames (a burst is flushed once),
//!   a reader task hands each response to the request waiting for its id, and closes the link
//!   after the idle timeout when nothing is in flight (the connection may then close too).
//! - Inbound: [`serve`] reads requests, gives each to the node with a [`Responder`], and a writer
//!   task sends the answers. At most [`MAX_IN_FLIGHT`] requests per stream wait for an answer;
//!   past that the stream is not read, and its flow control holds the sender back.

use crate::codec::read_frame;
use crate::{Event, NetError};
use dingo_types::wire::{encode_frame, DeliveryStatus, Request, Response};
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Most requests one stream may have waiting for an answer at the receiving node.
pub const MAX_IN_FLIGHT: usize = 256;
/// Frames queued to one outbound stream's writer before senders wait.
const WRITE_QUEUE: usize = 256;

type Reply = oneshot::Sender<Result<Response, NetError>>;
/// A frame for a writer task, with the in-flight slot it frees once written (answers only).
type Queued = (Vec<u8>, Option<OwnedSemaphorePermit>);

/// A lock whose data stays usable after a panic elsewhere (every update here is one step).
pub(crate) fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a request on a link failed.
pub(crate) enum CallError {
    /// The link had ended before the request was written: another link may carry it.
    Closed,
    /// The stream ended while the request waited for its answer.
    Ended(NetError),
    /// The request went out (or may have) and failed otherwise (no answer in time).
    Failed(NetError),
}

/// The requesting side of one stream to a peer.
pub(crate) struct Link {
    peer: PeerId,
    /// Frames to the writer task; `None` once the link is closed.
    frames: Mutex<Option<mpsc::Sender<Queued>>>,
    /// Requests waiting for their answer, by id; `None` once the link is closed.
    pending: Mutex<Option<HashMap<u64, Reply>>>,
    next_id: AtomicU64,
    /// Whether a response was ever read (a link that never answered may have been refused at
    /// accept).
    answered: AtomicBool,
}

impl Link {
    /// Starts the link's reader and writer tasks on an opened stream.
    pub(crate) fn start(peer: PeerId, stream: Stream, idle: Duration) -> Arc<Link> {
        let (reader, writer) = stream.split();
        let (frames, queue) = mpsc::channel(WRITE_QUEUE);
        let link = Arc::new(Link {
            peer,
            frames: Mutex::new(Some(frames)),
            pending: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(0),
            answered: AtomicBool::new(false),
        });
        tokio::spawn(write_frames(writer, queue));
        tokio::spawn(link.clone().read_responses(reader, idle));
        link
    }

    /// Whether requests can still be sent on this link.
    pub(crate) fn is_open(&self) -> bool {
        locked(&self.pending).is_some()
    }

    /// Whether the peer ever answered on this link.
    pub(crate) fn has_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    /// Sends one encoded request and waits up to `timeout` for its response.
    pub(crate) async fn call(&self, body: &[u8], timeout: Duration) -> Result<Response, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(id, body).map_err(|e| self.failed(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        match locked(&self.pending).as_mut() {
            Some(pending) => pending.insert(id, reply),
            None => return Err(CallError::Closed),
        };
        let Some(frames) = locked(&self.frames).clone() else {
            self.forget(id);
            return Err(CallError::Closed);
        };
        if frames.send((frame, None)).await.is_err() {
            self.forget(id);
            return Err(CallError::Closed);
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result.map_err(CallError::Ended),
            Ok(Err(_)) => Err(CallError::Ended(self.error("the stream closed"))),
            Err(_) => {
                self.forget(id);
                Err(self.failed(format!("no answer within {timeout:?}")))
            }
        }
    }

    fn error(&self, reason: impl Into<String>) -> NetError {
        NetError::Request { peer: self.peer, reason: reason.into() }
    }

    fn failed(&self, reason: String) -> CallError {
        CallError::Failed(self.error(reason))
    }

    fn forget(&self, id: u64) {
        if let Some(pending) = locked(&self.pending).as_mut() {
            pending.remove(&id);
        }
    }

    /// Ends the link: waiting requests fail with `reason`, the writer closes the stream.
    fn close(&self, reason: &str) {
        let pending = locked(&self.pending).take();
        locked(&self.frames).take();
        for (_, reply) in pending.into_iter().flatten() {
            let _ = reply.send(Err(self.error(reason)));
        }
    }

    /// Closes the link if nothing is waiting for an answer; returns whether it did.
    fn close_if_idle(&self) -> bool {
        let mut pending = locked(&self.pending);
        if pending.as_ref().is_some_and(HashMap::is_empty) {
            *pending = None;
            drop(pending);
            locked(&self.frames).take();
            true
        } else {
            false
        }
    }

    async fn read_responses(self: Arc<Self>, mut reader: ReadHalf<Stream>, idle: Duration) {
        let reason = loop {
            let next = read_frame(&mut reader);
            tokio::pin!(next);
            // A frame read is never interrupted (a cancelled read would lose its bytes): the
            // idle check runs beside it.
            let frame = loop {
                tokio::select! {
                    frame = &mut next => break frame,
                    () = tokio::time::sleep(idle) => if self.close_if_idle() {
                        tracing::debug!(peer = %self.peer, "idle request stream closed");
                        return;
                    },
                }
            };
            let (id, body) = match frame {
                Ok(frame) => frame,
                Err(e) => break e.to_string(),
            };
            let response = match Response::decode(&body) {
                Ok(response) => response,
                Err(e) => break format!("malformed response: {e}"),
            };
            self.answered.store(true, Ordering::Relaxed);
            let reply = locked(&self.pending).as_mut().and_then(|p| p.remove(&id));
            // No one waiting: that request timed out.
            if let Some(reply) = reply {
                let _ = reply.send(Ok(response));
            }
        };
        tracing::debug!(peer = %self.peer, %reason, "request stream ended");
        self.close(&reason);
    }
}

/// Writes queued frames in order, one flush per burst; closes the stream when the queue ends.
async fn write_frames(mut writer: WriteHalf<Stream>, mut queue: mpsc::Receiver<Queued>) {
    while let Some((frame, _held)) = queue.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok((frame, _held)) = queue.try_recv() {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.close().await;
}

/// Answers one inbound request.
#[derive(Debug)]
pub struct Responder {
    id: u64,
    frames: mpsc::Sender<Queued>,
    slot: OwnedSemaphorePermit,
    received: Instant,
}

impl Responder {
    /// Sends the response (dropping the responder instead leaves the request unanswered, and
    /// the requester gives up after its timeout).
    pub fn respond(self, response: Response) {
        match encode_frame(self.id, &response.encode()) {
            // The queue holds one frame per in-flight slot, so it is never full.
            Ok(frame) => {
                let _ = self.frames.try_send((frame, Some(self.slot)));
            }
            Err(e) => tracing::warn!(%e, "response not sent"),
        }
    }

    /// How long ago the request was read off the connection. The requester stops waiting
    /// after [`Config::request_timeout`](crate::Config::request_timeout): work on a request that
    /// has waited about that long is wasted, and its sender sends it again.
    pub fn waited(&self) -> Duration {
        self.received.elapsed()
    }
}

/// What a node answers when it cannot take a request now: the sender retries later.
fn busy(request: &Request) -> Response {
    match request {
        Request::Deliver(envs) | Request::Carry(envs) => {
            Response::Results(vec![DeliveryStatus::Retry; envs.len()])
        }
        Request::Sync(_) => Response::Envelopes { envs: Vec::new(), more: true },
    }
}

/// Serves one inbound stream: each request goes to the node as an [`Event::Request`].
pub(crate) async fn serve(peer: PeerId, stream: Stream, events: mpsc::Sender<Event>) {
    let (mut reader, writer) = stream.split();
    let (frames, queue) = mpsc::channel(MAX_IN_FLIGHT);
    tokio::spawn(write_frames(writer, queue));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (id, body) = match read_frame(&mut reader).await {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!(%peer, %e, "inbound request stream ended");
                return;
            }
        };
        let request = match Request::decode(&body) {
            Ok(request) => request,
            Err(e) => {
                // The stream's framing can no longer be trusted: drop it (the peer's requests
                // on it fail, and its node retries on a new one).
                tracing::warn!(%peer, %e, "malformed request; closing the stream");
                return;
            }
        };
        let responder = Responder { id, frames: frames.clone(), slot, received: Instant::now() };
        match events.try_send(Event::Request { peer, request, responder }) {
            Ok(()) => {}
            // The node is overloaded: the sender backs off and retries, nothing is lost.
            Err(mpsc::error::TrySendError::Full(Event::Request { request, responder, .. })) => {
                responder.respond(busy(&request))
            }
            Err(_) => return,
        }
    }
}
