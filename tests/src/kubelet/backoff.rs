//! kubelet's crash-loop back-off (`doBackOff` in
//! pkg/kubelet/kuberuntime/kuberuntime_manager.go over client-go's
//! `flowcontrol.Backoff`, with `backOffPeriod` 10 s and `MaxContainerBackOff`
//! 5 min from pkg/kubelet/kubelet.go;
//! <https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-restarts>):
//! the first exit restarts at once and starts a 10 s back-off; each later
//! exit waits the current back-off, counted from when the container finished,
//! then doubles it up to 5 minutes. An exit more than twice the maximum after
//! the last restart starts over.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub initial: Duration,
    pub max: Duration,
}

impl Limits {
    /// kubelet's.
    pub const KUBELET: Self = Self {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(300),
    };
}

/// The back-off of one container of one Pod.
#[derive(Clone, Debug)]
pub struct Backoff {
    limits: Limits,
    /// The current back-off and when a restart last went through.
    entry: Option<(Duration, Instant)>,
}

impl Backoff {
    pub fn new(limits: Limits) -> Self {
        Self { limits, entry: None }
    }

    fn expired(&self, finished: Instant, last_update: Instant) -> bool {
        finished.saturating_duration_since(last_update) > self.limits.max * 2
    }

    /// `IsInBackOffSince`: the back-off still to wait out, at `now`, for a
    /// container that finished at `finished` (`None`: restart it now).
    pub fn waiting(&self, finished: Instant, now: Instant) -> Option<Duration> {
        let (backoff, last_update) = self.entry?;
        if self.expired(finished, last_update) || now.saturating_duration_since(finished) >= backoff {
            return None;
        }
        Some(backoff)
    }

    /// `Next`: a restart goes through at `now`.
    pub fn restarted(&mut self, finished: Instant, now: Instant) {
        let backoff = match self.entry {
            Some((backoff, last_update)) if !self.expired(finished, last_update) => (backoff * 2).min(self.limits.max),
            _ => self.limits.initial,
        };
        self.entry = Some((backoff, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container that exits as soon as it starts: the waits between its
    /// restarts are kubelet's sequence.
    #[test]
    fn at_once_then_ten_seconds_doubling_to_five_minutes() {
        let mut backoff = Backoff::new(Limits::KUBELET);
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..8 {
            let finished = now;
            let wait = backoff.waiting(finished, now).unwrap_or_default();
            waits.push(wait.as_secs());
            now += wait;
            assert_eq!(backoff.waiting(finished, now), None, "the wait is over");
            backoff.restarted(finished, now);
        }
        assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn starts_over_after_ten_quiet_minutes() {
        let mut backoff = Backoff::new(Limits::KUBELET);
        let start = Instant::now();
        backoff.restarted(start, start);
        let soon = start + Duration::from_secs(5);
        assert_eq!(backoff.waiting(soon, soon), Some(Duration::from_secs(10)));
        let later = start + Duration::from_secs(601);
        assert_eq!(backoff.waiting(later, later), None);
        backoff.restarted(later, later);
        let again = later + Duration::from_secs(1);
        assert_eq!(backoff.waiting(again, again), Some(Duration::from_secs(10)));
    }
}
