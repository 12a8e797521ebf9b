//! `kubectl prewarm workload`: the pre-warming job for a workload's pod
//! template. Its images (containers and init containers, with `--image`
//! overrides), its pull secrets, and its nodes: where its pods run now (a pod
//! selector), or every node its pods could be scheduled to, as the scheduler
//! filters them (`nodeSelector`, required node affinity, taints against
//! tolerations, cordoned nodes), per
//! <https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/>
//! and <https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/>.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use prewarm_api::job::{COMPLETION_ALWAYS, CompletionPolicy, NodeSelector, PodSelector};
use prewarm_api::v1beta1::{ImageListPullJob, ImageListPullJobSpec, ImagePullJob, ImagePullJobSpec};
use serde_json::Value;

/// Annotation on each job this makes: the workload it pre-warms, as `kind/name`.
pub const WORKLOAD_ANNOTATION: &str = "prewarm.io/workload";

/// A workload, as read from the cluster or a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Lower case, as kubectl names it: `deployment`, `statefulset`, ...
    pub kind: &'static str,
    pub name: String,
    pub namespace: Option<String>,
    pub template: PodTemplateSpec,
    /// The workload's pod selector; `None` for a CronJob, whose pods carry its template's labels.
    pub selector: Option<LabelSelector>,
}

/// The kinds accepted, with kubectl's short names.
pub const KINDS: [(&str, &[&str]); 5] = [
    ("deployment", &["deployments", "deploy"]),
    ("statefulset", &["statefulsets", "sts"]),
    ("daemonset", &["daemonsets", "ds"]),
    ("job", &["jobs"]),
    ("cronjob", &["cronjobs", "cj"]),
];

/// `deploy/web` → (`deployment`, `web`).
pub fn parse_reference(reference: &str) -> Result<(&'static str, String), String> {
    let accepted = || KINDS.map(|(kind, _)| format!("{kind}/NAME")).join(", ");
    let Some((kind, name)) = reference.split_once('/') else {
        return Err(format!(
            "{reference:?} names no kind: write KIND/NAME, one of {}",
            accepted()
        ));
    };
    let lower = kind.to_ascii_lowercase();
    let kind = lower.split('.').next().unwrap_or_default();
    let Some((canonical, _)) = KINDS.iter().find(|(k, aliases)| *k == kind || aliases.contains(&kind)) else {
        return Err(format!(
            "{kind:?} is not a workload kind prewarm reads; use {}",
            accepted()
        ));
    };
    if name.is_empty() {
        return Err(format!("{reference:?} names no workload after the /"));
    }
    Ok((canonical, name.to_owned()))
}

impl Workload {
    /// A workload object (JSON), of one of [`KINDS`]: the pod template and selector where its kind keeps them.
    pub fn from_object(object: &Value) -> Result<Self, String> {
        let kind_text = object.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = KINDS
            .iter()
            .map(|(k, _)| *k)
            .find(|k| k.eq_ignore_ascii_case(kind_text))
            .ok_or_else(|| {
                format!(
                    "kind {kind_text:?} is not a workload prewarm reads; use a Deployment, StatefulSet, DaemonSet, Job or CronJob"
                )
            })?;
        let spec = if kind == "cronjob" {
            "/spec/jobTemplate/spec"
        } else {
            "/spec"
        };
        let template = object.pointer(&format!("{spec}/template")).ok_or_else(|| {
            format!(
                "{kind}/{name} has no pod template at {}.template",
                &spec[1..].replace('/', ".")
            )
        })?;
        let template: PodTemplateSpec = serde_json::from_value(template.clone())
            .map_err(|e| format!("{kind}/{name}: the pod template does not read as one: {e}"))?;
        let selector = object
            .pointer(&format!("{spec}/selector"))
            .filter(|_| kind != "cronjob")
            .map(|s| serde_json::from_value::<LabelSelector>(s.clone()))
            .transpose()
            .map_err(|e| format!("{kind}/{name}: the selector does not read as one: {e}"))?;
        Ok(Self {
            kind,
            name: name.to_owned(),
            namespace: object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            template,
            selector,
        })
    }

    fn pod_spec(&self) -> Result<&PodSpec, String> {
        self.template
            .spec
            .as_ref()
            .ok_or_else(|| format!("{}/{} has a pod template without a spec", self.kind, self.name))
    }

