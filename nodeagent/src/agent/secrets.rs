//! Pull secrets as kruise-daemon reads them: only from one namespace (the
//! controller copies every job's secrets there, so the agent needs no
//! cluster-wide `get secrets`), fetched on demand and cached for a few minutes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Secret;
use kube::api::GetParams;
use kube::{Api, Client};
use prewarm_api::v1beta1::ImageSpec;
use tokio::time::Instant;

use crate::credentials::Keyring;

/// kruise-daemon caches a found secret for 5 to 10 minutes.
const CACHE_FOR: Duration = Duration::from_secs(300);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefusal {
    #[error(
        "pull secret {namespace}/{name} is not read: this node agent reads pull secrets only from namespace {allowed} (--secret-namespace), where prewarm's controller copies them"
    )]
    OtherNamespace {
        namespace: String,
        name: String,
        allowed: String,
    },
}

/// The controller's annotation on a copy: `namespace/name` of the Secret it copies.
const SOURCE_KEY: &str = "imagepulljobs.kruise.io/source-key";

/// Whether a tag owned by `owners` may be pulled with `secret`: credentials are
/// a tenant's, not an image's, so a copy serves only tags one of whose owners
/// lives in the namespace it was copied from (only the controller writes that
/// annotation, in a namespace tenants cannot write). A Secret that is no copy
/// belongs to the agent's namespace. A tag without owners (added by an admin
/// who may write NodeImages) uses every Secret of its image, as in OpenKruise.
pub fn usable_by(secret: &serde_json::Value, agent_namespace: &str, owners: &[ObjectReference]) -> bool {
    if owners.is_empty() {
        return true;
    }
    let source_namespace = secret
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(SOURCE_KEY))
        .and_then(serde_json::Value::as_str)
        .map_or(agent_namespace, |key| {
            key.split_once('/').map_or(key, |(namespace, _)| namespace)
        });
    owners.iter().any(|o| o.namespace.as_deref() == Some(source_namespace))
}

pub struct Secrets {
    client: Client,
    namespace: String,
    cache: Mutex<HashMap<String, (Instant, Option<serde_json::Value>)>>,
    fetching: tokio::sync::Mutex<()>,
    /// Refused references, each reported once per `CACHE_FOR`.
    refused: Mutex<HashMap<String, Instant>>,
}

impl Secrets {
    pub fn new(client: Client, namespace: String) -> Self {
        Self {
            client,
            namespace,
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// The credentials of the Secrets an image names that a tag owned by
    /// `owners` may use, and the references refused (each reported once per
    /// cache period). Secrets that cannot be read are logged and skipped, as
    /// kruise-daemon does.
    pub async fn keyring(&self, image: &ImageSpec, owners: &[ObjectReference]) -> (Keyring, Vec<SecretRefusal>) {
        let mut keyring = Keyring::default();
        let mut refused = Vec::new();
        for reference in image.pull_secrets.iter().flatten() {
            let (Some(namespace), Some(name)) = (&reference.namespace, &reference.name) else {
                continue;
            };
            if *namespace != self.namespace {
                if self.first_refusal(namespace, name) {
                    refused.push(SecretRefusal::OtherNamespace {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        allowed: self.namespace.clone(),
                    });
                }
                continue;
            }
            let Some(secret) = self.get(name).await else {
                continue;
            };
            if !usable_by(&secret, &self.namespace, owners) {
                tracing::debug!(secret = %name, "not a copy of the tag's owners' secrets: not used for it");
                continue;
            }
            if let Err(e) = keyring.add_secret(&secret) {
                tracing::warn!(error = %e, "ignoring a pull secret");
            }
        }
        (keyring, refused)
    }

    fn first_refusal(&self, namespace: &str, name: &str) -> bool {
        let Ok(mut refused) = self.refused.lock() else {
            return true;
        };
        let now = Instant::now();
        refused.retain(|_, until| *until > now);
        refused.insert(format!("{namespace}/{name}"), now + CACHE_FOR).is_none()
    }

    fn cached(&self, name: &str) -> Option<Option<serde_json::Value>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(name)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, secret)| secret.clone())
    }

    async fn get(&self, name: &str) -> Option<serde_json::Value> {
        if let Some(secret) = self.cached(name) {
            return secret;
        }
        // One read at a time: pulls of several tags of one image start together
        // and should share one GET, not race to make their own.
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(secret) = self.cached(name) {
            return secret;
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        // resourceVersion=0: served from the API server's cache, as kruise-daemon asks.
        let secret = match api.get_with(name, &GetParams::any()).await.map(serde_json::to_value) {
            Ok(Ok(secret)) => Some(secret),
            Ok(Err(e)) => {
                tracing::warn!(secret = %name, error = %e, "unreadable pull secret");
                None
            }
            Err(e) => {
                tracing::warn!(secret = %name, namespace = %self.namespace, error = %e, "cannot read pull secret");
                return None;
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (expires, _)| *expires > Instant::now());
            cache.insert(name.to_owned(), (Instant::now() + CACHE_FOR, secret.clone()));
        }
        secret
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner(namespace: &str) -> ObjectReference {
        ObjectReference {
            namespace: Some(namespace.to_owned()),
            name: Some("job".to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn a_copy_serves_only_tags_of_its_sources_namespace() {
        let copy_of = |source: &str| {
            json!({"metadata": {"namespace": "kruise-daemon-config",
            "annotations": {SOURCE_KEY: source}}})
        };
        let team_a = copy_of("team-a/regcred");
        assert!(usable_by(&team_a, "kruise-daemon-config", &[owner("team-a")]));
        assert!(
            !usable_by(&team_a, "kruise-daemon-config", &[owner("team-b")]),
            "another tenant's credentials"
        );
        assert!(usable_by(
            &team_a,
            "kruise-daemon-config",
            &[owner("team-b"), owner("team-a")]
        ));
        assert!(
            usable_by(&team_a, "kruise-daemon-config", &[]),
            "an admin's ownerless tag"
        );
        let own = json!({"metadata": {"namespace": "kruise-daemon-config"}});
        assert!(usable_by(
            &own,
            "kruise-daemon-config",
            &[owner("kruise-daemon-config")]
        ));
        assert!(!usable_by(&own, "kruise-daemon-config", &[owner("team-a")]));
    }
}
