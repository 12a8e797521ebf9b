//! Go durations (`10s`, `1m30s`, `1.5h`, `21.6µs`, `0`), as in `?timeout=10s`,
//! flags and a credential plugin's `cacheDuration`. Parsing is kube's
//! `Duration` (Go's `time.ParseDuration` grammar); a guard first keeps it from
//! overflowing on hostile input, which it would answer with a panic.

use std::time::Duration;

/// Longest text accepted: far more than any real duration needs.
const MAX_LEN: usize = 64;
/// Most integer digits in one component: 10^12 hours still fits a `Duration`
/// even when every component of a `MAX_LEN` text is that large.
const MAX_INTEGER_DIGITS: usize = 12;

/// Parses a non-negative Go duration.
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| {
        format!(
            "invalid duration {text:?}: {why}; use numbers with units (ns, us, µs, ms, s, m, h), such as \"10s\", \"1m30s\" or \"1.5h\""
        )
    };
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    if text.len() > MAX_LEN {
        return Err(invalid(&format!("it is longer than {MAX_LEN} characters")));
    }
    let too_long = text
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter_map(|number| number.split('.').next())
        .any(|integer| integer.len() > MAX_INTEGER_DIGITS);
    if too_long {
        return Err(invalid(&format!("a number has more than {MAX_INTEGER_DIGITS} digits")));
    }
    let parsed: kube::core::Duration = text
        .parse()
        .map_err(|e: kube::core::duration::ParseError| invalid(&e.to_string()))?;
    if parsed.is_negative() && Duration::from(parsed) != Duration::ZERO {
        return Err(invalid("it is negative"));
    }
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("1h0m0.5s"), Ok(Duration::from_millis(3_600_500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("21.6µs"), Ok(Duration::from_nanos(21_600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "s",
            "10x",
            "-1s",
            "99999999999999s",
            "1.2.3s",
            &"1s".repeat(40),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("such as \"10s\""), "{bad:?}: {error}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(text in "[-+0-9.eE]{0,20}(ns|us|µs|ms|s|m|h)?[0-9.]{0,20}[hms]?") {
            let _ = parse(&text);
        }
    }
}
