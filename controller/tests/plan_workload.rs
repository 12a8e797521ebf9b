//! The workload planner behind `kubectl prewarm workload`: images, secrets,
//! the nodes by the scheduler's filters (Kubernetes' "Assigning Pods to
//! Nodes" and "Taints and Tolerations" pages), and the job it makes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use prewarm_controller::plan::workload::{
    Job, JobOptions, Target, WORKLOAD_ANNOTATION, Workload, job, parse_reference,
};
use serde_json::{Value, json};

fn deployment(pod_spec: Value) -> Workload {
    Workload::from_object(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}}))
    .unwrap()
}

fn node(name: &str, labels: Value, spec: Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec})).unwrap()
}

fn nodes() -> Vec<Node> {
    vec![
        node("node-1", json!({"disk": "ssd", "zone": "a", "cores": "8"}), json!({})),
        node("node-2", json!({"disk": "ssd", "zone": "b", "cores": "32"}), json!({})),
        node(
            "node-3",
            json!({"disk": "ssd", "zone": "b", "cores": "64"}),
            json!({"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]}),
        ),
        node(
            "node-4",
            json!({"disk": "hdd", "zone": "a"}),
            json!({"unschedulable": true}),
        ),
        node(
            "node-5",
            json!({"disk": "hdd", "zone": "c"}),
            json!({"taints": [{"key": "slow", "effect": "PreferNoSchedule"}]}),
        ),
    ]
}

fn eligible(pod_spec: Value) -> Result<Vec<String>, String> {
    deployment(pod_spec).eligible_nodes(&nodes())
}

#[test]
fn references_use_kubectl_names() {
    assert_eq!(parse_reference("deploy/web"), Ok(("deployment", "web".to_owned())));
    assert_eq!(parse_reference("StatefulSets/db"), Ok(("statefulset", "db".to_owned())));
    assert_eq!(parse_reference("ds/agent"), Ok(("daemonset", "agent".to_owned())));
    assert_eq!(
        parse_reference("cronjobs.batch/nightly"),
        Ok(("cronjob", "nightly".to_owned()))
    );
    assert!(
        parse_reference("web")
            .unwrap_err()
            .contains("names no kind: write KIND/NAME")
    );
    assert!(
        parse_reference("pod/web")
            .unwrap_err()
            .contains("\"pod\" is not a workload kind")
    );
    assert!(parse_reference("job/").unwrap_err().contains("names no workload"));
}

#[test]
fn images_are_init_containers_then_containers_once_each_with_overrides() {
    let web = deployment(json!({
        "initContainers": [{"name": "migrate", "image": "registry.local/app:v1"}],
        "containers": [{"name": "app", "image": "registry.local/app:v1"},
                       {"name": "proxy", "image": "envoy:1.30"}],
        "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
        "imagePullSecrets": [{"name": "regcred"}, {"name": ""}]}));
    assert_eq!(
        web.images(&BTreeMap::new()).unwrap(),
        ["registry.local/app:v1", "envoy:1.30"]
    );
    let next = BTreeMap::from([("app".to_owned(), "registry.local/app:v2".to_owned())]);
    assert_eq!(
        web.images(&next).unwrap(),
        ["registry.local/app:v1", "registry.local/app:v2", "envoy:1.30"]
    );
    let typo = BTreeMap::from([("ap".to_owned(), "x".to_owned())]);
    assert_eq!(
        web.images(&typo).unwrap_err(),
        "--image ap=...: deployment/web has no container \"ap\"; its containers: migrate, app, proxy"
    );
    assert_eq!(web.pull_secrets().unwrap(), ["regcred"]);
}

#[test]
fn running_pods_are_found_by_the_workloads_selector() {
    let web = deployment(json!({"containers": [{"name": "app", "image": "nginx"}]}));
    let selector = web.pod_selector().unwrap();
    assert_eq!(
        selector.match_labels,
        Some(BTreeMap::from([("app".to_owned(), "web".to_owned())]))
    );
    // A CronJob has no selector: its pods carry the job template's labels.
    let cron = Workload::from_object(&json!({
        "kind": "CronJob", "metadata": {"name": "report"},
        "spec": {"jobTemplate": {"spec": {"template": {
            "metadata": {"labels": {"task": "report"}},
            "spec": {"containers": [{"name": "r", "image": "report:1"}]}}}}}}))
    .unwrap();
    assert_eq!(cron.kind, "cronjob");
    assert_eq!(cron.images(&BTreeMap::new()).unwrap(), ["report:1"]);
    assert_eq!(
        cron.pod_selector().unwrap().match_labels,
        Some(BTreeMap::from([("task".to_owned(), "report".to_owned())]))
    );
    let unlabelled = Workload::from_object(&json!({
        "kind": "CronJob", "metadata": {"name": "bare"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "r", "image": "r"}]}}}}}}))
    .unwrap();
    assert!(unlabelled.pod_selector().unwrap_err().contains("use --nodes=eligible"));
    let pod = Workload::from_object(&json!({"kind": "Pod", "metadata": {"name": "p"}}));
    assert!(
        pod.unwrap_err()
            .contains("kind \"Pod\" is not a workload prewarm reads")
    );
}

