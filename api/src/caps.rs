//! Caps a cluster admin may put on what a job asks of every node: the longest
//! pull attempt and the most retries. OpenKruise accepts any value, so both are
//! off unless set; set, a job above them is refused with the cap in the message.

use crate::defaults::{DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT_SECONDS};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// `--max-timeout-seconds`: the most `pullPolicy.timeoutSeconds` may be.
    pub max_timeout_seconds: Option<i32>,
    /// `--max-backoff-limit`: the most `pullPolicy.backoffLimit` may be.
    pub max_backoff_limit: Option<i32>,
}

impl Caps {
    pub const NONE: Caps = Caps {
        max_timeout_seconds: None,
        max_backoff_limit: None,
    };

    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

/// A cap below the value a job without the field gets would refuse jobs
/// that never mention it: refused when the flag is read.
pub fn parse_max_timeout_seconds(text: &str) -> Result<i32, String> {
    parse_cap(text, DEFAULT_TIMEOUT_SECONDS, "timeoutSeconds")
}

pub fn parse_max_backoff_limit(text: &str) -> Result<i32, String> {
    parse_cap(text, DEFAULT_BACKOFF_LIMIT, "backoffLimit")
}

fn parse_cap(text: &str, default: i32, field: &str) -> Result<i32, String> {
    let value: i32 = text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not a whole number; give one from {default} to {}",
            i32::MAX
        )
    })?;
    if value < default {
        return Err(format!(
            "{value} is below {default}, the {field} a job without one is given, so such jobs would be refused; give {default} or more"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_below_the_defaults_are_refused_by_name() {
        assert_eq!(parse_max_timeout_seconds("3600"), Ok(3600));
        assert_eq!(parse_max_backoff_limit("3"), Ok(3));
        let low = parse_max_timeout_seconds("300").err().unwrap_or_default();
        assert!(
            low.contains("300 is below 600") && low.contains("timeoutSeconds"),
            "{low}"
        );
        let junk = parse_max_backoff_limit("many").err().unwrap_or_default();
        assert!(junk.contains("\"many\"") && junk.contains("from 3"), "{junk}");
    }
}
