//! A work queue in the manner of client-go's: each key is queued at most once,
//! at its earliest due time; a key is never handed to two workers at once, and
//! a key added while it is being worked on is handed out again afterwards.
//!
//! kube-runtime's `Controller` only reconciles objects present in its own
//! store, and the NodeImage lifecycle must act on names whose NodeImage does
//! not exist yet (creation) or whose Node is gone (deletion): hence this queue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug)]
struct State<K> {
    due: BTreeMap<K, Instant>,
    order: BTreeSet<(Instant, K)>,
    running: BTreeSet<K>,
    failures: HashMap<K, u32>,
}

impl<K: Ord> State<K> {
    /// When an idle worker must look again: the earliest key that is not due
    /// yet, or due and not being worked on (a key due while it runs waits
    /// for its `done`).
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.order
            .iter()
            .find(|(at, k)| *at > now || !self.running.contains(k))
            .map(|(at, _)| *at)
    }
}

#[derive(Debug)]
pub struct Queue<K> {
    state: Mutex<State<K>>,
    changed: Notify,
}

impl<K: Ord + Clone + std::hash::Hash> Default for Queue<K> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                due: BTreeMap::new(),
                order: BTreeSet::new(),
                running: BTreeSet::new(),
                failures: HashMap::new(),
            }),
            changed: Notify::new(),
        }
    }
}

/// The furthest a key is ever queued ahead. Delays come from API data (a job's
/// `activeDeadlineSeconds` may be 2^63 - 1 seconds); a key due later is simply
/// looked at again after a day, when its delay is computed afresh.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Retries of a failing key wait 100 ms, doubling up to this: a write the API
/// server refused while a webhook was down is tried again within seconds of its return.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

