//! The pull policy a job writes on the NodeImage tags it creates (OpenKruise's
//! formulas, so that tags live as long as they do there).

use prewarm_api::defaults::{DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT_SECONDS};
use prewarm_api::job::COMPLETION_NEVER;
use prewarm_api::node_image::ImageTagPullPolicy;
use prewarm_api::v1beta1::ImagePullJobSpec;

/// A Never job's tags are pulled again about once a day: their TTL is a day,
/// spread by up to ten minutes either way so that nodes do not all pull at once.
const NEVER_TTL_SECONDS: i64 = 86_400;
const NEVER_TTL_SPREAD_SECONDS: i64 = 600;
/// A Never job's tag gets at least half an hour for all its attempts.
const NEVER_MIN_DEADLINE_SECONDS: i64 = 1_800;
/// An Always job's tags outlive the job by up to five more minutes, spread.
const ALWAYS_TTL_SPREAD_SECONDS: i64 = 300;

/// `--default-ttlseconds-for-always-nodeimage`: the most it may be (31 days).
pub const MAX_DEFAULT_TTL_FOR_ALWAYS: i64 = 2_678_400;

pub fn is_never(spec: &ImagePullJobSpec) -> bool {
    spec.completion_policy.as_ref().and_then(|c| c.type_.as_deref()) == Some(COMPLETION_NEVER)
}

/// The policy of a new tag. `jitter` in `[0, 1)` spreads the TTL; the caller
/// draws it at random, tests pass fixed values.
pub fn tag_pull_policy(spec: &ImagePullJobSpec, default_ttl_for_always: i64, jitter: f64) -> ImageTagPullPolicy {
    let pull = spec.pull_policy.as_ref();
    let timeout = pull.and_then(|p| p.timeout_seconds).unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let backoff = pull.and_then(|p| p.backoff_limit).unwrap_or(DEFAULT_BACKOFF_LIMIT);
    let completion = spec.completion_policy.as_ref();
    let jitter = jitter.clamp(0.0, 0.999_999);
    let (ttl, deadline) = if is_never(spec) {
        let spread = (jitter * (2 * NEVER_TTL_SPREAD_SECONDS) as f64) as i64 - NEVER_TTL_SPREAD_SECONDS;
        (
            NEVER_TTL_SECONDS + spread,
            Some(NEVER_MIN_DEADLINE_SECONDS.max(i64::from(timeout))),
        )
    } else {
        let deadline = completion.and_then(|c| c.active_deadline_seconds);
        let base = completion
            .and_then(|c| c.ttl_seconds_after_finished)
            .map(i64::from)
            .or(deadline)
            .unwrap_or(i64::from(timeout) * i64::from(backoff));
        let spread = (jitter * ALWAYS_TTL_SPREAD_SECONDS as f64) as i64;
        (
            base.saturating_add(default_ttl_for_always).saturating_add(spread),
            deadline,
        )
    };
    ImageTagPullPolicy {
        timeout_seconds: Some(timeout),
        backoff_limit: Some(backoff),
        ttl_seconds_after_finished: Some(i32::try_from(ttl.max(0)).unwrap_or(i32::MAX)),
        active_deadline_seconds: deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::job::{CompletionPolicy, PullPolicy};

    fn spec(completion: CompletionPolicy, pull: Option<PullPolicy>) -> ImagePullJobSpec {
        ImagePullJobSpec {
            image: "nginx".into(),
            pull_secrets: None,
            selector: None,
            pod_selector: None,
            parallelism: None,
            pull_policy: pull,
            completion_policy: Some(completion),
            sandbox_config: None,
            image_pull_policy: None,
        }
    }

    fn never() -> CompletionPolicy {
        CompletionPolicy {
            type_: Some("Never".into()),
            ..Default::default()
        }
    }

    #[test]
    fn never_jobs_repull_daily_with_spread_and_a_half_hour_floor() {
        let low = tag_pull_policy(&spec(never(), None), 300, 0.0);
        let high = tag_pull_policy(&spec(never(), None), 300, 0.999);
        assert_eq!(low.ttl_seconds_after_finished, Some(85_800));
        assert!((86_990..87_000).contains(&high.ttl_seconds_after_finished.unwrap_or_default()));
        assert_eq!(low.active_deadline_seconds, Some(1800), "unset timeout → 1800");
        for (timeout, deadline) in [(1799, 1800), (7200, 7200)] {
            let pull = PullPolicy {
                timeout_seconds: Some(timeout),
                backoff_limit: None,
            };
            let policy = tag_pull_policy(&spec(never(), Some(pull)), 300, 0.5);
            assert_eq!(policy.active_deadline_seconds, Some(deadline));
        }
    }

    #[test]
    fn always_jobs_ttl_base_is_ttl_then_deadline_then_timeout_times_backoff() {
        let with = |ttl, deadline| CompletionPolicy {
            type_: Some("Always".into()),
            active_deadline_seconds: deadline,
            ttl_seconds_after_finished: ttl,
        };
        let ttl_of = |c, jitter| tag_pull_policy(&spec(c, None), 300, jitter).ttl_seconds_after_finished;
        assert_eq!(ttl_of(with(Some(20), Some(50)), 0.0), Some(320));
        assert_eq!(ttl_of(with(None, Some(50)), 0.0), Some(350));
        assert_eq!(ttl_of(with(None, None), 0.0), Some(600 * 3 + 300));
        assert_eq!(ttl_of(with(None, None), 0.5), Some(600 * 3 + 300 + 150));
        let policy = tag_pull_policy(&spec(with(None, Some(50)), None), 0, 0.0);
        assert_eq!(
            (
                policy.active_deadline_seconds,
                policy.timeout_seconds,
                policy.backoff_limit
            ),
            (Some(50), Some(600), Some(3))
        );
    }
}
