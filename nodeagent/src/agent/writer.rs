//! Writes the status the agent computed, replacing the stored one (a status
//! PUT with the last seen resourceVersion), so entries of images that left the
//! spec go too. Nothing is written when the stored status already says the
//! same, except a periodic refresh; a NodeImage that is gone is not written;
//! other failures are retried with exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::PostParams;
use prewarm_api::v1beta1::NodeImage;

use super::{AgentConfig, Shared, status};

/// kruise-daemon rewrites an unchanged status every 12 to 13 hours.
const REFRESH: Duration = Duration::from_secs(12 * 3600);
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(50);

pub(super) async fn write_status(api: Api<NodeImage>, shared: Arc<Shared>, config: AgentConfig) {
    let mut retry = RETRY_FIRST;
    loop {
        let refresh_due = tokio::time::timeout(REFRESH, shared.changed.notified()).await.is_err();
        tokio::time::sleep(config.status_interval).await;
        let (body, resource_version) = {
            let state = shared.lock();
            let Some(node_image) = &state.node_image else { continue };
            let computed = status::status(&node_image.spec, &state.tags, node_image.status.as_ref());
            if node_image.status.as_ref() == Some(&computed) && !refresh_due {
                continue;
            }
            let resource_version = node_image.metadata.resource_version.clone();
            // Only the status counts in a status PUT; the API server keeps the rest.
            let mut body = NodeImage::new(&config.node_name, Default::default());
            body.metadata.resource_version = resource_version.clone();
            body.status = Some(computed);
            (body, resource_version)
        };
        match api
            .replace_status(&config.node_name, &PostParams::default(), &body)
            .await
        {
            Ok(written) => {
                retry = RETRY_FIRST;
                // Our write is the stored status now, unless the watch brought a newer object meanwhile.
                let mut state = shared.lock();
                if let Some(seen) = state.node_image.as_mut()
                    && seen.metadata.resource_version == resource_version
                {
                    *seen = written;
                }
            }
            // Gone: nothing to report on until the watch brings it back.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            // Changed since we read it: the watch brings the new object, and a new round.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "writing the NodeImage status");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
                shared.changed.notify_one();
            }
        }
    }
}
