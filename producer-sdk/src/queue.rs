//! The bounded queue between the application's threads and the background
//! task: the only code that runs on the caller's thread per event.
//!
//! A push is one uncontended mutex acquisition and a `Vec` push. The
//! background task never holds the lock longer than a pointer swap: it takes
//! the whole vector at once and cuts batches outside the lock. Capacity
//! counts every event accepted and not yet handed to a request (queued *or*
//! taken but not yet batched), so memory is bounded by the queue limits plus
//! the requests in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::error::Error;
use crate::event::Event;

/// What a caller does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Wait up to `timeout` for room, then drop the event (counted). From
    /// async code use `Client::log_async`, which waits without blocking the
    /// executor thread.
    Block {
        /// Longest wait for room.
        timeout: Duration,
    },
    /// Drop the event at once (counted). Never slows the application down.
    Drop,
}

/// Queue limits and batching thresholds that decide when to wake the
/// background task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) capacity: usize,
    pub(crate) max_bytes: usize,
    pub(crate) batch_events: usize,
    pub(crate) batch_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<State>,
    /// Wakes callers blocked in `push` when room is made.
    room: Condvar,
    /// Wakes async callers waiting in `push_async`.
    room_async: Notify,
    /// Wakes the background task.
    pub(crate) work: Notify,
    limits: Limits,
    /// Events refused (queue full, block timeout, closed).
    pub(crate) dropped: AtomicU64,
}

#[derive(Debug)]
struct State {
    events: Vec<Event>,
    /// Accepted and not yet cut into a request: `events` plus what the
    /// background task has taken but not batched yet.
    held: usize,
    held_bytes: usize,
    /// Events accepted since the start: the sequence number of the next one.
    pushed: u64,
    /// When `events` last went from empty to non-empty.
    oldest: Option<Instant>,
    /// The background task sleeps with nothing to do and must be woken by
    /// the next push.
    idle: bool,
    closed: bool,
    sync_waiters: usize,
    async_waiters: usize,
}

/// What the background task takes from the queue in one go.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) events: Vec<Event>,
    pub(crate) oldest: Option<Instant>,
}

