//! Pull slots shared fairly between tenants: a node pulls at most N images at
//! once, and when pulls wait, a freed slot goes to the namespaces in turn
//! (round robin), so one tenant's many or endless pulls cannot starve another's.
//! A pull holds a slot only while it talks to the runtime, never while it
//! backs off between attempts.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

#[derive(Debug)]
pub struct FairSlots {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Waiting pulls by namespace, each queue in arrival order.
    waiting: BTreeMap<String, VecDeque<oneshot::Sender<()>>>,
    /// The namespace served last: the next freed slot goes to the one after it.
    last: Option<String>,
}

/// A slot, given back when dropped.
#[derive(Debug)]
pub struct Slot<'a> {
    slots: &'a FairSlots,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.slots.give_back();
    }
}

/// A wait for a slot; if it is abandoned after the slot was handed to it, the
/// slot goes on to the next waiter instead of being lost.
struct Waiting<'a> {
    slots: &'a FairSlots,
    turn: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut turn) = self.turn.take() {
            turn.close();
            if turn.try_recv().is_ok() {
                self.slots.give_back();
            }
        }
    }
}

impl FairSlots {
    pub fn new(slots: usize) -> Self {
        Self {
            state: Mutex::new(State {
                free: slots.max(1),
                ..State::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Waits for a slot for a pull on behalf of `namespace`.
    pub async fn take(&self, namespace: &str) -> Slot<'_> {
        let turn = {
            let mut state = self.lock();
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                state.last = Some(namespace.to_owned());
                return Slot { slots: self };
            }
            let (handed, turn) = oneshot::channel();
            state.waiting.entry(namespace.to_owned()).or_default().push_back(handed);
            turn
        };
        let mut waiting = Waiting {
            slots: self,
            turn: Some(turn),
        };
        if let Some(turn) = waiting.turn.as_mut() {
            // The sender lives in `state` as long as `self`: an error cannot happen.
            let _ = turn.await;
        }
        waiting.turn = None;
        Slot { slots: self }
    }

    /// Hands a freed slot to the first waiter of the next namespace in turn.
    fn give_back(&self) {
        let mut state = self.lock();
        loop {
            let after = state.last.clone();
            let next = match &after {
                Some(last) => state
                    .waiting
                    .range::<String, _>((Bound::Excluded(last), Bound::Unbounded))
                    .next()
                    .or_else(|| state.waiting.iter().next()),
                None => state.waiting.iter().next(),
            }
            .map(|(namespace, _)| namespace.clone());
            let Some(namespace) = next else {
                state.free += 1;
                return;
            };
            let mut queue = state.waiting.get_mut(&namespace);
            let handed = queue.as_mut().and_then(|q| q.pop_front());
            if queue.is_some_and(|q| q.is_empty()) {
                state.waiting.remove(&namespace);
            }
            state.last = Some(namespace);
            // A waiter that gave up is skipped.
            if handed.is_some_and(|h| h.send(()).is_ok()) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn freed_slots_go_round_the_namespaces() {
        let slots = Arc::new(FairSlots::new(1));
        let held = slots.take("a").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        // Tenant a queues three pulls before tenant b queues one.
        for (namespace, n) in [("a", 1), ("a", 2), ("a", 3), ("b", 1)] {
            let (slots, order) = (slots.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let _slot = slots.take(namespace).await;
                if let Ok(mut order) = order.lock() {
                    order.push(format!("{namespace}{n}"));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for waiter in waiters {
            let _ = waiter.await;
        }
        let order = order.lock().map(|o| o.clone()).unwrap_or_default();
        assert_eq!(
            order,
            ["b1", "a1", "a2", "a3"],
            "b does not wait behind all of a's pulls"
        );
    }

    #[tokio::test]
    async fn an_abandoned_wait_loses_no_slot() {
        let slots = FairSlots::new(1);
        let held = slots.take("a").await;
        let abandoned = tokio::time::timeout(Duration::from_millis(10), slots.take("b")).await;
        assert!(abandoned.is_err());
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(100), slots.take("c")).await;
        assert!(again.is_ok(), "the slot came back");
    }
}
