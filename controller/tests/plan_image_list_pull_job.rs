//! The ImageListPullJob planner on OpenKruise's cases (reference §7.5) and
//! prewarm's fixes: children without TTL, in-place parallelism, stable order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::jiff::Timestamp;
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob};
use prewarm_controller::plan::image_list_pull_job::{
    ListLifecycle, REVISION_LABEL, child_name, child_spec, is_child_for, lifecycle, plan, revision,
};
use serde_json::{Value, json};

fn now() -> Timestamp {
    "2026-11-29T12:00:00Z".parse().unwrap()
}

fn list(spec: Value) -> ImageListPullJob {
    serde_json::from_value(
        json!({"metadata": {"name": "foo", "namespace": "default", "uid": "list-uid"}, "spec": spec}),
    )
    .unwrap()
}

fn template() -> Value {
    json!({"images": ["nginx", "busybox"], "parallelism": 2,
           "completionPolicy": {"type": "Always", "ttlSecondsAfterFinished": 30}})
}

/// A child as the planner would make it, with a status.
fn child(list: &ImageListPullJob, image: &str, status: Value) -> ImagePullJob {
    let revision = revision(list);
    let mut job: ImagePullJob = serde_json::from_value(json!({"metadata": {
        "name": child_name("foo", image, &revision), "namespace": "default",
        "labels": {REVISION_LABEL: revision}}, "spec": {"image": image}, "status": status}))
    .unwrap();
    job.spec = child_spec(list, image);
    job
}

#[test]
fn status_aggregates_children_in_a_stable_order() {
    let list = list(json!({"images": ["a", "b", "c", "d"], "completionPolicy": {"type": "Always"}}));
    let children = [
        child(
            &list,
            "a",
            json!({"startTime": "2026-11-29T11:00:00Z", "desired": 1, "succeeded": 1, "active": 0, "failed": 0}),
        ),
        child(
            &list,
            "b",
            json!({"startTime": "2026-11-29T11:00:00Z", "desired": 1, "active": 1, "succeeded": 0, "failed": 0}),
        ),
        child(
            &list,
            "d",
            json!({"startTime": "2026-11-29T11:00:00Z", "desired": 2, "failed": 1, "succeeded": 1, "active": 0}),
        ),
        child(
            &list,
            "c",
            json!({"startTime": "2026-11-29T11:00:00Z", "desired": 1, "failed": 1, "succeeded": 0, "active": 0}),
        ),
    ];
    let refs: Vec<&ImagePullJob> = children.iter().collect();
    let result = plan(&list, &refs, now());
    let status = serde_json::to_value(&result.status).unwrap();
    assert_eq!(
        (
            status["desired"].clone(),
            status["active"].clone(),
            status["succeeded"].clone(),
            status["completed"].clone()
        ),
        (json!(4), json!(1), json!(1), json!(3))
    );
    let failed: Vec<&str> = status["failedImageStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["c", "d"], "sorted by image");
    let message = status["failedImageStatuses"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("Please check for details which nodes failed by 'kubectl get ImagePullJob foo-"));
    assert!(status["completionTime"].is_null());
    assert!(result.create.is_empty() && result.delete.is_empty());
}

#[test]
fn images_added_and_removed_create_and_delete_children() {
    let list = list(template());
    let old = child(&list, "redis", Value::Null);
    let kept = child(&list, "nginx", Value::Null);
    let result = plan(&list, &[&old, &kept], now());
    assert_eq!(result.delete, vec![old.metadata.name.clone().unwrap()]);
    assert_eq!(result.create.len(), 1);
    let created = &result.create[0];
    assert_eq!(created.spec.image, "busybox");
    assert_eq!(created.metadata.generate_name.as_deref(), Some("foo-"));
    assert!(created.metadata.name.as_deref().unwrap().starts_with("foo-"));
    assert_eq!(
        created.metadata.labels.as_ref().unwrap()[REVISION_LABEL],
        revision(&list)
    );
    let owner = &created.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller, owner.uid.as_str()),
        ("ImageListPullJob", Some(true), "list-uid")
    );
    let completion = created.spec.completion_policy.as_ref().unwrap();
    assert_eq!(
        completion.ttl_seconds_after_finished, None,
        "children carry no TTL of their own"
    );
    assert_eq!(completion.type_.as_deref(), Some("Always"));
}

#[test]
fn only_node_visible_template_changes_recreate_children() {
    let before = list(template());
    let children = [
        child(&before, "nginx", Value::Null),
        child(&before, "busybox", Value::Null),
    ];
    let refs: Vec<&ImagePullJob> = children.iter().collect();

    let mut ttl_only = template();
    ttl_only["completionPolicy"]["ttlSecondsAfterFinished"] = json!(600);
    let result = plan(&list(ttl_only), &refs, now());
    assert!(result.create.is_empty() && result.delete.is_empty(), "{result:?}");

    let mut wider = template();
    wider["parallelism"] = json!(5);
    let result = plan(&list(wider), &refs, now());
    assert!(result.create.is_empty() && result.delete.is_empty());
    assert_eq!(result.resize.len(), 2, "parallelism changes in place");

    let mut never = template();
    never["completionPolicy"] = json!({"type": "Never"});
    let result = plan(&list(never), &refs, now());
    assert_eq!(result.delete.len(), 2);
    assert_eq!(result.create.len(), 2);
    assert_ne!(
        result.create[0].metadata.name, children[0].metadata.name,
        "a new revision, a new name"
    );

    let mut always_pull = template();
    always_pull["imagePullPolicy"] = json!("Always");
    assert_eq!(plan(&list(always_pull), &refs, now()).create.len(), 2);

    // Unlabelled children (made by OpenKruise) are kept when their spec matches.
    let mut unlabelled = child(&before, "nginx", Value::Null);
    unlabelled.metadata.labels = None;
    let result = plan(&before, &[&unlabelled, &children[1]], now());
    assert!(result.delete.is_empty());
}

