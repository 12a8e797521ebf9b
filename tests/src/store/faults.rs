//! Faults a test asks for: latency on every request, and failing writes.

use crate::error::ApiError;

use super::{Inner, Store};

impl Store {
    /// Delays every request by `latency` from now on.
    pub fn inject_latency(&self, latency: std::time::Duration) {
        if let Ok(mut current) = self.latency.lock() {
            *current = latency;
        }
    }

    pub fn latency(&self) -> std::time::Duration {
        self.latency.lock().map(|l| *l).unwrap_or_default()
    }

    /// Fails the next `count` writes with `code` (500 or 409).
    pub fn inject_write_faults(&self, count: usize, code: u16) {
        self.lock().faults = Some((count, code));
    }

    /// Fails one write in every `n` with a 500 from now on (`None` stops it).
    pub fn inject_write_fault_every(&self, n: Option<u64>) {
        self.lock().fault_every = n.filter(|n| *n > 0).map(|n| (n, 0));
    }

    pub(super) fn take_fault(inner: &mut Inner) -> Result<(), ApiError> {
        if let Some((every, seen)) = &mut inner.fault_every {
            *seen += 1;
            if *seen % *every == 0 {
                return Err(ApiError::internal("injected fault"));
            }
        }
        match &mut inner.faults {
            Some((left, code)) if *left > 0 => {
                *left -= 1;
                Err(match *code {
                    409 => ApiError::conflict("objects", "", "injected"),
                    _ => ApiError::internal("injected fault"),
                })
            }
            _ => Ok(()),
        }
    }
}