impl<K: Ord + Clone + std::hash::Hash> Queue<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Queues `key` to be handled after `delay` (at most [`MAX_DELAY`]), unless it
    /// is due sooner already.
    pub fn add_after(&self, key: K, delay: Duration) {
        let now = Instant::now();
        let at = now + delay.min(MAX_DELAY);
        let mut state = self.lock();
        if let Some(current) = state.due.get(&key).copied() {
            if current <= at {
                return;
            }
            state.order.remove(&(current, key.clone()));
        }
        // One worker is woken, and only when it has something to do now or
        // must sleep less: idle workers wait for the earliest due key, and a
        // key due later is seen when they wake for that one. Waking every
        // worker on every add (an event each) cost more than the work.
        let wake = at <= now || state.next_wake(now).is_none_or(|first| at < first);
        state.due.insert(key.clone(), at);
        state.order.insert((at, key));
        drop(state);
        if wake {
            self.changed.notify_one();
        }
    }

    pub fn add(&self, key: K) {
        self.add_after(key, Duration::ZERO);
    }

    /// Takes every waiting key out, whatever its due time: what a test sees queued.
    #[cfg(test)]
    pub fn take_all(&self) -> Vec<K> {
        let mut state = self.lock();
        state.order.clear();
        std::mem::take(&mut state.due).into_keys().collect()
    }

    /// Keys waiting (not counting those being worked on).
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next due key nobody is working on; waits for one.
    pub async fn next(&self) -> K {
        loop {
            let notified = self.changed.notified();
            let wake_at = {
                let mut state = self.lock();
                let now = Instant::now();
                let ready = state
                    .order
                    .iter()
                    .take_while(|(at, _)| *at <= now)
                    .find(|(_, k)| !state.running.contains(k))
                    .cloned();
                if let Some((at, key)) = ready {
                    state.order.remove(&(at, key.clone()));
                    state.due.remove(&key);
                    state.running.insert(key.clone());
                    // More due keys: another worker, so that a burst falling
                    // due at once is worked on by all of them.
                    let more = state
                        .order
                        .iter()
                        .take_while(|(at, _)| *at <= now)
                        .any(|(_, k)| !state.running.contains(k));
                    drop(state);
                    if more {
                        self.changed.notify_one();
                    }
                    return key;
                }
                state.next_wake(now)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at.max(Instant::now() + Duration::from_millis(1))) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Ends the work on `key`: on success it is queued again after
    /// `requeue_after` if given; on failure after a growing delay.
    pub fn done(&self, key: &K, outcome: Outcome) {
        let retry = {
            let mut state = self.lock();
            state.running.remove(key);
            match outcome {
                Outcome::Success(requeue) => {
                    state.failures.remove(key);
                    requeue
                }
                Outcome::Failure => {
                    let failures = state.failures.entry(key.clone()).or_insert(0);
                    *failures = failures.saturating_add(1);
                    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
                    Some((FIRST_RETRY_DELAY * factor).min(MAX_RETRY_DELAY))
                }
            }
        };
        if let Some(delay) = retry {
            self.add_after(key.clone(), delay);
        }
        // A key added while it ran is due and was passed over: one worker
        // takes it (usually this one, asking for its next key).
        self.changed.notify_one();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success(Option<Duration>),
    Failure,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keys_are_deduplicated_ordered_by_due_time_and_never_handed_out_twice() {
        let queue: Queue<&str> = Queue::default();
        queue.add_after("late", Duration::from_secs(5));
        queue.add("a");
        queue.add("a");
        queue.add_after("late", Duration::from_secs(1));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next().await, "a");
        queue.add("a");
        // "a" is being worked on: the next key handed out is "late", after its second.
        assert_eq!(queue.next().await, "late");
        queue.done(&"a", Outcome::Success(None));
        assert_eq!(queue.next().await, "a", "re-added while running: handed out after done");
        queue.done(&"a", Outcome::Failure);
        let before = Instant::now();
        assert_eq!(queue.next().await, "a");
        assert!(Instant::now() - before >= FIRST_RETRY_DELAY);
        queue.done(&"a", Outcome::Failure);
        let before = Instant::now();
        assert_eq!(queue.next().await, "a");
        assert!(Instant::now() - before >= FIRST_RETRY_DELAY * 2, "the delay grows");
        queue.done(&"a", Outcome::Success(Some(Duration::from_secs(3))));
        let before = Instant::now();
        assert_eq!(queue.next().await, "a");
        assert!(Instant::now() - before >= Duration::from_secs(3));
    }

    /// Workers asleep until a later key, then a burst falling due together:
    /// each add wakes at most one worker, and each worker that takes a key
    /// wakes the next, so all of them work on the burst when it falls due.
    #[tokio::test(start_paused = true)]
    #[allow(clippy::panic)]
    async fn a_burst_falling_due_at_once_reaches_every_waiting_worker() {
        let queue = std::sync::Arc::new(Queue::<u32>::default());
        let start = Instant::now();
        queue.add_after(99, Duration::from_secs(60));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.next().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        for key in 0..3 {
            queue.add_after(key, Duration::from_secs(1));
        }
        let mut taken = Vec::new();
        for worker in workers {
            taken.push(worker.await.unwrap_or_else(|e| panic!("{e}")));
        }
        taken.sort_unstable();
        assert_eq!(taken, [0, 1, 2], "no key is done, so each went to its own worker");
        assert!(
            Instant::now() - start < Duration::from_secs(60),
            "handed out when due, not when the workers' own timers ran out"
        );
    }

    /// A key queued while another, due, is being worked on: an idle worker
    /// takes it when it falls due, not when the running key is done.
    #[tokio::test(start_paused = true)]
    #[allow(clippy::panic)]
    async fn a_key_behind_a_running_one_is_handed_out_when_due() {
        let queue = std::sync::Arc::new(Queue::<u32>::default());
        queue.add(1);
        assert_eq!(queue.next().await, 1, "taken, and kept running");
        queue.add(1);
        let idle = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.next().await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let start = Instant::now();
        queue.add_after(2, Duration::from_secs(1));
        let taken = tokio::time::timeout(Duration::from_secs(30), idle)
            .await
            .unwrap_or_else(|_| panic!("key 2 never handed out while key 1 runs"));
        assert_eq!(taken.unwrap_or_else(|e| panic!("{e}")), 2);
        assert!(Instant::now() - start < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_from_api_data_is_capped_and_never_panics() {
        let queue: Queue<&str> = Queue::default();
        // activeDeadlineSeconds 2^63 - 1, as a requeue: far past what an Instant can hold.
        let huge = Duration::from_secs(i64::MAX.unsigned_abs());
        queue.add_after("far", huge);
        queue.add_after("max", Duration::MAX);
        queue.add("now");
        assert_eq!(queue.next().await, "now");
        queue.done(&"now", Outcome::Success(Some(huge)));
        let before = Instant::now();
        let mut next = vec![queue.next().await, queue.next().await, queue.next().await];
        next.sort_unstable();
        assert_eq!(next, ["far", "max", "now"]);
        assert_eq!(Instant::now() - before, MAX_DELAY);
    }
}
