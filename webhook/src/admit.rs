//! The HTTP side of admission: content type, body limit, `?timeout=`, room in
//! the shared budgets, the body read into one buffer, then the pure
//! [`review`](crate::review) function, then metrics and the (rate-limited)
//! decision log line. The request's deadline covers all of it.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::Operation;
use prewarm_api::admission::Policy;
use prewarm_api::gates::FeatureGates;

use crate::limits::{BUDGET_WAIT, Budget, Held, LimitsConfig, MAX_REQUEST_TIMEOUT, SMALL_BODY};
use crate::metrics::Metrics;
use crate::review::{self, Route};
use prewarm_api::duration;
use prewarm_process::log_limit::LogLimit;

/// The largest request body: two 3 MiB objects (object and oldObject) plus the envelope.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;
/// The API server's default webhook timeout, used when the request names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bodies without a Content-Length reserve budget in steps of this size.
const BODY_STEP: usize = SMALL_BODY;

/// What admission handlers share.
#[derive(Debug)]
pub struct AdmitState {
    /// Swapped whole when the live feature gates change; a request keeps the
    /// one it started with.
    policy: RwLock<Arc<Policy>>,
    pub metrics: Arc<Metrics>,
    pub budget: Budget,
    pub decision_log: LogLimit,
    /// Set at shutdown: responses then close their connection so that clients
    /// reconnect to a replica that is not going away.
    pub draining: AtomicBool,
}

impl AdmitState {
    pub fn new(policy: Policy, metrics: Arc<Metrics>, limits: &LimitsConfig) -> Self {
        Self {
            policy: RwLock::new(Arc::new(policy)),
            metrics,
            budget: Budget::new(limits),
            decision_log: LogLimit::new(limits.max_decision_lines_per_second),
            draining: AtomicBool::new(false),
        }
    }

    /// The policy requests are decided by now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(policy) => policy.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Applies new feature gates to the requests that start from now on.
    pub fn set_gates(&self, gates: FeatureGates) {
        let mut slot = match self.policy.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(Policy {
            gates,
            ..Policy::clone(&slot)
        });
    }
}

/// The admission service: the six OpenKruise paths, POST only. A plain match
/// on the path rather than a router, since it runs for every request.
#[derive(Clone, Debug)]
pub struct Admission {
    state: Arc<AdmitState>,
}

impl Admission {
    pub fn new(state: Arc<AdmitState>) -> Self {
        Self { state }
    }
}

pub type Answer = Response<Full<Bytes>>;

impl<B> hyper::service::Service<Request<B>> for Admission
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: fmt::Display + Send,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let Some(route) = Route::all().find(|route| route.path() == request.uri().path()) else {
                return Ok(empty(StatusCode::NOT_FOUND));
            };
            if request.method() != Method::POST {
                let mut answer = empty(StatusCode::METHOD_NOT_ALLOWED);
                answer
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                return Ok(answer);
            }
            let (parts, body) = request.into_parts();
            Ok(admit(&state, route, &parts.uri, &parts.headers, body).await)
        })
    }
}

fn empty(status: StatusCode) -> Answer {
    let mut answer = Response::new(Full::default());
    *answer.status_mut() = status;
    answer
}