    /// The images to pull: init containers', then containers', each once, with
    /// `overrides` (container name → image) applied. Ephemeral containers are
    /// debugging sessions, not the workload's: left out.
    pub fn images(&self, overrides: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
        let spec = self.pod_spec()?;
        let containers: Vec<(&str, Option<&str>)> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| (c.name.as_str(), c.image.as_deref()))
            .collect();
        if let Some(unknown) = overrides.keys().find(|name| !containers.iter().any(|(c, _)| c == name)) {
            let names: Vec<&str> = containers.iter().map(|(c, _)| *c).collect();
            return Err(format!(
                "--image {unknown}=...: {}/{} has no container {unknown:?}; its containers: {}",
                self.kind,
                self.name,
                names.join(", ")
            ));
        }
        let mut images: Vec<String> = Vec::new();
        for (name, image) in containers {
            let image = overrides.get(name).map(String::as_str).or(image).unwrap_or_default();
            if !image.is_empty() && !images.iter().any(|i| i == image) {
                images.push(image.to_owned());
            }
        }
        if images.is_empty() {
            return Err(format!("{}/{} names no image to pre-warm", self.kind, self.name));
        }
        Ok(images)
    }

    /// The Secrets the pod template pulls with (its `imagePullSecrets`).
    pub fn pull_secrets(&self) -> Result<Vec<String>, String> {
        Ok(self
            .pod_spec()?
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.clone())
            .filter(|s| !s.is_empty())
            .collect())
    }

    /// Where the workload's pods run now: its selector as a pod selector (a
    /// CronJob's: its pod template's labels).
    pub fn pod_selector(&self) -> Result<PodSelector, String> {
        let selector = match &self.selector {
            Some(selector) => selector.clone(),
            None => LabelSelector {
                match_labels: self.template.metadata.as_ref().and_then(|m| m.labels.clone()),
                match_expressions: None,
            },
        };
        let empty = selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && selector.match_expressions.as_ref().is_none_or(Vec::is_empty);
        if empty {
            return Err(format!(
                "{}/{} gives its pods no labels to find them by: use --nodes=eligible",
                self.kind, self.name
            ));
        }
        Ok(PodSelector {
            match_labels: selector.match_labels,
            match_expressions: selector.match_expressions,
        })
    }

    /// The nodes the workload's pods could be scheduled to, sorted.
    pub fn eligible_nodes(&self, nodes: &[Node]) -> Result<Vec<String>, String> {
        let spec = self.pod_spec()?;
        let mut eligible: Vec<String> = nodes
            .iter()
            .filter(|node| schedulable(spec, node))
            .filter_map(|node| node.metadata.name.clone())
            .collect();
        eligible.sort();
        if eligible.is_empty() {
            return Err(format!(
                "no node is eligible for {}/{}: none matches its nodeSelector and required node affinity with every NoSchedule/NoExecute taint tolerated",
                self.kind, self.name
            ));
        }
        Ok(eligible)
    }
}

/// Whether the scheduler's filters let a pod with `spec` onto `node`.
fn schedulable(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
        .is_none_or(|required| {
            // Terms are ORed; an empty term matches nothing.
            required
                .node_selector_terms
                .iter()
                .any(|term| term_matches(term, &labels, name))
        });
    let node_spec = node.spec.clone().unwrap_or_default();
    let cordoned = node_spec.unschedulable == Some(true)
        && !tolerated(
            spec.tolerations.as_deref().unwrap_or_default(),
            &Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            },
        );
    let taints_ok = node_spec
        .taints
        .iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(spec.tolerations.as_deref().unwrap_or_default(), t));
    selector_ok && affinity_ok && taints_ok && !cordoned
}

fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, name: &str) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(name)))
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |v: &str| v.parse::<i64>().ok();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(v), Some(x)) if v > x),
        "Lt" => matches!((value.and_then(number), values.first().and_then(|v| number(v))), (Some(v), Some(x)) if v < x),
        _ => false,
    }
}

/// A toleration matches a taint on effect (empty: any), key (empty with
/// Exists: any) and, for `Equal`, value.
fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key = t.key.as_deref().unwrap_or_default();
        let key_ok = match t.operator.as_deref() {
            Some("Exists") => key.is_empty() || key == taint.key,
            _ => {
                key == taint.key && t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
            }
        };
        effect_ok && key_ok
    })
}

/// Which nodes the job targets.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// Where the workload's pods run now.
    Running(PodSelector),
    /// These nodes, by name.
    Nodes(Vec<String>),
}

/// The job's knobs from the command line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobOptions {
    pub ttl_seconds: Option<i32>,
    pub parallelism: Option<IntOrString>,
}

/// The job: an ImagePullJob for one image, an ImageListPullJob for several,
/// named `prewarm-<workload>-` plus the API server's suffix.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    Single(ImagePullJob),
    List(ImageListPullJob),
}

pub fn job(
    workload: &Workload,
    images: Vec<String>,
    pull_secrets: Vec<String>,
    target: Target,
    options: &JobOptions,
) -> Job {
    let metadata = ObjectMeta {
        generate_name: Some(format!("prewarm-{}-", workload.name)),
        namespace: workload.namespace.clone(),
        annotations: Some(BTreeMap::from([(
            WORKLOAD_ANNOTATION.to_owned(),
            format!("{}/{}", workload.kind, workload.name),
        )])),
        ..ObjectMeta::default()
    };
    let (selector, pod_selector) = match target {
        Target::Running(pods) => (None, Some(pods)),
        Target::Nodes(names) => (
            Some(NodeSelector {
                names: Some(names),
                ..NodeSelector::default()
            }),
            None,
        ),
    };
    let completion_policy = Some(CompletionPolicy {
        type_: Some(COMPLETION_ALWAYS.to_owned()),
        ttl_seconds_after_finished: options.ttl_seconds,
        ..CompletionPolicy::default()
    });
    let pull_secrets = Some(pull_secrets).filter(|s| !s.is_empty());
    match <[String; 1]>::try_from(images) {
        Ok([image]) => Job::Single(ImagePullJob {
            metadata,
            spec: ImagePullJobSpec {
                image,
                pull_secrets,
                selector,
                pod_selector,
                parallelism: options.parallelism.clone(),
                pull_policy: None,
                completion_policy,
                sandbox_config: None,
                image_pull_policy: None,
            },
            status: None,
        }),
        Err(images) => Job::List(ImageListPullJob {
            metadata,
            spec: ImageListPullJobSpec {
                images,
                pull_secrets,
                selector,
                pod_selector,
                parallelism: options.parallelism.clone(),
                pull_policy: None,
                completion_policy,
                sandbox_config: None,
                image_pull_policy: None,
            },
            status: None,
        }),
    }
}
