//! The NodeImage planner on OpenKruise's TestDoUpdateNodeImage cases
//! (reference §7.6), plus creation, deletion and the silent-node failures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use prewarm_controller::cached_node_image::CachedNodeImage;
use prewarm_controller::plan::node_image::{Input, NO_RESPONSE_SECONDS, NodeFacts, OwnerFacts, Plan, plan};
use serde_json::{Value, json};

const NOW: &str = "2026-11-29T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn owner(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob", "namespace": "default", "name": name, "uid": uid})
}

fn tag(name: &str, owners: Value) -> Value {
    json!({"tag": name, "version": 0, "createdAt": "2026-11-29T11:00:00Z", "ownerReferences": owners,
           "pullPolicy": {"ttlSecondsAfterFinished": 60}})
}

fn node_image(labels: Value, images: Value, statuses: Value) -> CachedNodeImage {
    serde_json::from_value(
        json!({"metadata": {"name": "node1", "labels": labels}, "spec": {"images": images},
        "status": {"desired": 1, "imageStatuses": statuses}}),
    )
    .unwrap()
}

/// Jobs that exist: `alive` (uid-alive), `done` (completed, uid-done).
fn jobs(_namespace: &str, name: &str) -> Option<OwnerFacts> {
    let facts = |uid: &str, running_always| OwnerFacts {
        uid: uid.into(),
        deleting: false,
        running_always,
    };
    match name {
        "alive" => Some(facts("uid-alive", false)),
        "done" => Some(facts("uid-done", false)),
        "running" => Some(facts("uid-running", true)),
        _ => None,
    }
}

fn run(node_image: Option<&CachedNodeImage>, labels: &BTreeMap<String, String>) -> Plan {
    plan(&Input {
        name: "node1",
        node: Some(NodeFacts {
            labels: Some(labels),
            ready_since: Some("2026-11-29T11:00:00Z".parse().unwrap()),
        }),
        node_image,
        owner: &jobs,
        secret_exists: &|_, name| name == "secret1",
        copy_source: &copies,
        creation_delay_seconds: 30,
        no_response_seconds: NO_RESPONSE_SECONDS,
        now: now(),
    })
}

/// Copies the cache knows: `copy-of-X` was made from a Secret of namespace X.
fn copies(_namespace: &str, name: &str) -> Option<String> {
    name.strip_prefix("copy-of-").map(str::to_owned)
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("zone".to_owned(), "a".to_owned())])
}

fn reasons(plan: &Plan) -> Vec<String> {
    match plan {
        Plan::UpdateSpec { reasons, .. } => reasons.clone(),
        _ => Vec::new(),
    }
}

#[test]
fn unmodified_cases_keep_everything() {
    let kept_owners = [
        json!([owner("alive", "uid-alive"), {"kind": "Other", "name": "x"}]),
        json!([{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "default", "name": "d", "uid": "u"}]),
        json!([owner("done", "uid-done")]),
        json!([]),
    ];
    for owners in kept_owners {
        let current = node_image(
            json!({"zone": "a"}),
            json!({"nginx": {"tags": [tag("latest", owners.clone())]}}),
            json!({}),
        );
        let result = run(Some(&current), &labels());
        assert!(!matches!(result, Plan::UpdateSpec { .. }), "{owners}: {result:?}");
    }
}

