//! Pull secrets (reference §2.7): node agents may read Secrets in one
//! namespace only, so a job's pull secrets are copied there, shared between
//! jobs (the `references` annotation lists them), kept in step with their
//! source while a job runs, and deleted when no job references them.
//!
//! Decided from Secret metadata only: a copy records the uid and
//! resourceVersion of the source it was copied from, so the controller reads a
//! source's data only when it must create or refresh a copy. A copy is handed
//! to NodeImages only once it is confirmed to be a copy of the job's own
//! secret: its source annotation names it and its source uid is the uid the
//! secret has now (a secret deleted and made again under the name, by someone
//! else, is copied afresh first). Copies are named with 128 bits of SHA-256 of
//! the source, so no two sources share one.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prewarm_api::v1beta1::{ReferenceObject, SECRET_MODE_BATCH};

pub const SOURCE_KEY: &str = "imagepulljobs.kruise.io/source-key";
pub const REFERENCES: &str = "imagepulljobs.kruise.io/references";
pub const MODE: &str = "imagepulljobs.kruise.io/mode";
/// The resourceVersion of the source a copy was last refreshed from.
pub const SOURCE_VERSION: &str = "prewarm.dev/source-resource-version";
/// The uid of the source a copy was last refreshed from.
pub const SOURCE_UID: &str = "prewarm.dev/source-uid";
/// Every annotation a copy carries, the only ones the controller reads of a Secret.
pub const COPY_ANNOTATIONS: [&str; 5] = [SOURCE_KEY, REFERENCES, MODE, SOURCE_VERSION, SOURCE_UID];
/// The label every copy carries (and nothing of its source's).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "prewarm-controller");
/// The Secret types a copy may be made of, each with the one data key copied.
pub const PULL_SECRET_TYPES: [(&str, &str); 2] = [
    ("kubernetes.io/dockerconfigjson", ".dockerconfigjson"),
    ("kubernetes.io/dockercfg", ".dockercfg"),
];
/// OpenKruise's default for the node agents' namespace.
pub const DEFAULT_AGENT_NAMESPACE: &str = "kruise-daemon-config";

/// The job as the secret logic sees it.
#[derive(Clone, Copy, Debug)]
pub struct JobSecrets<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub pull_secrets: &'a [String],
    /// False once the job completed or is being deleted: it then wants no copy.
    pub running: bool,
}

impl JobSecrets<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum SecretAction {
    /// Copy the source into a new Secret in the agent namespace.
    Create {
        source_namespace: String,
        source_name: String,
        copy: String,
        references: String,
    },
    /// Set the copy's references annotation; with `refresh_from`, also copy
    /// the source again (data, uid, version).
    Update {
        copy: String,
        references: String,
        refresh_from: Option<(String, String)>,
    },
    Delete {
        copy: String,
    },
}

/// What the controller knows of a source Secret from its cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFacts {
    pub uid: String,
    pub resource_version: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretPlan {
    /// What the job's NodeImage entries must list: confirmed copies only.
    pub refs: Vec<ReferenceObject>,
    /// Refs to list once the action on their copy succeeds (a copy made or
    /// refreshed from the job's own secret in this pass).
    pub refs_after_write: Vec<ReferenceObject>,
    pub actions: Vec<SecretAction>,
    /// Pull secrets named by the job that do not exist.
    pub missing: Vec<String>,
}

