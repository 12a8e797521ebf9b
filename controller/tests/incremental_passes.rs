//! A pass that looks only at the nodes the watch marked for the job since its
//! last pass (the owners of changed tags, room filled or freed) must decide exactly what
//! a pass over every target decides. Random histories of
//! agent reports, other jobs' writes, tags removed by hand, NodeImages filling
//! and emptying, nodes not Ready and the clock moving: after every step both
//! passes are made, and their plans compared whole.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use prewarm_api::node_image::ImageTagPullPolicy;
use prewarm_api::v1beta1::{ImagePullJob, ReferenceObject};
use prewarm_controller::cached_node_image::CachedNodeImage;
use prewarm_controller::changes::{owners_of_changed_tags, room_changed};
use prewarm_controller::index::ObjectKey;
use prewarm_controller::plan::image_pull_job::{Input, Looked, Plan, Target, Unmatched, pass, plan};
use prewarm_controller::plan::job_nodes::JobNodes;
use serde_json::{Value, json};

const UID: &str = "job-uid";
const NODES: usize = 40;

/// xorshift64*: reproducible without a dependency.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

fn owner(uid: &str) -> Value {
    json!({"uid": uid, "name": uid, "namespace": "default", "kind": "ImagePullJob",
           "apiVersion": "apps.kruise.io/v1beta1"})
}

/// One random thing that happens to a NodeImage.
fn change(node: &mut Value, random: &mut Random) {
    let spec_tags = |node: &Value| {
        node["spec"]["images"]["nginx"]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    match random.below(6) {
        // The agent reports on our tag, at its version or an old one.
        0 | 1 => {
            let tags = spec_tags(node);
            let Some(ours) = tags.iter().find(|t| t["tag"] == "1.25") else {
                return;
            };
            let version = ours["version"].as_i64().unwrap_or(0) - i64::from(random.below(4) == 0);
            let phase = ["Succeeded", "Failed", "Pulling"][random.below(3)];
            node["status"]["imageStatuses"]["nginx"] =
                json!({"tags": [{"tag": "1.25", "phase": phase, "version": version}]});
        }
        // Another job adds its tag of the same image.
        2 => {
            let mut tags = spec_tags(node);
            tags.push(json!({"tag": "other", "version": 0, "ownerReferences": [owner("other")]}));
            node["spec"]["images"]["nginx"] = json!({"tags": tags});
        }
        // An admin removes our tag.
        3 => {
            let tags: Vec<Value> = spec_tags(node).into_iter().filter(|t| t["tag"] != "1.25").collect();
            node["spec"]["images"]["nginx"] = json!({"tags": tags});
        }
        // The NodeImage fills up with other images, or empties.
        4 => {
            let images = node["spec"]["images"].as_object_mut().unwrap();
            if images.len() > 1 {
                images.retain(|name, _| name == "nginx");
            } else {
                for i in 0..256 {
                    images.insert(format!("filler-{i}"), json!({"tags": [{"tag": "1", "version": 0}]}));
                }
            }
        }
        // Our entry's pull secrets are dropped by someone.
        _ => {
            if let Some(entry) = node["spec"]["images"].get_mut("nginx").and_then(Value::as_object_mut) {
                entry.remove("pullSecrets");
            }
        }
    }
    bump(node);
}

fn bump(node: &mut Value) {
    let version = node["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + 1;
    node["metadata"]["resourceVersion"] = json!(version.to_string());
}

fn cached(node: &Value) -> Arc<CachedNodeImage> {
    Arc::new(serde_json::from_value(node.clone()).unwrap())
}

#[test]
fn passes_over_changes_decide_as_passes_over_every_target() {
    for seed in 1..=60_u64 {
        let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let parallelism = ["3", "25%", "100%", "1"][random.below(4)];
        let secrets = [ReferenceObject {
            namespace: Some("agents".into()),
            name: Some("copy".into()),
            ..Default::default()
        }];
        let secrets = &secrets[..random.below(2)];
        let mut job: ImagePullJob = serde_json::from_value(json!({
            "metadata": {"name": "job", "namespace": "default", "uid": UID},
            "spec": {"image": "nginx:1.25", "parallelism": parallelism,
                     "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 100_000}}}))
        .unwrap();
        let mut nodes: Vec<Value> = (0..NODES)
            .map(|i| json!({"metadata": {"name": format!("node-{i:02}"), "resourceVersion": "1"}, "spec": {"images": {}}}))
            .collect();
        let not_ready: Vec<Option<Timestamp>> = (0..NODES)
            .map(|_| (random.below(8) == 0).then(|| "2026-11-29T11:55:00Z".parse().unwrap()))
            .collect();
        let mut now: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let key = ObjectKey::new("default", "job");
        let mut known = JobNodes::default();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let unmatched = Unmatched::default();
        let policy = ImageTagPullPolicy::default();
        let mut all: Vec<Arc<CachedNodeImage>> = nodes.iter().map(cached).collect();
        for step in 0..40 {
            let targets: Vec<Target<'_>> = all
                .iter()
                .zip(&not_ready)
                .map(|(node_image, since)| Target {
                    node_image,
                    not_ready_since: *since,
                })
                .collect();
            let input = |targets| Input {
                job: &job,
                targets,
                secrets,
                tag_policy: &policy,
                no_response_seconds: 600,
                unmatched: &unmatched,
                now,
            };
            let everything = plan(&input(&targets));
            let looked_at: Vec<Target<'_>> = if step == 0 {
                targets.clone()
            } else {
                let names = known.to_look_at(changed.iter().map(String::as_str));
                targets.iter().filter(|t| names.contains(t.name())).copied().collect()
            };
            let find = |name: &str| all.iter().find(|n| n.metadata.name.as_deref() == Some(name)).cloned();
            let looked = if step == 0 {
                Looked::Everything
            } else {
                Looked::Changed { find: &find }
            };
            let incremental: Plan = pass(&input(&looked_at), &mut known, looked);
            assert_eq!(incremental, everything, "seed {seed}, step {step}");

            // The plan's writes land, the status is stored, time passes, and
            // things happen to a few NodeImages. Each change is one watch
            // event, and the watch marks the node for the job only when that
            // event concerns it: the owners of changed tags, or a NodeImage
            // filling or freeing room.
            changed.clear();
            let mut observe = |i: usize, nodes: &[Value], changed: &mut BTreeSet<String>| {
                let new = cached(&nodes[i]);
                let (old, now): (Option<&CachedNodeImage>, _) = (Some(all[i].as_ref()), Some(&*new));
                if room_changed(old, now) || owners_of_changed_tags(old, now).contains(&key) {
                    changed.insert(nodes[i]["metadata"]["name"].as_str().unwrap().to_owned());
                }
                all[i] = new;
            };
            for write in &everything.writes {
                let i = nodes
                    .iter()
                    .position(|n| n["metadata"]["name"] == write.node.as_str())
                    .unwrap();
                nodes[i]["spec"]["images"][&write.image] = serde_json::to_value(&write.entry).unwrap();
                bump(&mut nodes[i]);
                observe(i, &nodes, &mut changed);
            }
            job.status = Some(everything.status.clone());
            if everything.status.completion_time.is_some() {
                break;
            }
            now = now.checked_add(SignedDuration::from_secs(60)).unwrap();
            for _ in 0..random.below(6) {
                let i = random.below(NODES);
                change(&mut nodes[i], &mut random);
                observe(i, &nodes, &mut changed);
            }
        }
    }
}
