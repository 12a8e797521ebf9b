//! Feature gates an admin changes without a restart: one ConfigMap (by name)
//! whose key `featureGates` has the flag's syntax, watched by every replica.
//! The flag's value holds while the ConfigMap (or its key) is absent; a value
//! that does not parse keeps the last good gates and is reported, so a typo
//! never turns a gate on or off by accident and never stops a replica.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use prewarm_api::gates::{FeatureGates, Gate};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// The ConfigMap key that holds the gates.
pub const KEY: &str = "featureGates";

/// How long a start waits for the ConfigMap's first read before going on
/// with the flag's gates (an API server that does not answer must not keep
/// a replica from serving).
pub const FIRST_READ: Duration = Duration::from_secs(10);

/// `NAMESPACE/NAME` of the ConfigMap, from a flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
}

impl ConfigMapRef {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => Ok(Self {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }),
            _ => Err(format!(
                "{text:?} is not NAMESPACE/NAME of a ConfigMap (e.g. prewarm-system/prewarm-feature-gates)"
            )),
        }
    }
}

impl std::fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The gates in force and what the ConfigMap said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveGates {
    pub gates: FeatureGates,
    /// Whether they come from the ConfigMap (else from the flag).
    pub from_config_map: bool,
    /// The ConfigMap's value and why it is not used, while it cannot be.
    pub refused: Option<Refused>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub value: String,
    pub error: String,
}

impl LiveGates {
    /// Before the ConfigMap is read: the flag's gates.
    pub fn from_flag(flag: FeatureGates) -> Self {
        Self {
            gates: flag,
            from_config_map: false,
            refused: None,
        }
    }

