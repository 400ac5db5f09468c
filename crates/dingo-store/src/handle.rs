//! The async face of the store: [`StoreHandle`] queues jobs to the store thread and flush
//! requests to the flusher thread; the runtime only awaits their answers.
//!
//! Jobs wait in two lanes. What this node's own user and its own timers asked for
//! ([`Lane::Local`]) goes before what peers handed over ([`Lane::Peer`]): a send then waits for
//! the job running now, not for a queue of inbound batches, which in a busy channel (everyone
//! sending their first message under new keys after a removal) can hold a hundred
//! milliseconds of ratchet steps. Each lane keeps its order. A peer's job waiting behind
//! local ones gets its turn after [`LOCAL_RUN`] of them, so a stream of local work cannot
//! starve the network.
//!
//! Reordering across lanes changes nothing a user or peer can tell apart from the network
//! being a little slower: a peer's batch has had no effect, and no answer or event has gone
//! out for it, until its job runs. Anything that depends on it (an event the user reacts to,
//! the effects the job returns) is queued after it ran.

use super::{Shared, Store, StoreError};
use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// Queued store jobs per lane before callers wait.
pub const JOB_QUEUE: usize = 1024;
/// Queued flush requests before callers wait.
pub const FLUSH_QUEUE: usize = 4096;
/// Local jobs run in a row, at most, while a peer's job waits.
pub const LOCAL_RUN: usize = 8;
/// How long a caller facing a full queue waits before it tries again.
const FULL_QUEUE_RETRY: Duration = Duration::from_micros(200);

/// Which queue a store job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Work this node's user or its own timers asked for: sends, reads, queries.
    Local,
    /// Work a peer handed over: inbound envelopes, sync answers, mail to carry.
    Peer,
}

type Job = Box<dyn FnOnce(&Store) + Send>;

#[derive(Default)]
struct Lanes {
    local: VecDeque<Job>,
    peer: VecDeque<Job>,
    /// Local jobs run since the last peer job.
    local_run: usize,
    /// No handle is left to queue more: the store thread finishes the queue and stops.
    closed: bool,
    /// The store thread is gone: jobs are refused.
    stopped: bool,
}

impl Lanes {
    fn lane(&mut self, lane: Lane) -> &mut VecDeque<Job> {
        match lane {
            Lane::Local => &mut self.local,
            Lane::Peer => &mut self.peer,
        }
    }

    fn next(&mut self) -> Option<Job> {
        let peer_turn = self.local.is_empty() || self.local_run >= LOCAL_RUN;
        if peer_turn {
            if let Some(job) = self.peer.pop_front() {
                self.local_run = 0;
                return Some(job);
            }
        }
        let job = self.local.pop_front()?;
        self.local_run += 1;
        Some(job)
    }
}

/// The two lanes and the store thread's wake-up.
#[derive(Default)]
struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Lanes> {
        // Jobs never run under the lock, so a poisoned lock holds consistent queues.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_push(&self, lane: Lane, job: Job) -> Result<(), TrySendError<Job>> {
        let mut lanes = self.lock();
        if lanes.stopped || lanes.closed {
            return Err(TrySendError::Disconnected(job));
        }
        let queue = lanes.lane(lane);
        if queue.len() >= JOB_QUEUE {
            return Err(TrySendError::Full(job));
        }
        queue.push_back(job);
        drop(lanes);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    fn pop(&self) -> Option<Job> {
        let mut lanes = self.lock();
        loop {
            if let Some(job) = lanes.next() {
                return Some(job);
            }
            if lanes.closed {
                return None;
            }
            lanes = self.ready.wait(lanes).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Closes the queue when the last handle goes: the store thread runs what is queued and stops
/// (dropping the store, which checkpoints it).
struct Submitter(Arc<Queue>);

impl Drop for Submitter {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.ready.notify_one();
    }
}

/// Refuses jobs once the store thread is gone, however it ended, and drops those still
/// queued, so their callers hear [`StoreError::Closed`] instead of waiting forever.
struct StopOnExit(Arc<Queue>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        let mut lanes = self.0.lock();
        lanes.stopped = true;
        let dropped = (std::mem::take(&mut lanes.local), std::mem::take(&mut lanes.peer));
        drop(lanes);
        drop(dropped);
    }
}

/// A cheap clonable handle to the store thread and the flusher.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: Arc<Submitter>,
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
        let shared = store.shared.clone();
        let queue = Arc::new(Queue::default());
        let (flushes, flush_rx) = sync_channel(FLUSH_QUEUE);
        let stop = StopOnExit(queue.clone());
        std::thread::Builder::new()
            .name("dingo-store".into())
            .spawn(move || {
                // `stop` goes with this closure, however it ends.
                while let Some(job) = stop.0.pop() {
                    job(&store);
                }
            })
            .ok();
        std::thread::Builder::new()
            .name("dingo-flush".into())
            .spawn(move || flush_loop(shared, flush_rx))
            .ok();
        Self { jobs: Arc::new(Submitter(queue)), flushes }
    }

    /// Runs `f` on the store thread as local work. Jobs run one at a time, so a job's
    /// read-modify-write is atomic with respect to other jobs; each lane runs in order.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        self.call_in(Lane::Local, f).await
    }

    /// Runs `f` on the store thread, queued in `lane`.
    pub async fn call_in<R: Send + 'static>(
        &self,
        lane: Lane,
        f: impl FnOnce(&Store) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |s: &Store| {
            let _ = tx.send(f(s));
        });
        push_waiting(job, |job| self.jobs.0.try_push(lane, job)).await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Waits until every write applied before this call is durable (group-committed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        push_waiting(tx, |tx| self.flushes.try_send(tx)).await?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Io(sled::Error::Unsupported(e))),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// Queues `item` with `try_push`, waiting for room without blocking the runtime thread.