impl Queue {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State {
                events: Vec::new(),
                held: 0,
                held_bytes: 0,
                pushed: 0,
                oldest: None,
                idle: false,
                closed: false,
                sync_waiters: 0,
                async_waiters: 0,
            }),
            room: Condvar::new(),
            room_async: Notify::new(),
            work: Notify::new(),
            limits,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state torn (every
        // critical section is a handful of field updates), so poisoning is
        // ignored rather than spread to every thread that logs.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_room(&self, state: &State, size: usize) -> bool {
        state.held < self.limits.capacity
            && (state.held == 0 || state.held_bytes + size <= self.limits.max_bytes)
    }

    fn full_error(&self) -> Error {
        Error::QueueFull {
            capacity: self.limits.capacity,
            max_bytes: self.limits.max_bytes,
        }
    }

    fn refuse(&self, err: Error) -> Result<(), Error> {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Err(err)
    }

    /// Adds an event, applying `policy` when full. Blocks the calling thread
    /// for at most the `Block` timeout.
    pub(crate) fn push(&self, event: Event, policy: OverflowPolicy) -> Result<(), Error> {
        let size = event.approx_size();
        let mut state = self.lock();
        let mut deadline = None;
        loop {
            if state.closed {
                drop(state);
                return self.refuse(Error::Closed);
            }
            if self.has_room(&state, size) {
                break;
            }
            let OverflowPolicy::Block { timeout } = policy else {
                drop(state);
                return self.refuse(self.full_error());
            };
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                return self.refuse(Error::BlockTimeout { waited: timeout });
            }
            state.sync_waiters += 1;
            state = self
                .room
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.sync_waiters -= 1;
        }
        self.accept(state, event, size);
        Ok(())
    }

    /// Adds an event, applying `policy` when full; waits asynchronously.
    pub(crate) async fn push_async(
        &self,
        event: Event,
        policy: OverflowPolicy,
    ) -> Result<(), Error> {
        let size = event.approx_size();
        let mut deadline = None;
        loop {
            let room = self.room_async.notified();
            tokio::pin!(room);
            {
                let mut state = self.lock();
                if state.closed {
                    drop(state);
                    return self.refuse(Error::Closed);
                }
                if self.has_room(&state, size) {
                    self.accept(state, event, size);
                    return Ok(());
                }
                let OverflowPolicy::Block { timeout } = policy else {
                    drop(state);
                    return self.refuse(self.full_error());
                };
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                if Instant::now() >= deadline {
                    drop(state);
                    return self.refuse(Error::BlockTimeout { waited: timeout });
                }
                // Registered before the lock is released, so a release in
                // between is not missed.
                room.as_mut().enable();
                state.async_waiters += 1;
            }
            let deadline = deadline.unwrap_or_else(Instant::now);
            let _ = tokio::time::timeout_at(deadline.into(), room).await;
            self.lock().async_waiters -= 1;
        }
    }

    fn accept(&self, mut state: MutexGuard<'_, State>, event: Event, size: usize) {
        if state.events.is_empty() {
            state.oldest = Some(Instant::now());
        }
        state.events.push(event);
        state.held += 1;
        state.held_bytes += size;
        state.pushed += 1;
        // Wake the background task only when it has to act: it is idle (the
        // linger clock must start), or a full batch just became available.
        let l = &self.limits;
        let wake = state.idle
            || state.held == l.batch_events
            || (state.held_bytes >= l.batch_bytes && state.held_bytes - size < l.batch_bytes);
        state.idle = false;
        drop(state);
        if wake {
            self.work.notify_one();
        }
    }

    /// Takes every queued event, leaving `spare` (emptied) in its place.
    pub(crate) fn take(&self, mut spare: Vec<Event>) -> Taken {
        spare.clear();
        let mut state = self.lock();
        std::mem::swap(&mut state.events, &mut spare);
        Taken {
            events: spare,
            oldest: state.oldest.take(),
        }
    }

    /// Marks the background task idle unless events are waiting; returns
    /// whether it may sleep.
    pub(crate) fn try_idle(&self) -> bool {
        let mut state = self.lock();
        if state.events.is_empty() {
            state.idle = true;
            true
        } else {
            false
        }
    }

    /// `count` events (`bytes` by estimate) left the queue's accounting
    /// because they were cut into a request or failed before it.
    pub(crate) fn release(&self, count: usize, bytes: usize) {
        let mut state = self.lock();
        state.held -= count;
        state.held_bytes -= bytes;
        let (sync, async_) = (state.sync_waiters, state.async_waiters);
        drop(state);
        if sync > 0 {
            self.room.notify_all();
        }
        if async_ > 0 {
            self.room_async.notify_waiters();
        }
    }

    /// The sequence number the next accepted event will get, i.e. how many
    /// were accepted so far.
    pub(crate) fn pushed(&self) -> u64 {
        self.lock().pushed
    }

    /// Accepted and not yet cut into a request.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.lock().held
    }

    /// Refuses every later push and wakes everyone waiting.
    pub(crate) fn close(&self) -> u64 {
        let mut state = self.lock();
        state.closed = true;
        let pushed = state.pushed;
        drop(state);
        self.room.notify_all();
        self.room_async.notify_waiters();
        self.work.notify_one();
        pushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;

    fn limits(capacity: usize) -> Limits {
        Limits {
            capacity,
            max_bytes: 1 << 20,
            batch_events: 4,
            batch_bytes: 1 << 20,
        }
    }

    fn event() -> Event {
        Event::new(Severity::Info, "x")
    }

    #[test]
    fn drop_policy_refuses_and_counts_when_full() {
        let q = Queue::new(limits(2));
        assert!(q.push(event(), OverflowPolicy::Drop).is_ok());
        assert!(q.push(event(), OverflowPolicy::Drop).is_ok());
        let err = q.push(event(), OverflowPolicy::Drop).expect_err("full");
        assert!(matches!(err, Error::QueueFull { capacity: 2, .. }), "{err}");
        assert_eq!(q.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(q.held(), 2);
    }

    #[test]
    fn block_policy_times_out_and_counts() {
        let q = Queue::new(limits(1));
        q.push(event(), OverflowPolicy::Drop).expect("room");
        let started = Instant::now();
        let policy = OverflowPolicy::Block {
            timeout: Duration::from_millis(50),
        };
        let err = q.push(event(), policy).expect_err("still full");
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(matches!(err, Error::BlockTimeout { .. }), "{err}");
        assert_eq!(q.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn block_policy_proceeds_when_room_is_made() {
        let q = std::sync::Arc::new(Queue::new(limits(1)));
        q.push(event(), OverflowPolicy::Drop).expect("room");
        let q2 = q.clone();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let taken = q2.take(Vec::new());
            let bytes = taken.events.iter().map(Event::approx_size).sum();
            q2.release(taken.events.len(), bytes);
        });
        let policy = OverflowPolicy::Block {
            timeout: Duration::from_secs(10),
        };
        q.push(event(), policy).expect("room was made");
        releaser.join().expect("join");
        assert_eq!(q.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(q.pushed(), 2);
    }

    #[tokio::test]
    async fn async_block_waits_for_room() {
        let q = std::sync::Arc::new(Queue::new(limits(1)));
        q.push(event(), OverflowPolicy::Drop).expect("room");
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            q2.push_async(
                event(),
                OverflowPolicy::Block {
                    timeout: Duration::from_secs(10),
                },
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let taken = q.take(Vec::new());
        q.release(taken.events.len(), taken.events[0].approx_size());
        waiter.await.expect("join").expect("room was made");
        let err = q
            .push_async(
                event(),
                OverflowPolicy::Block {
                    timeout: Duration::from_millis(20),
                },
            )
            .await
            .expect_err("full");
        assert!(matches!(err, Error::BlockTimeout { .. }));
    }

    #[test]
    fn byte_limit_bounds_the_queue() {
        let q = Queue::new(Limits {
            max_bytes: 200,
            ..limits(1000)
        });
        let mut accepted = 0;
        while q.push(event(), OverflowPolicy::Drop).is_ok() {
            accepted += 1;
        }
        assert!(accepted >= 1 && accepted * event().approx_size() <= 200);
    }

    #[test]
    fn closed_queue_refuses() {
        let q = Queue::new(limits(10));
        q.push(event(), OverflowPolicy::Drop).expect("room");
        assert_eq!(q.close(), 1);
        let err = q.push(event(), OverflowPolicy::Drop).expect_err("closed");
        assert_eq!(err, Error::Closed);
        assert_eq!(q.take(Vec::new()).events.len(), 1);
    }

    #[test]
    fn take_swaps_and_keeps_accounting_until_release() {
        let q = Queue::new(limits(10));
        for _ in 0..3 {
            q.push(event(), OverflowPolicy::Drop).expect("room");
        }
        let taken = q.take(Vec::with_capacity(8));
        assert_eq!(taken.events.len(), 3);
        assert!(taken.oldest.is_some());
        assert_eq!(q.held(), 3, "taken but not yet batched still counts");
        q.release(3, taken.events.iter().map(Event::approx_size).sum());
        assert_eq!(q.held(), 0);
        assert!(q.try_idle());
    }
}
