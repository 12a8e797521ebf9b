//! Pull secrets (reference §2.7): node agents may read Secrets in one
//! namespace only, so a job's pull secrets are copied there, shared between
//! jobs (the `references` annotation lists them), kept in step with their
//! source while a job runs, and deleted when no job references them.
//!
//! Decided from Secret metadata only: a copy records the resourceVersion of
//! the source it was copied from, so the controller reads a source's data only
//! when it must create or refresh a copy.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use prewarm_api::v1beta1::{ReferenceObject, SECRET_MODE_BATCH};

pub const SOURCE_KEY: &str = "imagepulljobs.kruise.io/source-key";
pub const REFERENCES: &str = "imagepulljobs.kruise.io/references";
pub const MODE: &str = "imagepulljobs.kruise.io/mode";
/// The resourceVersion of the source a copy was last refreshed from.
pub const SOURCE_VERSION: &str = "prewarm.dev/source-resource-version";
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
    /// the source's data again.
    Update {
        copy: String,
        references: String,
        refresh_from: Option<(String, String)>,
    },
    Delete {
        copy: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecretPlan {
    /// What the job's NodeImage entries must list.
    pub refs: Vec<ReferenceObject>,
    pub actions: Vec<SecretAction>,
    /// Pull secrets named by the job that do not exist.
    pub missing: Vec<String>,
}

/// `secret_version(namespace, name)` gives a Secret's resourceVersion if it exists.
pub fn plan(
    job: JobSecrets<'_>,
    agent_namespace: &str,
    copies: &[&ObjectMeta],
    secret_version: &dyn Fn(&str, &str) -> Option<String>,
) -> SecretPlan {
    let mut plan = SecretPlan::default();
    if job.namespace == agent_namespace {
        if job.running {
            for name in job.pull_secrets {
                if secret_version(agent_namespace, name).is_none() {
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
    for source in &desired {
        let (source_namespace, source_name) = source.split_once('/').unwrap_or_default();
        let Some(source_version) = secret_version(source_namespace, source_name) else {
            plan.missing.push(source_name.to_owned());
            continue;
        };
        match chosen.get(source) {
            Some(copy) => {
                let mut references = references(copy);
                let joined = references.insert(me.clone());
                let stale = annotation(copy, SOURCE_VERSION) != Some(source_version.as_str());
                if joined || stale {
                    plan.actions.push(SecretAction::Update {
                        copy: copy.name.clone().unwrap_or_default(),
                        references: join(&references),
                        refresh_from: stale.then(|| (source_namespace.to_owned(), source_name.to_owned())),
                    });
                }
                plan.refs.push(ReferenceObject {
                    namespace: Some(agent_namespace.to_owned()),
                    name: copy.name.clone(),
                    mode: annotation(copy, MODE).map(str::to_owned),
                });
            }
            None => {
                let copy = copy_name(source_namespace, source_name);
                plan.actions.push(SecretAction::Create {
                    source_namespace: source_namespace.to_owned(),
                    source_name: source_name.to_owned(),
                    copy: copy.clone(),
                    references: me.clone(),
                });
                plan.refs.push(ReferenceObject {
                    namespace: Some(agent_namespace.to_owned()),
                    name: Some(copy),
                    mode: Some(SECRET_MODE_BATCH.to_owned()),
                });
            }
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

/// `<source>-<6 hex>`: derived from the source, so a controller that restarts
/// before it sees its own copy gets AlreadyExists instead of making a second one.
pub fn copy_name(source_namespace: &str, source_name: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in source_namespace.bytes().chain([b'/']).chain(source_name.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let prefix: String = source_name.chars().take(253 - 7).collect();
    format!("{prefix}-{:06x}", hash & 0x00ff_ffff)
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

    fn versions(ns: &str, name: &str) -> Option<String> {
        (ns == "default" && name.starts_with("source")).then(|| "7".to_owned())
    }

    #[test]
    fn creates_a_copy_for_a_new_source() {
        let secrets = vec!["source-secret".to_owned()];
        let plan = plan(job(&secrets, true), DEFAULT_AGENT_NAMESPACE, &[], &versions);
        let name = copy_name("default", "source-secret");
        assert!(name.starts_with("source-secret-") && name.len() == "source-secret-".len() + 6);
        assert_eq!(
            plan.actions,
            vec![SecretAction::Create {
                source_namespace: "default".into(),
                source_name: "source-secret".into(),
                copy: name.clone(),
                references: "default/test-job".into(),
            }]
        );
        assert_eq!(plan.refs[0].mode.as_deref(), Some("batch"));
        assert_eq!(plan.refs[0].name.as_deref(), Some(name.as_str()));
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
        let newer = |_: &str, _: &str| Some("8".to_owned());
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
        let plan = plan(job, DEFAULT_AGENT_NAMESPACE, &[], &|_, _| Some("1".into()));
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