async fn admit<B>(state: &AdmitState, route: Route, uri: &Uri, headers: &HeaderMap, body: B) -> Answer
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let started = Instant::now();
    state.metrics.in_flight.inc();
    let mut response = admit_inner(state, route, uri, headers, body, started).await;
    state.metrics.in_flight.dec();
    if state.draining.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn admit_inner<B>(
    state: &AdmitState,
    route: Route,
    uri: &Uri,
    headers: &HeaderMap,
    body: B,
    started: Instant,
) -> Answer
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json_body {
        return failure(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "Content-Type must be application/json",
        );
    }
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_length.is_some_and(|length| length > MAX_BODY_BYTES) {
        return too_large();
    }
    let timeout = match request_timeout(uri) {
        Ok(timeout) => timeout,
        Err(message) => return failure(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let wait = BUDGET_WAIT.min(timeout);
    let (bytes, _room) =
        match tokio::time::timeout_at(deadline, read_body(&state.budget, body, declared_length, wait)).await {
            Ok(Ok(read)) => read,
            Ok(Err(BodyError::TooLarge)) => return too_large(),
            Ok(Err(BodyError::Busy)) => return busy("too many request bytes in flight"),
            Ok(Err(BodyError::Read(e))) => {
                return failure(StatusCode::BAD_REQUEST, "BadRequest", &format!("reading the body: {e}"));
            }
            Err(_) => {
                return failure(
                    StatusCode::REQUEST_TIMEOUT,
                    "Timeout",
                    &format!("the body did not arrive within the request timeout ({timeout:?})"),
                );
            }
        };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let outcome = if bytes.len() <= SMALL_BODY {
        review::review(route, &bytes, &state.policy(), &now)
    } else {
        // Large bodies take long enough to decode and check that they would
        // stall the connections sharing this thread: a few at a time, elsewhere.
        let Some(_turn) = state.budget.large_review(wait).await else {
            return busy("too many large requests being reviewed");
        };
        let policy = state.policy();
        let review = tokio::task::spawn_blocking(move || review::review(route, &bytes, &policy, &now));
        match tokio::time::timeout_at(deadline, review).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => return failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "the review failed"),
            Err(_) => {
                return failure(
                    StatusCode::REQUEST_TIMEOUT,
                    "Timeout",
                    &format!("the review did not finish within the request timeout ({timeout:?})"),
                );
            }
        }
    };
    let elapsed = started.elapsed();
    let summary = &outcome.summary;
    state
        .metrics
        .observe(route, summary.operation, summary.verdict, summary.dry_run, elapsed);
    if let Some(unlogged) = state.decision_log.allow() {
        tracing::info!(
            uid = %summary.uid,
            kind = route.kind.name(),
            webhook = route.endpoint.as_str(),
            namespace = %summary.namespace,
            name = %summary.name,
            operation = summary.operation.map_or("unknown", Operation::as_str),
            result = summary.verdict.as_str(),
            dry_run = summary.dry_run,
            latency_us = elapsed.as_micros() as u64,
            unlogged,
            "admission decision"
        );
    }
    let status = StatusCode::from_u16(outcome.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, outcome.body)
}

/// The `?timeout=10s` the API server appends; the work must finish within it.
/// More than 30 s (which kube-apiserver never asks for) counts as 30 s.
fn request_timeout(uri: &Uri) -> Result<Duration, String> {
    let query = uri.query().unwrap_or_default();
    match query.split('&').find_map(|pair| pair.strip_prefix("timeout=")) {
        None => Ok(DEFAULT_TIMEOUT),
        Some(value) => duration::parse(value)
            .map(|timeout| timeout.min(MAX_REQUEST_TIMEOUT))
            .map_err(|e| format!("query parameter timeout: {e}")),
    }
}

#[derive(Debug)]
enum BodyError {
    TooLarge,
    Busy,
    Read(String),
}

/// Reads the body into one buffer, sized from Content-Length when there is one,
/// each chunk dropped once copied (a chunk pins the much larger read buffer it
/// came in). Budget is reserved before the bytes are held.
async fn read_body<B>(
    budget: &Budget,
    mut body: B,
    declared: Option<usize>,
    wait: Duration,
) -> Result<(Vec<u8>, Vec<Held>), BodyError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: fmt::Display,
{
    let mut room = Vec::new();
    let mut reserved = 0;
    let mut buffer = Vec::new();
    if let Some(length) = declared {
        room.push(budget.body(0, length, wait).await.ok_or(BodyError::Busy)?);
        reserved = length;
        buffer.reserve_exact(length);
    }
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.map_err(|e| BodyError::Read(e.to_string()))?.into_data() else {
            continue;
        };
        let needed = buffer.len() + chunk.len();
        if needed > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        if needed > reserved {
            let step = (needed - reserved).max(BODY_STEP);
            room.push(budget.body(reserved, step, wait).await.ok_or(BodyError::Busy)?);
            reserved += step;
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((buffer, room))
}

/// 429: the API server retries, and the webhook's memory stays bounded.
fn busy(why: &str) -> Answer {
    let mut response = failure(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        &format!("the webhook is busy ({why}); retry shortly"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn too_large() -> Answer {
    failure(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("the body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// A metav1.Status for requests that never became an AdmissionReview.
fn failure(status: StatusCode, reason: &str, message: &str) -> Answer {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": status.as_u16(),
    });
    json_response(status, body.to_string().into_bytes())
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_timeout_is_capped_at_thirty_seconds() {
        let timeout = |query: &str| request_timeout(&Uri::try_from(format!("/validate?{query}")).unwrap_or_default());
        assert_eq!(timeout("timeout=5s"), Ok(Duration::from_secs(5)));
        assert_eq!(timeout("timeout=10m"), Ok(MAX_REQUEST_TIMEOUT));
        assert_eq!(timeout("timeout=4294967295h"), Ok(MAX_REQUEST_TIMEOUT));
        assert_eq!(timeout("timeout=99999h"), Ok(MAX_REQUEST_TIMEOUT));
        assert_eq!(timeout("x=1"), Ok(DEFAULT_TIMEOUT));
    }
}
