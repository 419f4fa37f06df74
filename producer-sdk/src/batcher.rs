//! The background task: takes events from the queue, cuts batches by
//! count, bytes and linger time, runs up to `max_in_flight` deliveries at
//! once, answers `flush()` and carries out `shutdown()`.
//!
//! Every accepted event has a sequence number (its position in the queue).
//! Batches are cut in sequence order, so "everything before N is settled"
//! is the lowest start of a batch still in flight — the watermark flushes
//! wait on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::error::Error;
use crate::event::Event;
use crate::queue::Queue;
use crate::send::{DeliveryFailure, Sender};

/// Requests from the application's handles.
#[derive(Debug)]
pub(crate) enum Command {
    /// Answer once every event with a sequence number below `upto` is settled.
    Flush {
        upto: u64,
        reply: oneshot::Sender<()>,
    },
    /// Deliver everything (the queue is already closed), giving up at
    /// `deadline`; answer when done.
    Shutdown {
        deadline: Instant,
        reply: Option<oneshot::Sender<()>>,
    },
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    pub(crate) max_events: usize,
    pub(crate) max_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: usize,
    /// Used when every handle is dropped without `shutdown()`.
    pub(crate) shutdown_timeout: Duration,
}

pub(crate) struct Batcher {
    queue: Arc<Queue>,
    sender: Arc<Sender>,
    batching: Batching,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    /// Taken from the queue, not yet cut into a batch.
    staged: VecDeque<Event>,
    staged_bytes: usize,
    staged_oldest: Option<Instant>,
    spare: Vec<Event>,
    /// Sequence number of the next event to be cut into a batch.
    cut: u64,
    /// Batches in flight: start sequence → event count.
    in_flight: BTreeMap<u64, usize>,
    task_starts: HashMap<tokio::task::Id, u64>,
    tasks: JoinSet<()>,
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// Highest sequence a flush or shutdown asked to send without lingering.
    urgent_upto: u64,
    shutdown: Option<Instant>,
    /// The shutdown deadline passed and deliveries were told to give up.
    abandoned: bool,
    shutdown_replies: Vec<oneshot::Sender<()>>,
    give_up: watch::Sender<bool>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("staged", &self.staged.len())
            .field("cut", &self.cut)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    pub(crate) fn new(
        queue: Arc<Queue>,
        sender: Arc<Sender>,
        batching: Batching,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Self {
            queue,
            sender,
            batching,
            commands,
            commands_open: true,
            staged: VecDeque::new(),
            staged_bytes: 0,
            staged_oldest: None,
            spare: Vec::new(),
            cut: 0,
            in_flight: BTreeMap::new(),
            task_starts: HashMap::new(),
            tasks: JoinSet::new(),
            flushes: Vec::new(),
            urgent_upto: 0,
            shutdown: None,
            abandoned: false,
            shutdown_replies: Vec::new(),
            give_up: watch::channel(false).0,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            self.absorb();
            let now = Instant::now();
            if self.shutdown.is_some_and(|deadline| now >= deadline) {
                self.abandon();
            }
            while self.tasks.len() < self.batching.max_in_flight && self.batch_ready(now) {
                self.dispatch();
            }
            self.answer_flushes();
            if self.shutdown.is_some() && self.staged.is_empty() && self.tasks.is_empty() {
                // `absorb` ran after the queue was closed, so nothing is left.
                break;
            }
            self.wait(now).await;
        }
        for reply in self.shutdown_replies.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Moves everything queued into `staged`.
    fn absorb(&mut self) {
        let taken = self.queue.take(std::mem::take(&mut self.spare));
        let mut events = taken.events;
        if !events.is_empty() {
            self.staged_oldest = self.staged_oldest.or(taken.oldest);
            self.staged_bytes += events.iter().map(Event::approx_size).sum::<usize>();
            self.staged.extend(events.drain(..));
        }
        self.spare = events;
    }

    fn batch_ready(&self, now: Instant) -> bool {
        if self.staged.is_empty() {
            return false;
        }
        self.staged.len() >= self.batching.max_events
            || self.staged_bytes >= self.batching.max_bytes
            || self.cut < self.urgent_upto
            || self.shutdown.is_some()
            || self
                .staged_oldest
                .is_some_and(|t| now >= t + self.batching.linger)
    }

    /// Cuts one batch from the front of `staged` and starts delivering it.
    fn dispatch(&mut self) {
        let mut bytes = 0;
        let mut count = 0;
        for event in &self.staged {
            let size = event.approx_size();
            if count > 0
                && (count >= self.batching.max_events || bytes + size > self.batching.max_bytes)
            {
                break;
            }
            bytes += size;
            count += 1;
        }
        let batch: Vec<Event> = self.staged.drain(..count).collect();
        self.staged_bytes -= bytes;
        // What stays keeps the old linger clock: it may be as old as the
        // batch just cut, and linger is the longest an event should wait.
        if self.staged.is_empty() {
            self.staged_oldest = None;
        }
        self.queue.release(count, bytes);
        let start = self.cut;
        self.cut += count as u64;
        self.in_flight.insert(start, count);
        let sender = self.sender.clone();
        let give_up = self.give_up.subscribe();
        let handle = self
            .tasks
            .spawn(async move { sender.deliver(batch, give_up).await });
        self.task_starts.insert(handle.id(), start);
    }

    /// Everything below this sequence number is settled.
    fn watermark(&self) -> u64 {
        self.in_flight.keys().next().copied().unwrap_or(self.cut)
    }

    fn answer_flushes(&mut self) {
        let mark = self.watermark();
        let (done, waiting): (Vec<_>, Vec<_>) =
            self.flushes.drain(..).partition(|(upto, _)| *upto <= mark);
        self.flushes = waiting;
        for (_, reply) in done {
            let _ = reply.send(());
        }
    }

    fn settle(&mut self, id: tokio::task::Id, panicked: bool) {
        if let Some(start) = self.task_starts.remove(&id)
            && let Some(count) = self.in_flight.remove(&start)
            && panicked
        {
            // Cannot happen short of a bug; still, every event must be
            // accounted for.
            self.sender
                .counters
                .failed
                .fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    /// The shutdown deadline passed: in-flight deliveries stop retrying and
    /// whatever was never sent is reported failed.
    fn abandon(&mut self) {
        self.abandoned = true;
        let _ = self.give_up.send(true);
        if self.staged.is_empty() {
            return;
        }
        let count = self.staged.len();
        self.staged.clear();
        self.queue.release(count, self.staged_bytes);
        self.staged_bytes = 0;
        self.staged_oldest = None;
        self.cut += count as u64;
        self.sender
            .counters
            .failed
            .fetch_add(count as u64, Ordering::Relaxed);
        let failure = DeliveryFailure {
            events: count as u64,
            error: Error::ShutdownTimeout,
        };
        *self
            .sender
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Error::ShutdownTimeout);
        if let Some(hook) = &self.sender.on_failure {
            hook(&failure);
        }
    }

    fn command(&mut self, command: Option<Command>) {
        match command {
            Some(Command::Flush { upto, reply }) => {
                self.urgent_upto = self.urgent_upto.max(upto);
                self.flushes.push((upto, reply));
            }
            Some(Command::Shutdown { deadline, reply }) => {
                self.begin_shutdown(deadline);
                self.shutdown_replies.extend(reply);
            }
            None => {
                // Every handle is gone without calling shutdown(): deliver
                // what is left as shutdown() would have.
                self.commands_open = false;
                self.queue.close();
                self.begin_shutdown(Instant::now() + self.batching.shutdown_timeout);
            }
        }
    }

    fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown = Some(self.shutdown.map_or(deadline, |d| d.min(deadline)));
    }

    async fn wait(&mut self, now: Instant) {
        let can_send = self.tasks.len() < self.batching.max_in_flight;
        let linger_until = match self.staged_oldest {
            Some(t) if can_send => Some(t + self.batching.linger),
            _ => None,
        };
        if self.staged.is_empty() && !self.queue.try_idle() {
            // Events arrived since `absorb`; go round again.
            return;
        }
        let deadline = self.shutdown.filter(|_| !self.abandoned);
        let wake_at = [linger_until, deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(now));
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(result) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                match result {
                    Ok((id, ())) => self.settle(id, false),
                    Err(err) => self.settle(err.id(), true),
                }
            }
            command = self.commands.recv(), if self.commands_open => self.command(command),
            () = self.queue.work.notified() => {}
            () = sleep => {}
        }
    }
}
