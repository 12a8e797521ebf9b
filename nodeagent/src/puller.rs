//! One image pull with its policies: IfNotPresent asks the runtime for exactly
//! that tag or digest first; otherwise up to `backoffLimit + 1` attempts, each
//! bounded by `timeoutSeconds`, with capped exponential backoff between them,
//! all bounded by `activeDeadlineSeconds`. Each attempt tries the matching
//! credentials in order, anonymous only when none matched.

use std::time::Duration;

use prewarm_api::defaults::{DEFAULT_BACKOFF_LIMIT, DEFAULT_TIMEOUT_SECONDS};
use prewarm_api::job::SandboxConfig;
use prewarm_api::reference::ImageReference;
use tokio::time::Instant;

use crate::credentials::Credential;
use crate::cri::{Cri, CriError, Sandbox};
use crate::image_fs::{self, FsUsage, UsageLimit};
use crate::slots::FairSlots;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Always,
    IfNotPresent,
}

impl Policy {
    /// OpenKruise's rule: only exactly `IfNotPresent` skips present images.
    pub fn from_field(value: Option<&str>) -> Self {
        if value == Some("IfNotPresent") {
            Self::IfNotPresent
        } else {
            Self::Always
        }
    }
}

/// Delays between attempts: `initial`, doubling, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    pub fn delay(&self, failed_attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed_attempts.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[derive(Clone, Debug)]
pub struct PullSpec {
    pub reference: ImageReference,
    pub policy: Policy,
    pub timeout: Duration,
    pub backoff_limit: u32,
    pub active_deadline: Option<Duration>,
    pub sandbox: Option<Sandbox>,
    pub credentials: Vec<Credential>,
    /// Refuse to start when an image filesystem is fuller than this; `None`: no check.
    pub image_fs_limit: Option<UsageLimit>,
}

/// The pull fields of an ImagePullJob template or of a NodeImage tag, as written.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicyFields<'a> {
    pub image_pull_policy: Option<&'a str>,
    pub timeout_seconds: Option<i32>,
    pub backoff_limit: Option<i32>,
    pub active_deadline_seconds: Option<i64>,
    pub sandbox: Option<&'a SandboxConfig>,
}

impl PullSpec {
    /// The pull those fields ask for, with OpenKruise's defaults: a 600 s
    /// timeout and 3 retries when unset or not positive.
    pub fn new(reference: ImageReference, fields: &PolicyFields<'_>, credentials: Vec<Credential>) -> Self {
        let timeout = fields
            .timeout_seconds
            .and_then(|t| u64::try_from(t).ok())
            .filter(|t| *t > 0);
        let backoff_limit = fields.backoff_limit.and_then(|b| u32::try_from(b).ok());
        Self {
            reference,
            policy: Policy::from_field(fields.image_pull_policy),
            timeout: Duration::from_secs(timeout.unwrap_or(DEFAULT_TIMEOUT_SECONDS as u64)),
            backoff_limit: backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT as u32),
            active_deadline: fields
                .active_deadline_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            sandbox: fields.sandbox.map(|s| Sandbox {
                labels: s.labels.clone().unwrap_or_default().into_iter().collect(),
                annotations: s.annotations.clone().unwrap_or_default().into_iter().collect(),
            }),
            credentials,
            image_fs_limit: None,
        }
    }
}

/// How a pull ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// IfNotPresent and the runtime has it: nothing was pulled.
    Present {
        image_id: String,
    },
    Pulled {
        image_ref: String,
        attempts: u32,
    },
    Failed {
        error: CriError,
        attempts: u32,
    },
    /// Not started: an image filesystem is fuller than the limit (the reason says which).
    Refused {
        reason: String,
    },
}

/// Progress, for the terminal or the NodeImage status.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// How full the fullest image filesystem is, 0.0 to 1.0, before the pull.
    ImageFs {
        used_ratio: f64,
    },
    Attempt {
        number: u32,
        of: u32,
    },
    Retrying {
        after: Duration,
        error: CriError,
    },
}