#[test]
fn labels_owners_created_at_and_ttl_are_pruned_with_openkruises_messages() {
    let relabelled = node_image(json!({"zone": "b"}), json!({}), json!({}));
    assert_eq!(reasons(&run(Some(&relabelled), &labels())), vec!["node labels changed"]);

    let no_created_at = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"tags": [{"tag": "latest"}]}}),
        json!({}),
    );
    assert_eq!(
        reasons(&run(Some(&no_created_at), &labels())),
        vec![
            "image nginx:latest has no createAt field",
            "no longer has nginx image spec"
        ]
    );
    for gone in [owner("gone", "uid-gone"), owner("alive", "another-uid")] {
        let current = node_image(
            json!({"zone": "a"}),
            json!({"nginx": {"tags": [tag("latest", json!([gone]))]}}),
            json!({}),
        );
        assert_eq!(
            reasons(&run(Some(&current), &labels())),
            vec!["image nginx:latest owners is cleared", "no longer has nginx image spec"]
        );
    }
    let half = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"tags": [tag("latest", json!([owner("alive", "uid-alive"), owner("gone", "uid-gone")]))]}}),
        json!({}),
    );
    let result = run(Some(&half), &labels());
    assert_eq!(
        reasons(&result),
        vec!["image nginx:latest owners changed from [default/alive, default/gone] to [default/alive]"]
    );
    let two_tags = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"tags": [tag("latest", json!([owner("gone", "uid-gone")])), tag("1.20", json!([owner("alive", "uid-alive")]))]}}),
        json!({}),
    );
    let Plan::UpdateSpec { spec, .. } = run(Some(&two_tags), &labels()) else {
        panic!("expected a spec update")
    };
    assert_eq!(spec.images.unwrap()["nginx"].tags.len(), 1);

    let expired = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"tags": [tag("latest", json!([owner("alive", "uid-alive")]))]}}),
        json!({"nginx": {"tags": [{"tag": "latest", "phase": "Succeeded", "version": 0, "completionTime": "2026-11-29T11:58:59Z"}]}}),
    );
    let messages = reasons(&run(Some(&expired), &labels()));
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].starts_with("image nginx:latest has exceeded TTL (60)s since 2026-11-29T11:58:59Z completed"));
    let fresh = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"tags": [tag("latest", json!([owner("alive", "uid-alive")]))]}}),
        json!({"nginx": {"tags": [{"tag": "latest", "phase": "Succeeded", "version": 0, "completionTime": "2026-11-29T11:59:30Z"}]}}),
    );
    assert_eq!(
        run(Some(&fresh), &labels()),
        Plan::Nothing {
            requeue_after: Some(30)
        }
    );
    let running = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"tags": [tag("latest", json!([owner("running", "uid-running")]))]}}),
        json!({"nginx": {"tags": [{"tag": "latest", "phase": "Succeeded", "version": 0, "completionTime": "2026-11-29T11:00:00Z"}]}}),
    );
    assert!(
        matches!(run(Some(&running), &labels()), Plan::Nothing { .. }),
        "a running Always job's tag is not expired (no re-pull loop)"
    );
}

#[test]
fn legacy_secret_refs_to_missing_secrets_go_and_batch_refs_stay() {
    let refs = json!([{"namespace": "ns", "name": "secret1"}, {"namespace": "ns", "name": "secret2"},
                      {"namespace": "ns", "name": "secret3", "mode": "batch"}]);
    let current = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"pullSecrets": refs, "tags": [tag("latest", json!([owner("alive", "uid-alive")]))]}}),
        json!({}),
    );
    let Plan::UpdateSpec { spec, .. } = run(Some(&current), &labels()) else {
        panic!("expected a spec update")
    };
    let kept: Vec<_> = spec.images.unwrap()["nginx"]
        .pull_secrets
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|r| r.name)
        .collect();
    assert_eq!(kept, vec!["secret1", "secret3"]);
}

#[test]
fn creation_waits_for_the_delay_and_deletion_spares_fake_node_images() {
    let since = |at: &str| NodeFacts {
        labels: None,
        ready_since: Some(at.parse().unwrap()),
    };
    let create = |node: Option<NodeFacts<'_>>, current: Option<&CachedNodeImage>| {
        plan(&Input {
            name: "node1",
            node,
            node_image: current,
            owner: &jobs,
            secret_exists: &|_, _| true,
            copy_source: &copies,
            creation_delay_seconds: 30,
            no_response_seconds: NO_RESPONSE_SECONDS,
            now: now(),
        })
    };
    assert_eq!(
        create(Some(since("2026-11-29T11:59:50Z")), None),
        Plan::Nothing {
            requeue_after: Some(20)
        }
    );
    assert_eq!(
        create(Some(since("2026-11-29T11:59:00Z")), None),
        Plan::Create { labels: None }
    );
    let not_ready = NodeFacts {
        labels: None,
        ready_since: None,
    };
    assert_eq!(create(Some(not_ready), None), Plan::Nothing { requeue_after: None });
    let plain = node_image(json!({}), json!({}), json!({}));
    assert_eq!(create(None, Some(&plain)), Plan::Delete);
    let fake = node_image(json!({"apps.kruise.io/fake-nodeimage": "true"}), json!({}), json!({}));
    assert!(matches!(create(None, Some(&fake)), Plan::Nothing { .. }));
}

