//! Rate-limited logging: a client that sends a million requests (or resets a
//! million HTTP/2 streams) must not make the webhook write a million lines.
//! Up to `per_second` lines pass each second; the first line after a quiet
//! spell says how many were left out. Metrics keep the full counts.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct LogLimit {
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    used: u32,
    dropped: u64,
}

impl LogLimit {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new(Window {
                started: Instant::now(),
                used: 0,
                dropped: 0,
            }),
        }
    }

    /// `Some(lines left out before this one)` when this line may be written.
    pub fn allow(&self) -> Option<u64> {
        let Ok(mut window) = self.window.lock() else {
            return Some(0);
        };
        if window.started.elapsed().as_secs() >= 1 {
            window.started = Instant::now();
            window.used = 0;
        }
        if window.used < self.per_second {
            window.used += 1;
            Some(std::mem::take(&mut window.dropped))
        } else {
            window.dropped += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_rate_are_counted_not_written() {
        let limit = LogLimit::new(3);
        let allowed: Vec<Option<u64>> = (0..5).map(|_| limit.allow()).collect();
        assert_eq!(allowed, [Some(0), Some(0), Some(0), None, None]);
        if let Ok(mut window) = limit.window.lock() {
            window.started -= std::time::Duration::from_secs(1);
        }
        assert_eq!(limit.allow(), Some(2), "the next line says how many were left out");
    }
}