/// Pulls `spec`, each attempt within a slot of `slots` (as `namespace`), given
/// back while it backs off so that other pulls go on meanwhile.
pub async fn pull(
    cri: &Cri,
    spec: &PullSpec,
    backoff: Backoff,
    slots: &FairSlots,
    namespace: &str,
    mut progress: impl FnMut(Progress),
) -> Outcome {
    let image = spec.reference.canonical();
    let started = Instant::now();
    // A deadline too far away to represent is no deadline at all.
    let deadline = spec.active_deadline.and_then(|d| started.checked_add(d));
    let remaining = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    if spec.policy == Policy::IfNotPresent
        && let Ok(Some(image_id)) = cri.image_id(&image, spec.timeout.min(Duration::from_secs(30))).await
    {
        return Outcome::Present { image_id };
    }
    if let Some(limit) = spec.image_fs_limit
        && let Err(reason) = room_for_images(cri, limit, &mut progress).await
    {
        return Outcome::Refused { reason };
    }
    let attempts = spec.backoff_limit + 1;
    let mut last_error = CriError::Other("no attempt was made".to_owned());
    for attempt in 1..=attempts {
        let timeout = remaining().map_or(spec.timeout, |r| r.min(spec.timeout));
        if timeout.is_zero() {
            return Outcome::Failed {
                error: deadline_error(spec, last_error),
                attempts: attempt - 1,
            };
        }
        let slot = slots.take(namespace).await;
        progress(Progress::Attempt {
            number: attempt,
            of: attempts,
        });
        let pulled = pull_once(cri, &image, spec, timeout).await;
        drop(slot);
        match pulled {
            Ok(image_ref) => {
                return Outcome::Pulled {
                    image_ref,
                    attempts: attempt,
                };
            }
            Err(error) => last_error = error,
        }
        if attempt == attempts {
            break;
        }
        let delay = backoff.delay(attempt);
        let delay = remaining().map_or(delay, |r| r.min(delay));
        progress(Progress::Retrying {
            after: delay,
            error: last_error.clone(),
        });
        tokio::time::sleep(delay).await;
    }
    let error = if remaining().is_some_and(|r| r.is_zero()) {
        deadline_error(spec, last_error)
    } else {
        last_error
    };
    Outcome::Failed { error, attempts }
}

/// Said once per process: every pull would repeat it.
static UNMEASURED_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the runtime's image filesystems have room under `limit`. One that
/// cannot be measured (the runtime does not say where, or the path is not
/// visible to this process) does not stop the pull: it is logged.
async fn room_for_images(cri: &Cri, limit: UsageLimit, progress: &mut impl FnMut(Progress)) -> Result<(), String> {
    let filesystems = match cri.image_filesystems(Duration::from_secs(10)).await {
        Ok(filesystems) => filesystems,
        Err(e) => {
            tracing::warn!(error = %e, "ImageFsInfo failed: the image filesystem's usage is not checked");
            return Ok(());
        }
    };
    let mut measured = Vec::new();
    for (mountpoint, image_bytes) in filesystems {
        match image_fs::capacity(std::path::Path::new(&mountpoint)) {
            Ok((capacity_bytes, available_bytes)) => measured.push(FsUsage {
                mountpoint,
                image_bytes,
                capacity_bytes,
                available_bytes,
            }),
            Err(e) => {
                if !UNMEASURED_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the image filesystem's usage is not checked: mount it into the agent at the same path");
                }
            }
        }
    }
    if let Some(fullest) = measured.iter().map(FsUsage::used_ratio).reduce(f64::max) {
        progress(Progress::ImageFs { used_ratio: fullest });
    }
    image_fs::verdict(&measured, limit)
}

fn deadline_error(spec: &PullSpec, last: CriError) -> CriError {
    let deadline = spec.active_deadline.unwrap_or_default();
    CriError::DeadlineExceeded(deadline).with_context(&last)
}

impl CriError {
    /// The deadline error, keeping the last runtime message for the user.
    fn with_context(self, last: &CriError) -> CriError {
        match self {
            CriError::DeadlineExceeded(d) => CriError::Other(format!(
                "activeDeadlineSeconds ({}s) exceeded; last error: {last}",
                d.as_secs()
            )),
            other => other,
        }
    }
}

impl PullSpec {
    /// The credentials each attempt tries, for messages: their sources, or anonymous.
    pub fn credentials_tried(&self) -> String {
        let mut sources: Vec<&str> = Vec::new();
        for credential in &self.credentials {
            if !sources.contains(&credential.source.as_str()) {
                sources.push(&credential.source);
            }
        }
        if sources.is_empty() {
            "anonymously (no pull secret or credential provider matched)".to_owned()
        } else {
            format!("with {}", sources.join(", then "))
        }
    }
}

/// One attempt: each matching credential in turn, anonymous when none matched,
/// all within the attempt's one timeout.
async fn pull_once(cri: &Cri, image: &str, spec: &PullSpec, timeout: Duration) -> Result<String, CriError> {
    if spec.credentials.is_empty() {
        return cri.pull(image, None, spec.sandbox.as_ref(), timeout).await;
    }
    let deadline = Instant::now().checked_add(timeout);
    let mut last = None;
    for credential in &spec.credentials {
        let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Err(CriError::DeadlineExceeded(timeout));
        }
        match cri.pull(image, Some(credential), spec.sandbox.as_ref(), left).await {
            Ok(image_ref) => return Ok(image_ref),
            // The attempt's timeout is what ran out, whatever was left for this credential.
            Err(CriError::DeadlineExceeded(_)) => return Err(CriError::DeadlineExceeded(timeout)),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| CriError::Other("no credentials".to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (1..=7).map(|a| backoff.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.delay(200), Duration::from_secs(30));
    }

    #[test]
    fn only_if_not_present_skips() {
        assert_eq!(Policy::from_field(Some("IfNotPresent")), Policy::IfNotPresent);
        for other in [None, Some(""), Some("Always"), Some("Never")] {
            assert_eq!(Policy::from_field(other), Policy::Always);
        }
    }
}