/// `source(namespace, name)` gives what the cache knows of a Secret, if it exists.
pub fn plan(
    job: JobSecrets<'_>,
    agent_namespace: &str,
    copies: &[&ObjectMeta],
    source: &dyn Fn(&str, &str) -> Option<SourceFacts>,
) -> SecretPlan {
    let mut plan = SecretPlan::default();
    if job.namespace == agent_namespace {
        if job.running {
            for name in job.pull_secrets {
                if source(agent_namespace, name).is_none() {
                    plan.missing.push(name.clone());
                }
                plan.refs.push(ReferenceObject {
                    namespace: Some(agent_namespace.to_owned()),
                    name: Some(name.clone()),
                    mode: None,
                });
            }
        }
        return plan;
    }
    let me = job.key();
    let desired: BTreeSet<String> = if job.running {
        job.pull_secrets
            .iter()
            .map(|s| format!("{}/{s}", job.namespace))
            .collect()
    } else {
        BTreeSet::new()
    };
    let mut copies: Vec<&ObjectMeta> = copies
        .iter()
        .copied()
        .filter(|c| c.deletion_timestamp.is_none())
        .collect();
    copies.sort_by(|a, b| a.name.cmp(&b.name));
    let mut chosen: BTreeMap<String, &ObjectMeta> = BTreeMap::new();
    for copy in copies {
        let references = references(copy);
        let ours = references.contains(&me);
        match annotation(copy, SOURCE_KEY).filter(|s| desired.contains(*s)) {
            Some(source) if ours || !chosen.contains_key(source) => {
                chosen.insert(source.to_owned(), copy);
            }
            Some(_) => {}
            None if ours => plan.actions.push(release(copy, references, &me)),
            None => {}
        }
    }
    for wanted in &desired {
        let (source_namespace, source_name) = wanted.split_once('/').unwrap_or_default();
        let Some(facts) = source(source_namespace, source_name) else {
            plan.missing.push(source_name.to_owned());
            continue;
        };
        let (copy_name, mode, confirmed) = match chosen.get(wanted) {
            Some(copy) => {
                let mut references = references(copy);
                let joined = references.insert(me.clone());
                let confirmed = annotation(copy, SOURCE_UID) == Some(facts.uid.as_str());
                let stale = !confirmed || annotation(copy, SOURCE_VERSION) != Some(facts.resource_version.as_str());
                let name = copy.name.clone().unwrap_or_default();
                if joined || stale {
                    plan.actions.push(SecretAction::Update {
                        copy: name.clone(),
                        references: join(&references),
                        refresh_from: stale.then(|| (source_namespace.to_owned(), source_name.to_owned())),
                    });
                }
                (name, annotation(copy, MODE).map(str::to_owned), confirmed)
            }
            None => {
                let copy = copy_name(source_namespace, source_name);
                plan.actions.push(SecretAction::Create {
                    source_namespace: source_namespace.to_owned(),
                    source_name: source_name.to_owned(),
                    copy: copy.clone(),
                    references: me.clone(),
                });
                (copy, Some(SECRET_MODE_BATCH.to_owned()), false)
            }
        };
        let reference = ReferenceObject {
            namespace: Some(agent_namespace.to_owned()),
            name: Some(copy_name),
            mode,
        };
        if confirmed {
            plan.refs.push(reference);
        } else {
            plan.refs_after_write.push(reference);
        }
    }
    plan
}