    /// What the gates become when the ConfigMap holds `value` (`None`: the
    /// ConfigMap or its key is absent).
    pub fn next(&self, flag: FeatureGates, value: Option<&str>) -> Self {
        let Some(value) = value else {
            return Self::from_flag(flag);
        };
        match FeatureGates::parse(value) {
            Ok(gates) => Self {
                gates,
                from_config_map: true,
                refused: None,
            },
            Err(error) => Self {
                refused: Some(Refused {
                    value: value.to_owned(),
                    error: error.to_string(),
                }),
                ..self.clone()
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    gate: &'static str,
}

/// `prewarm_feature_gate_enabled{gate}` and
/// `prewarm_feature_gates_config_refused`, the same in every component.
#[derive(Clone, Debug, Default)]
pub struct GateMetrics {
    enabled: Family<GateLabels, Gauge>,
    refused: Gauge,
}

impl GateMetrics {
    /// Registers both under `prewarm_` in `registry` (a root without prefix).
    pub fn register(&self, registry: &mut Registry) {
        let shared = registry.sub_registry_with_prefix("prewarm");
        shared.register(
            "feature_gate_enabled",
            "1 when the feature gate is on in this replica",
            self.enabled.clone(),
        );
        shared.register(
            "feature_gates_config_refused",
            "1 while the feature gate ConfigMap holds a value that does not parse (the last good gates stay)",
            self.refused.clone(),
        );
    }

    pub fn observe(&self, live: &LiveGates) {
        for gate in Gate::ALL {
            let on = i64::from(live.gates.enabled(gate));
            self.enabled.get_or_create(&GateLabels { gate: gate.name() }).set(on);
        }
        self.refused.set(i64::from(live.refused.is_some()));
    }
}

/// Watches `config_map` and publishes the gates in force; `flag` is the value
/// while it is absent. Returns once the first read is done (or
/// [`FIRST_READ`] has passed), with the task that keeps watching.
pub async fn watch(
    client: Client,
    config_map: ConfigMapRef,
    flag: FeatureGates,
) -> (watch::Receiver<LiveGates>, tokio::task::JoinHandle<()>) {
    let (sender, receiver) = watch::channel(LiveGates::from_flag(flag));
    let (first_read, read) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(follow(client, config_map.clone(), flag, sender, first_read));
    if tokio::time::timeout(FIRST_READ, read).await.is_err() {
        tracing::warn!(config_map = %config_map, gates = %flag, "feature gate ConfigMap not read yet: using the flag's gates until it is");
    }
    (receiver, task)
}

async fn follow(
    client: Client,
    config_map: ConfigMapRef,
    flag: FeatureGates,
    sender: watch::Sender<LiveGates>,
    first_read: tokio::sync::oneshot::Sender<()>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &config_map.namespace);
    let mut states = watcher::watch_object(api, &config_map.name).default_backoff().boxed();
    let mut first_read = Some(first_read);
    while let Some(state) = states.next().await {
        let value = match state {
            Ok(object) => object.as_ref().and_then(value_of),
            Err(error) => {
                tracing::warn!(config_map = %config_map, %error, "watching the feature gate ConfigMap; retrying");
                continue;
            }
        };
        sender.send_if_modified(|current| {
            let next = current.next(flag, value.as_deref());
            let changed = next != *current;
            if changed {
                report(&config_map, current, &next);
                *current = next;
            }
            changed
        });
        if let Some(done) = first_read.take() {
            let _ = done.send(());
        }
    }
}

fn value_of(object: &ConfigMap) -> Option<String> {
    object.data.as_ref().and_then(|data| data.get(KEY)).cloned()
}

/// The log line of a change: old and new gates, or why a value is refused.
fn report(config_map: &ConfigMapRef, old: &LiveGates, new: &LiveGates) {
    if let Some(refused) = &new.refused {
        if old.refused.as_ref() != Some(refused) {
            tracing::error!(
                config_map = %config_map, value = %refused.value, error = %refused.error, kept = %new.gates,
                "feature gate ConfigMap refused: keeping the last good gates"
            );
        }
    } else if old.gates != new.gates {
        let source = if new.from_config_map {
            "ConfigMap"
        } else {
            "flag (no ConfigMap)"
        };
        tracing::info!(config_map = %config_map, old = %old.gates, new = %new.gates, source, "feature gates changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prewarm_api::gates::Gate;

    fn gates(text: &str) -> FeatureGates {
        FeatureGates::parse(text).unwrap_or_default()
    }

    #[test]
    fn the_config_map_overrides_the_flag_and_its_absence_restores_it() {
        let flag = gates("ImagePullJobGate=false");
        let start = LiveGates::from_flag(flag);
        let on = start.next(flag, Some("ImagePullJobGate=true"));
        assert!(on.gates.enabled(Gate::ImagePullJobGate) && on.from_config_map && on.refused.is_none());
        let gone = on.next(flag, None);
        assert_eq!(gone, LiveGates::from_flag(flag));
    }

    #[test]
    fn a_bad_value_keeps_the_last_good_gates_and_says_why() {
        let flag = gates("");
        let on = LiveGates::from_flag(flag).next(flag, Some("ImagePullJobGate=true"));
        let typo = on.next(flag, Some("ImagePullJobGate=ture"));
        assert_eq!(typo.gates, on.gates, "a typo turns nothing off");
        let refused = typo.refused.clone().unwrap();
        assert_eq!(refused.value, "ImagePullJobGate=ture");
        assert!(refused.error.contains("ImagePullJobGate"), "{}", refused.error);
        let unknown = LiveGates::from_flag(flag).next(flag, Some("ImagePullJobGates=true"));
        assert!(
            !unknown.gates.enabled(Gate::ImagePullJobGate),
            "a misspelt name turns nothing on"
        );
        assert!(unknown.refused.is_some());
        let fixed = typo.next(flag, Some("ImagePullJobGate=false"));
        assert!(fixed.refused.is_none() && !fixed.gates.enabled(Gate::ImagePullJobGate));
    }

    #[test]
    fn references_name_a_namespace_and_a_config_map() {
        let parsed = ConfigMapRef::parse("prewarm-system/prewarm-feature-gates").unwrap();
        assert_eq!(parsed.to_string(), "prewarm-system/prewarm-feature-gates");
        for bad in ["prewarm-feature-gates", "/x", "a/", "a/b/c"] {
            assert!(
                ConfigMapRef::parse(bad).unwrap_err().contains("NAMESPACE/NAME"),
                "{bad}"
            );
        }
    }
}
