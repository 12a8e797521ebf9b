//! Every write the controller makes to the API server, counted once in the
//! kube client's stack (a tower layer) by verb, resource and result, instead
//! of by hand before each call: retries, conflicts and failures are counted
//! as what they were. Labels come from closed sets; a path outside them is
//! `other`.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::admin::Metrics;

/// The resources the controller writes, as label values.
const RESOURCES: [&str; 10] = [
    "imagepulljobs",
    "imagepulljobs/status",
    "imagelistpulljobs",
    "imagelistpulljobs/status",
    "nodeimages",
    "nodeimages/status",
    "secrets",
    "events",
    "leases",
    "configmaps",
];

/// `create`, `update`, `patch` or `delete` for a write; `None` for a read.
pub fn verb(method: &Method) -> Option<&'static str> {
    match *method {
        Method::POST => Some("create"),
        Method::PUT => Some("update"),
        Method::PATCH => Some("patch"),
        Method::DELETE => Some("delete"),
        _ => None,
    }
}

/// The resource (with `/status` for the status subresource) a request path
/// names: `/api/v1/namespaces/NS/secrets/NAME`, `/apis/GROUP/VERSION/nodeimages/NAME/status`.
pub fn resource(path: &str) -> &'static str {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
        _ => return "other",
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let named = match rest {
        [plural, _name, sub] => format!("{plural}/{sub}"),
        [plural, ..] => (*plural).to_owned(),
        [] => return "other",
    };
    RESOURCES.into_iter().find(|r| *r == named).unwrap_or("other")
}

/// `success`, `conflict`, `not_found`, `client_error` or `server_error`.
pub fn result(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "success",
        409 => "conflict",
        404 => "not_found",
        400..=499 => "client_error",
        _ => "server_error",
    }
}

/// The layer that counts writes into `Metrics`.
#[derive(Clone, Debug)]
pub struct CountWrites {
    pub metrics: Arc<Metrics>,
}

impl<S> Layer<S> for CountWrites {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let write = verb(request.method()).map(|verb| (verb, resource(request.uri().path())));
        let answer = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let answer = answer.await;
            if let Some((verb, resource)) = write {
                let outcome = match &answer {
                    Ok(response) => result(response.status()),
                    Err(_) => "unanswered",
                };
                metrics.wrote(verb, resource, outcome);
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_resource() {
        for (path, expected) in [
            ("/apis/apps.kruise.io/v1beta1/nodeimages/node-1", "nodeimages"),
            (
                "/apis/apps.kruise.io/v1beta1/nodeimages/node-1/status",
                "nodeimages/status",
            ),
            ("/apis/apps.kruise.io/v1beta1/nodeimages", "nodeimages"),
            (
                "/apis/apps.kruise.io/v1alpha1/namespaces/default/imagepulljobs/j/status",
                "imagepulljobs/status",
            ),
            (
                "/apis/apps.kruise.io/v1alpha1/namespaces/default/imagelistpulljobs/l",
                "imagelistpulljobs",
            ),
            ("/api/v1/namespaces/kruise-daemon-config/secrets", "secrets"),
            ("/api/v1/namespaces/kruise-daemon-config/secrets/s", "secrets"),
            ("/apis/events.k8s.io/v1/namespaces/default/events", "events"),
            (
                "/apis/coordination.k8s.io/v1/namespaces/prewarm-system/leases/prewarm-controller",
                "leases",
            ),
            ("/api/v1/namespaces/default", "other"),
            ("/api/v1/namespaces/default/pods/p/eviction", "other"),
            ("/version", "other"),
        ] {
            assert_eq!(resource(path), expected, "{path}");
        }
    }

    #[test]
    fn only_writes_are_counted_and_results_are_a_closed_set() {
        assert_eq!(verb(&Method::GET), None);
        assert_eq!(verb(&Method::PATCH), Some("patch"));
        assert_eq!(result(StatusCode::CREATED), "success");
        assert_eq!(result(StatusCode::CONFLICT), "conflict");
        assert_eq!(result(StatusCode::UNPROCESSABLE_ENTITY), "client_error");
        assert_eq!(result(StatusCode::SERVICE_UNAVAILABLE), "server_error");
    }
}