#[test]
fn eligible_nodes_follow_the_schedulers_filters() {
    // No constraints: every node without an untolerated NoSchedule/NoExecute taint, not cordoned.
    assert_eq!(
        eligible(json!({"containers": []})).unwrap(),
        ["node-1", "node-2", "node-5"]
    );
    assert_eq!(
        eligible(json!({"nodeSelector": {"disk": "ssd"}})).unwrap(),
        ["node-1", "node-2"]
    );
    // Tolerating the taint lets node-3 in: by key and value, or by key with Exists.
    let tolerate = json!([{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]);
    assert_eq!(
        eligible(json!({"nodeSelector": {"disk": "ssd"}, "tolerations": tolerate})).unwrap(),
        ["node-1", "node-2", "node-3"]
    );
    let wrong_value = json!([{"key": "gpu", "operator": "Equal", "value": "false"}]);
    assert_eq!(
        eligible(json!({"nodeSelector": {"disk": "ssd"}, "tolerations": wrong_value})).unwrap(),
        ["node-1", "node-2"]
    );
    let everything = json!([{"operator": "Exists"}]);
    assert_eq!(
        eligible(json!({"tolerations": everything})).unwrap(),
        ["node-1", "node-2", "node-3", "node-4", "node-5"]
    );
    // Required node affinity: terms are ORed, expressions within a term ANDed.
    let affinity = |terms: Value| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}});
    assert_eq!(
        eligible(affinity(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]},
                                  {"key": "cores", "operator": "Gt", "values": ["16"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}
        ])))
        .unwrap(),
        ["node-1", "node-2"]
    );
    assert_eq!(
        eligible(affinity(
            json!([{"matchExpressions": [{"key": "cores", "operator": "DoesNotExist"}]}])
        ))
        .unwrap(),
        ["node-5"]
    );
    assert_eq!(
        eligible(affinity(
            json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a", "c"]}]}])
        ))
        .unwrap(),
        ["node-2"]
    );
    let none = eligible(json!({"nodeSelector": {"disk": "nvme"}})).unwrap_err();
    assert!(none.starts_with("no node is eligible for deployment/web"), "{none}");
}

#[test]
fn one_image_makes_an_image_pull_job_several_a_list_job() {
    let web = deployment(json!({"containers": [{"name": "app", "image": "nginx:1.25"}]}));
    let options = JobOptions {
        ttl_seconds: Some(600),
        parallelism: Some(IntOrString::String("50%".into())),
    };
    let single = job(
        &web,
        vec!["nginx:1.25".into()],
        vec!["regcred".into()],
        Target::Running(web.pod_selector().unwrap()),
        &options,
    );
    let Job::Single(single) = single else {
        panic!("{single:?}")
    };
    assert_eq!(single.metadata.generate_name.as_deref(), Some("prewarm-web-"));
    assert_eq!(single.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(
        single.metadata.annotations.unwrap()[WORKLOAD_ANNOTATION],
        "deployment/web"
    );
    assert_eq!(single.spec.image, "nginx:1.25");
    assert_eq!(single.spec.pull_secrets, Some(vec!["regcred".to_owned()]));
    assert!(single.spec.pod_selector.is_some() && single.spec.selector.is_none());
    assert_eq!(single.spec.parallelism, Some(IntOrString::String("50%".into())));
    let completion = single.spec.completion_policy.unwrap();
    assert_eq!(
        (completion.type_.as_deref(), completion.ttl_seconds_after_finished),
        (Some("Always"), Some(600))
    );

    let list = job(
        &web,
        vec!["a:1".into(), "b:1".into()],
        Vec::new(),
        Target::Nodes(vec!["node-1".into()]),
        &JobOptions::default(),
    );
    let Job::List(list) = list else { panic!("{list:?}") };
    assert_eq!(list.spec.images, ["a:1", "b:1"]);
    assert_eq!(list.spec.pull_secrets, None);
    assert_eq!(list.spec.selector.unwrap().names, Some(vec!["node-1".to_owned()]));
    assert!(list.spec.pod_selector.is_none());
}