fn release(copy: &ObjectMeta, mut references: BTreeSet<String>, me: &str) -> SecretAction {
    references.remove(me);
    let name = copy.name.clone().unwrap_or_default();
    if references.is_empty() {
        SecretAction::Delete { copy: name }
    } else {
        SecretAction::Update {
            copy: name,
            references: join(&references),
            refresh_from: None,
        }
    }
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether a Secret is a pull-secret copy (it names its source).
pub fn is_copy(meta: &ObjectMeta) -> bool {
    annotation(meta, SOURCE_KEY).is_some()
}

/// The jobs (`namespace/name`) a copy serves.
pub fn references(meta: &ObjectMeta) -> BTreeSet<String> {
    annotation(meta, REFERENCES)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

fn join(references: &BTreeSet<String>) -> String {
    references.iter().cloned().collect::<Vec<_>>().join(",")
}

/// `<source>-<32 hex>`: 128 bits of SHA-256 of `namespace/name`, derived from
/// the source so that a controller that restarts before it sees its own copy
/// gets AlreadyExists instead of making a second one, and long enough that no
/// one can find another namespace's source with the same copy name.
pub fn copy_name(source_namespace: &str, source_name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(source_namespace.as_bytes())
        .chain_update(b"/")
        .chain_update(source_name.as_bytes())
        .finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let prefix: String = source_name.chars().take(253 - hex.len() - 1).collect();
    format!("{prefix}-{hex}")
}

/// The data key copied from a Secret of `type_`, if a copy may be made of it.
pub fn pull_secret_key(type_: Option<&str>) -> Option<&'static str> {
    PULL_SECRET_TYPES
        .iter()
        .find(|(t, _)| Some(*t) == type_)
        .map(|(_, key)| *key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(name: &str, source: &str, references: &str) -> ObjectMeta {
        let mut annotations = BTreeMap::from([(SOURCE_KEY.to_owned(), source.to_owned())]);
        if !references.is_empty() {
            annotations.insert(REFERENCES.to_owned(), references.to_owned());
        }
        annotations.insert(MODE.to_owned(), SECRET_MODE_BATCH.to_owned());
        annotations.insert(SOURCE_VERSION.to_owned(), "7".to_owned());
        annotations.insert(SOURCE_UID.to_owned(), "uid-1".to_owned());
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(DEFAULT_AGENT_NAMESPACE.into()),
            annotations: Some(annotations),
            ..Default::default()
        }
    }

    fn job<'a>(secrets: &'a [String], running: bool) -> JobSecrets<'a> {
        JobSecrets {
            namespace: "default",
            name: "test-job",
            pull_secrets: secrets,
            running,
        }
    }

    fn facts(uid: &str, version: &str) -> SourceFacts {
        SourceFacts {
            uid: uid.to_owned(),
            resource_version: version.to_owned(),
        }
    }

    fn versions(ns: &str, name: &str) -> Option<SourceFacts> {
        (ns == "default" && name.starts_with("source")).then(|| facts("uid-1", "7"))
    }

    #[test]
    fn creates_a_copy_for_a_new_source() {
        let secrets = vec!["source-secret".to_owned()];
        let plan = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[], &versions);
        let name = copy_name("default", "source-secret");
        assert!(name.starts_with("source-secret-") && name.len() == "source-secret-".len() + 32);
        assert_eq!(
            plan.actions,
            vec![SecretAction::Create {
                source_namespace: "default".into(),
                source_name: "source-secret".into(),
                copy: name.clone(),
                references: "default/test-job".into(),
            }]
        );
        assert!(plan.refs.is_empty(), "named only once the copy is made");
        assert_eq!(plan.refs_after_write[0].mode.as_deref(), Some("batch"));
        assert_eq!(plan.refs_after_write[0].name.as_deref(), Some(name.as_str()));
    }

    #[test]
    fn copy_names_of_different_sources_never_meet() {
        let names: BTreeSet<String> = (0..20_000)
            .flat_map(|i| {
                [
                    copy_name(&format!("team-{i}"), "regcred"),
                    copy_name("team", &format!("regcred-{i}")),
                ]
            })
            .collect();
        assert_eq!(names.len(), 40_000);
        assert_ne!(copy_name("a-b", "c"), copy_name("a", "b-c"));
        assert_eq!(copy_name("ns", &"s".repeat(300)).len(), 253);
    }

    #[test]
    fn a_copy_is_named_only_once_its_source_uid_is_the_jobs_secrets() {
        let secrets = vec!["source-secret".to_owned()];
        let existing = copy("source-secret-abc123", "default/source-secret", "default/test-job");
        // The secret was deleted and made again under its name: a new uid.
        let remade = |_: &str, _: &str| Some(facts("uid-2", "7"));
        let result = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[&existing], &remade);
        assert!(result.refs.is_empty(), "{:?}", result.refs);
        assert_eq!(result.refs_after_write[0].name.as_deref(), Some("source-secret-abc123"));
        assert_eq!(
            result.actions,
            vec![SecretAction::Update {
                copy: "source-secret-abc123".into(),
                references: "default/test-job".into(),
                refresh_from: Some(("default".into(), "source-secret".into())),
            }]
        );
        let mut unmarked = existing.clone();
        unmarked.annotations.as_mut().unwrap().remove(SOURCE_UID);
        let result = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[&unmarked], &versions);
        assert!(result.refs.is_empty(), "a copy without a source uid is not trusted");
        let confirmed = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[&existing], &versions);
        assert_eq!(confirmed.refs[0].name.as_deref(), Some("source-secret-abc123"));
    }

    #[test]
    fn only_registry_credentials_are_copied() {
        assert_eq!(
            pull_secret_key(Some("kubernetes.io/dockerconfigjson")),
            Some(".dockerconfigjson")
        );
        assert_eq!(pull_secret_key(Some("kubernetes.io/dockercfg")), Some(".dockercfg"));
        for other in [
            None,
            Some("Opaque"),
            Some("kubernetes.io/service-account-token"),
            Some("kubernetes.io/tls"),
        ] {
            assert_eq!(pull_secret_key(other), None, "{other:?}");
        }
    }

    #[test]
    fn joins_an_existing_copy_with_sorted_references() {
        let secrets = vec!["source-secret".to_owned()];
        let existing = copy("source-secret-abc123", "default/source-secret", "default/test1-job");
        let plan = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[&existing], &versions);
        assert_eq!(
            plan.actions,
            vec![SecretAction::Update {
                copy: "source-secret-abc123".into(),
                references: "default/test-job,default/test1-job".into(),
                refresh_from: None,
            }]
        );
    }

    #[test]
    fn a_current_copy_that_references_the_job_needs_nothing_and_a_stale_one_is_refreshed() {
        let secrets = vec!["source-secret".to_owned()];
        let existing = copy("source-secret-abc123", "default/source-secret", "default/test-job");
        let quiet = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[&existing], &versions);
        assert!(quiet.actions.is_empty());
        let newer = |_: &str, _: &str| Some(facts("uid-1", "8"));
        let refreshed = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[&existing], &newer);
        assert_eq!(
            refreshed.actions,
            vec![SecretAction::Update {
                copy: "source-secret-abc123".into(),
                references: "default/test-job".into(),
                refresh_from: Some(("default".into(), "source-secret".into())),
            }]
        );
    }

    #[test]
    fn finished_jobs_release_copies_deleting_those_no_one_else_uses() {
        let mine = copy("a-111111", "default/source-a", "default/test-job");
        let shared = copy("b-222222", "default/source-b", "default/other-job,default/test-job");
        let foreign = copy("c-333333", "default/source-c", "default/other-job");
        let plan = plan(
            job(&[], false),
            DEFAULT_AGENT_NAMESPACE,
            &[&mine, &shared, &foreign],
            &versions,
        );
        assert_eq!(
            plan.actions,
            vec![
                SecretAction::Delete {
                    copy: "a-111111".into()
                },
                SecretAction::Update {
                    copy: "b-222222".into(),
                    references: "default/other-job".into(),
                    refresh_from: None,
                },
            ]
        );
        assert!(plan.refs.is_empty());
    }

    #[test]
    fn the_last_copy_referencing_the_job_wins_otherwise_the_first_by_name() {
        let secrets = vec!["source-secret".to_owned()];
        let copies: Vec<ObjectMeta> = (1..=3)
            .map(|i| copy(&format!("target-secret-{i}"), "default/source-secret", ""))
            .collect();
        let refs: Vec<&ObjectMeta> = copies.iter().collect();
        let first = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &refs, &versions);
        assert_eq!(first.refs[0].name.as_deref(), Some("target-secret-1"));
        let referencing: Vec<ObjectMeta> = (4..=6)
            .map(|i| {
                copy(
                    &format!("target-secret-{i}"),
                    "default/source-secret",
                    "default/test-job",
                )
            })
            .collect();
        let refs: Vec<&ObjectMeta> = copies.iter().chain(&referencing).collect();
        let last = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &refs, &versions);
        assert_eq!(last.refs[0].name.as_deref(), Some("target-secret-6"));
        assert!(last.actions.is_empty(), "nothing is released: {:?}", last.actions);
    }

    #[test]
    fn deleting_copies_and_unrelated_secrets_are_ignored_and_a_missing_source_is_reported() {
        let secrets = vec!["gone".to_owned()];
        let mut deleting = copy("a-111111", "default/gone", "default/test-job");
        deleting.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        let unrelated = ObjectMeta {
            name: Some("plain".into()),
            ..Default::default()
        };
        let plan = plan(
            job(&secrets, true),
            DEFAULT_AGENT_NAMESPACE,
            &[&deleting, &unrelated],
            &versions,
        );
        assert!(plan.actions.is_empty());
        assert!(plan.refs.is_empty());
        assert_eq!(plan.missing, vec!["gone".to_owned()]);
    }

    #[test]
    fn jobs_in_the_agent_namespace_use_their_secrets_directly() {
        let secrets = vec!["source-secret".to_owned()];
        let job = JobSecrets {
            namespace: DEFAULT_AGENT_NAMESPACE,
            ..job(&secrets, true)
        };
        let plan = plan(job, DEFAULT_AGENT_NAMESPACE, &[], &|_, _| Some(facts("uid-1", "1")));
        assert!(plan.actions.is_empty());
        assert_eq!(
            plan.refs,
            vec![ReferenceObject {
                namespace: Some(DEFAULT_AGENT_NAMESPACE.into()),
                name: Some("source-secret".into()),
                mode: None,
            }]
        );
    }
}