#[test]
fn silent_nodes_and_overdue_pulls_are_failed_with_events_for_the_owners() {
    let mut old_tag = tag("latest", json!([owner("alive", "uid-alive")]));
    old_tag["createdAt"] = json!("2026-11-29T11:49:00Z");
    let mut overdue = tag("1.20", json!([owner("alive", "uid-alive")]));
    overdue["createdAt"] = json!("2026-11-29T11:00:00Z");
    overdue["pullPolicy"]["activeDeadlineSeconds"] = json!(60);
    let current = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"tags": [old_tag, overdue]}}),
        json!({"nginx": {"tags": [{"tag": "1.20", "phase": "Pulling", "version": 0}]}}),
    );
    let Plan::UpdateStatus { status, failures, .. } = run(Some(&current), &labels()) else {
        panic!("expected a status update")
    };
    let tags = &status.image_statuses.unwrap()["nginx"].tags;
    let message = |t: &str| tags.iter().find(|s| s.tag == t).unwrap().message.clone().unwrap();
    assert_eq!(message("latest"), "node has not responded for a long time");
    assert_eq!(message("1.20"), "pulling exceeds the activeDeadlineSeconds");
    assert_eq!(status.failed, Some(2));
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].owners[0].name.as_deref(), Some("alive"));

    let mut recent = tag("latest", json!([]));
    recent["createdAt"] = json!("2026-11-29T11:58:00Z");
    let waiting = node_image(json!({"zone": "a"}), json!({"nginx": {"tags": [recent]}}), json!({}));
    assert_eq!(
        run(Some(&waiting), &labels()),
        Plan::Nothing {
            requeue_after: Some(480)
        }
    );
}

/// A job's copies leave an entry with its last tag there: the agent would use a
/// copy only for tags of its source's namespace, and none is left.
#[test]
fn copies_of_namespaces_without_tags_here_are_dropped() {
    let batch = |name: &str| json!({"namespace": "kruise-daemon-config", "name": name, "mode": "batch"});
    let refs = json!([batch("copy-of-default"), batch("copy-of-team-a"), batch("unknown")]);
    // alive's tag (namespace default) stays; a gone job's tag of team-a goes.
    let team_a_owner = json!([{"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob", "namespace": "team-a", "name": "gone", "uid": "uid-gone"}]);
    let current = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"pullSecrets": refs, "tags": [tag("1", json!([owner("alive", "uid-alive")])), tag("2", team_a_owner)]}}),
        json!({}),
    );
    let result = run(Some(&current), &labels());
    let Plan::UpdateSpec { spec, .. } = &result else {
        panic!("{result:?}")
    };
    let kept: Vec<String> = spec.images.as_ref().unwrap()["nginx"]
        .pull_secrets
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.name.clone().unwrap())
        .collect();
    assert_eq!(
        kept,
        ["copy-of-default", "unknown"],
        "team-a's copy went with its tag; an unknown one stays"
    );
    assert!(
        reasons(&result)
            .iter()
            .any(|r| r.contains("pull secrets [copy-of-team-a] of jobs no longer on it")),
        "{:?}",
        reasons(&result)
    );

    // An ownerless tag (an admin's) keeps every copy, as in OpenKruise.
    let admins = node_image(
        json!({"zone": "a"}),
        json!({"nginx": {"pullSecrets": [batch("copy-of-team-a")], "tags": [tag("1", json!([]))]}}),
        json!({}),
    );
    let kept = run(Some(&admins), &labels());
    assert!(
        !matches!(kept, Plan::UpdateSpec { .. }),
        "the spec keeps its copies: {kept:?}"
    );
}

/// What a spec update writes: the tags and images that stay, whole (owners
/// cut to those that remain, pull secrets and sandbox config kept), and on a
/// relabel alone the spec as it was.
#[test]
fn a_spec_update_keeps_everything_that_stays() {
    let images = json!({
        "nginx": {"tags": [tag("latest", json!([owner("alive", "uid-alive"), owner("gone", "uid-gone")])),
                           tag("1.0", json!([owner("done", "uid-done")]))],
                  "pullSecrets": [{"namespace": "default", "name": "secret1"}],
                  "sandboxConfig": {"labels": {"a": "b"}}},
        "redis": {"tags": [tag("7", json!([owner("gone", "uid-gone")]))]},
        "busybox": {"tags": [tag("1", json!([owner("alive", "uid-alive")]))],
                    "pullSecrets": [{"namespace": "default", "name": "secret1"}]}
    });
    let spec = |plan: Plan| match plan {
        Plan::UpdateSpec { spec, .. } => serde_json::to_value(spec).unwrap(),
        other => panic!("expected a spec update: {other:?}"),
    };
    let current = node_image(json!({"zone": "a"}), images.clone(), json!({}));
    let mut expected = images.clone();
    expected["nginx"]["tags"][0]["ownerReferences"] = json!([owner("alive", "uid-alive")]);
    expected.as_object_mut().unwrap().remove("redis");
    assert_eq!(spec(run(Some(&current), &labels())), json!({"images": expected}));

    let without_gone = node_image(json!({"zone": "b"}), expected.clone(), json!({}));
    assert_eq!(
        spec(run(Some(&without_gone), &labels())),
        json!({"images": expected}),
        "a relabel writes the spec unchanged"
    );
}