#[test]
fn completion_and_ttl() {
    let done = json!({"startTime": "2026-11-29T11:00:00Z", "desired": 1, "succeeded": 1, "active": 0, "failed": 0});
    let always = list(template());
    let children = [
        child(&always, "nginx", done.clone()),
        child(&always, "busybox", done.clone()),
    ];
    let refs: Vec<&ImagePullJob> = children.iter().collect();
    let result = plan(&always, &refs, now());
    assert_eq!(result.status.completion_time.map(|t| t.0), Some(now()));
    let mut never_spec = template();
    never_spec["completionPolicy"] = json!({"type": "Never"});
    let never = list(never_spec);
    let children = [child(&never, "nginx", done.clone()), child(&never, "busybox", done)];
    let refs: Vec<&ImagePullJob> = children.iter().collect();
    let result = plan(&never, &refs, now());
    assert_eq!(result.status.completed, Some(2));
    assert!(result.status.completion_time.is_none(), "a Never list never completes");

    let mut finished = list(template());
    finished.status = serde_json::from_value(json!({"desired": 2, "completionTime": "2026-11-29T11:59:40Z"})).unwrap();
    assert_eq!(
        lifecycle(&finished, now()),
        ListLifecycle::Finished {
            delete_now: false,
            requeue_after: Some(10)
        }
    );
    finished.status = serde_json::from_value(json!({"desired": 2, "completionTime": "2026-11-29T11:59:00Z"})).unwrap();
    assert_eq!(
        lifecycle(&finished, now()),
        ListLifecycle::Finished {
            delete_now: true,
            requeue_after: None
        }
    );
}

#[test]
fn child_names_do_not_collide_within_a_list() {
    let revision = revision(&list(template()));
    let names: std::collections::BTreeSet<String> = (0..20_000)
        .map(|i| child_name("foo", &format!("registry.example/team/app-{i}:v{}", i % 7), &revision))
        .collect();
    assert_eq!(names.len(), 20_000, "every image of a list has a child name of its own");
    for name in names.iter().take(50) {
        let suffix = name.strip_prefix("foo-").unwrap();
        assert_eq!(suffix.len(), 10, "{name}");
        assert!(
            suffix.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{name}"
        );
    }
    let long = "x".repeat(300);
    assert_eq!(
        child_name(&long, "nginx", &revision).len(),
        253,
        "a name fits metadata.name"
    );
}

#[test]
fn a_name_taken_by_something_else_is_not_this_lists_child() {
    let list = list(template());
    let revision = revision(&list);
    let mut own = child(&list, "nginx", Value::Null);
    own.metadata.owner_references = list_child(&list, "nginx").metadata.owner_references;
    assert!(is_child_for(&list, &own, "nginx", &revision));
    assert!(!is_child_for(&list, &own, "busybox", &revision), "another image");
    let mut stranger = own.clone();
    stranger.metadata.owner_references = None;
    assert!(
        !is_child_for(&list, &stranger, "nginx", &revision),
        "a job a user made under that name"
    );
    let mut other_list = own.clone();
    other_list.metadata.owner_references.as_mut().unwrap()[0].uid = "other-uid".into();
    assert!(!is_child_for(&list, &other_list, "nginx", &revision));
}

/// A child as the planner creates it (owner reference included).
fn list_child(list: &ImageListPullJob, image: &str) -> ImagePullJob {
    let only = ImageListPullJob {
        spec: prewarm_api::v1beta1::ImageListPullJobSpec {
            images: vec![image.to_owned()],
            ..list.spec.clone()
        },
        ..list.clone()
    };
    plan(&only, &[], now()).create.remove(0)
}

#[test]
fn children_about_to_go_do_not_complete_the_list() {
    let done = json!({"startTime": "2026-11-29T11:00:00Z", "desired": 1, "succeeded": 1, "active": 0, "failed": 0});
    let before = list(json!({"images": ["a", "b", "c"], "completionPolicy": {"type": "Always"}}));
    let (a, b) = (child(&before, "a", done.clone()), child(&before, "b", done));
    let c = child(&before, "c", Value::Null);
    let after = list(json!({"images": ["a", "d"], "completionPolicy": {"type": "Always"}}));
    let result = plan(&after, &[&a, &b, &c], now());
    let mut deleted = result.delete.clone();
    deleted.sort();
    let mut expected = vec![b.metadata.name.clone().unwrap(), c.metadata.name.clone().unwrap()];
    expected.sort();
    assert_eq!(deleted, expected);
    assert_eq!(
        result.create.iter().map(|c| c.spec.image.as_str()).collect::<Vec<_>>(),
        ["d"]
    );
    assert_eq!(
        (result.status.desired, result.status.completed),
        (2, Some(1)),
        "b's success is not counted"
    );
    assert!(result.status.completion_time.is_none(), "d has not run");
}

#[test]
fn a_second_child_for_one_image_is_deleted_and_a_list_being_deleted_creates_nothing() {
    let list = list(template());
    let first = child(&list, "nginx", Value::Null);
    let mut second = first.clone();
    second.metadata.name = Some("foo-zzzzz".into());
    let result = plan(&list, &[&second, &first], now());
    assert_eq!(result.delete, vec!["foo-zzzzz".to_owned()], "the first by name stays");
    assert_eq!(result.create.len(), 1, "busybox");

    let mut deleting = list.clone();
    deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let result = plan(&deleting, &[&first], now());
    assert!(
        result.create.is_empty(),
        "foreground deletion: the garbage collector removes the children"
    );
}