async fn push_waiting<T>(
    mut item: T,
    try_push: impl Fn(T) -> Result<(), TrySendError<T>>,
) -> Result<(), StoreError> {
    loop {
        match try_push(item) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                item = back;
                tokio::time::sleep(FULL_QUEUE_RETRY).await;
            }
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
    }
}

fn flush_loop(shared: Arc<Shared>, rx: Receiver<oneshot::Sender<Result<(), String>>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let result = shared.flush().map_err(|e| e.to_string());
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, Table};
    use dingo_crypto::at_rest::StorageKey;
    use dingo_crypto::Secret32;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, StorageKey::new(Secret32::from_bytes([1; 32]))).expect("open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handle_runs_jobs_and_group_commits() {
        let dir = tempfile::tempdir().expect("tmp");
        let handle = StoreHandle::spawn(open(dir.path()));
        let mut tasks = Vec::new();
        for i in 0..100u32 {
            let h = handle.clone();
            let lane = if i % 2 == 0 { Lane::Local } else { Lane::Peer };
            tasks.push(tokio::spawn(async move {
                h.call_in(lane, move |s| {
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

    fn queued_jobs(handle: &StoreHandle) -> usize {
        let lanes = handle.jobs.0.lock();
        lanes.local.len() + lanes.peer.len()
    }

    /// Queues `jobs` (lane, label) one after another while the store thread is held in a job
    /// of its own, then lets it go; the labels in the order the jobs ran.
    async fn run_order<T: Send + Clone + 'static>(jobs: impl IntoIterator<Item = (Lane, T)>) -> Vec<T> {
        let dir = tempfile::tempdir().expect("tmp");
        let handle = StoreHandle::spawn(open(dir.path()));
        let (release, held) = sync_channel::<()>(1);
        let (started, running) = oneshot::channel();
        let h = handle.clone();
        tokio::spawn(async move {
            h.call(move |_| {
                let _ = started.send(());
                let _ = held.recv();
            })
            .await
        });
        running.await.expect("holding");
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut calls = Vec::new();
        for (lane, label) in jobs {
            let (h, order) = (handle.clone(), order.clone());
            calls.push(tokio::spawn(async move {
                h.call_in(lane, move |_| order.lock().expect("order").push(label)).await
            }));
            // Each call is queued before the next is made.
            let queued = calls.len();
            while queued_jobs(&handle) < queued {
                tokio::task::yield_now().await;
            }
        }
        release.send(()).expect("release");
        for c in calls {
            c.await.expect("task").expect("call");
        }
        let order = order.lock().expect("order").clone();
        order
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_jobs_pass_queued_peer_jobs_and_each_lane_keeps_its_order() {
        // Queued while the store thread is busy: three peer jobs, then two local ones.
        let jobs = [
            (Lane::Peer, "p1"),
            (Lane::Peer, "p2"),
            (Lane::Peer, "p3"),
            (Lane::Local, "l1"),
            (Lane::Local, "l2"),
        ];
        assert_eq!(run_order(jobs).await, ["l1", "l2", "p1", "p2", "p3"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_job_gets_its_turn_between_long_runs_of_local_ones() {
        let jobs =
            std::iter::once((Lane::Peer, usize::MAX)).chain((0..LOCAL_RUN * 2).map(|i| (Lane::Local, i)));
        let order = run_order(jobs).await;
        // The held job counted as a local run of one.
        assert_eq!(order.iter().position(|&i| i == usize::MAX), Some(LOCAL_RUN - 1), "{order:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_are_refused_once_the_store_thread_is_gone() {
        let dir = tempfile::tempdir().expect("tmp");
        let handle = StoreHandle::spawn(open(dir.path()));
        let died = handle.call(|_| -> u8 { std::panic::panic_any("job failed") }).await;
        assert!(matches!(died, Err(StoreError::Closed)), "{died:?}");
        let after = handle.call(|_| 1).await;
        assert!(matches!(after, Err(StoreError::Closed)), "{after:?}");
    }
}
