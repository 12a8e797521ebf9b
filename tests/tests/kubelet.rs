//! The test kubelet running Pods on the real containerd CRI, checked against
//! what kubelet does (each value cites its source in `tests/src/kubelet/`):
//! Pod IPs from CNI, the security context, emptyDir and configMap layouts as
//! seen from inside the container, env and fieldRefs, readiness probes, and
//! the crash-loop back-off with its status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Kubectl;
use prewarm_testapi::pod_cluster::PodCluster;
use serde_json::{Value, json};

async fn cluster(dir: &Path, subnet: &str, bridge: &str) -> Cluster {
    let pods = PodCluster::start(dir, 1, subnet, bridge, |_| json!({})).await;
    Cluster { pods }
}

struct Cluster {
    pods: PodCluster,
}

impl Cluster {
    fn put(&self, object: Value) {
        self.pods.api.put(&object).unwrap();
    }

    fn pod(&self, name: &str) -> Value {
        let rt = self.pods.api.store.resource_type("", "v1", "pods").unwrap();
        self.pods.api.store.get(&rt, "default", name).unwrap()
    }

    async fn wait_for(&self, name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let pod = self.pod(name);
            if ready(&pod) {
                return pod;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let container = pod["spec"]["containers"][0]["name"].as_str().unwrap_or_default();
                let logs = self.log(&pod, container, 0);
                panic!("timed out waiting for {what}: {:#}\nlog: {logs}", pod["status"]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self, pod: &Value, container: &str, instance: u32) -> String {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        self.pods
            .log("default", name, container, instance)
            .trim_end()
            .to_owned()
    }
}

fn condition<'a>(pod: &'a Value, kind: &str) -> &'a Value {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .map_or(&Value::Null, |c| &c["status"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_with_kubelets_security_context_volumes_env_and_probes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path(), "10.213.0.0/16", "prewarm-k0").await;
    cluster.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "default"}, "data": {"greeting": "hello"}}));
    let script = "busybox id; busybox stat -c 'scratch %u %g %a' /scratch; \
        busybox stat -L -c 'config %g %a' /config/greeting; busybox readlink /config/greeting; \
        busybox readlink /config/..data | busybox cut -c1-4; echo \"env $GREETING $POD $NODE $KUBERNETES_SERVICE_HOST\"; \
        busybox mkdir -p /scratch/www; echo ok > /scratch/www/index.html; \
        exec busybox httpd -f -p 8080 -h /scratch/www";
    cluster.put(json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "nodeName": "node-1",
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
        "containers": [{
            "name": "web",
            "image": "localhost/busybox:test",
            "command": ["/bin/busybox", "sh", "-c", script],
            "env": [
                {"name": "GREETING", "value": "hi"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
            ],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
            "volumeMounts": [
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "config", "mountPath": "/config", "readOnly": true}
            ]
        }],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "settings"}}
        ]
    }}));
    let pod = cluster
        .wait_for("web", "the pod to be Ready", |p| condition(p, "Ready") == "True")
        .await;
    assert_eq!(pod["status"]["phase"], "Running");
    let ip = pod["status"]["podIP"].as_str().unwrap();
    assert!(
        ip.starts_with("10.213."),
        "the Pod has an address on the pod network: {ip}"
    );
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(
        (status["ready"].clone(), status["restartCount"].clone()),
        (json!(true), json!(0))
    );
    assert!(status["state"]["running"]["startedAt"].is_string());
    let log = cluster.log(&pod, "web", 0);
    assert!(
        log.contains("uid=1000 gid=3000 groups=2000,3000"),
        "runAsUser, runAsGroup and fsGroup as a supplemental group: {log}"
    );
    assert!(
        log.contains("scratch 0 2000 2777"),
        "emptyDir: root's, group fsGroup, 2777: {log}"
    );
    assert!(
        log.contains("config 2000 644"),
        "configMap files: group fsGroup, 0644: {log}"
    );
    assert!(log.contains("..data/greeting"), "each key links into ..data: {log}");
    assert!(
        log.contains("env hi web node-1 10.213.0.1"),
        "env, fieldRefs and the API server's address: {log}"
    );
    let kubectl = Kubectl::new(&cluster.pods.api);
    let wide = tokio::task::block_in_place(|| kubectl.ok(&["get", "pod", "web", "-o", "wide"]));
    assert!(
        wide.contains(ip) && wide.contains("node-1"),
        "-o wide shows IP and NODE: {wide}"
    );
    // The readiness probe reached the Pod's own address.
    let answer = prewarm_testapi::infra::curl(&["--max-time", "5", &format!("http://{ip}:8080/index.html")]);
    assert_eq!(answer.trim(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_restarts_at_once_then_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path(), "10.214.0.0/16", "prewarm-k1").await;
    cluster.put(json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "crash", "namespace": "default"},
    "spec": {
        "nodeName": "node-1",
        "containers": [{
            "name": "crash",
            "image": "localhost/busybox:test",
            "command": ["/bin/busybox", "sh", "-c",
                "n=$(busybox cat /runs/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /runs/n; echo run $n; exit 3"],
            "volumeMounts": [{"name": "runs", "mountPath": "/runs"}]
        }],
        "volumes": [{"name": "runs", "emptyDir": {}}]
    }}));
    // The first exit restarts at once; the second waits kubelet's 10 s.
    let pod = cluster
        .wait_for("crash", "CrashLoopBackOff", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        })
        .await;
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 1, "{status:#}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    let message = status["state"]["waiting"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("back-off 10s restarting failed container=crash pod=crash_default("),
        "{message}"
    );
    assert_eq!(
        pod["status"]["phase"], "Running",
        "restartPolicy Always keeps the Pod Running"
    );
    assert_eq!(condition(&pod, "Ready"), "False");
    assert_eq!(cluster.log(&pod, "crash", 0), "run 1");
    assert_eq!(
        cluster.log(&pod, "crash", 1),
        "run 2",
        "the restart logs to its own file"
    );
    // kubectl logs, through the API server's pods/log.
    let kubectl = Kubectl::new(&cluster.pods.api);
    tokio::task::block_in_place(|| {
        assert_eq!(kubectl.ok(&["logs", "crash"]), "run 2\n");
        assert_eq!(kubectl.ok(&["logs", "crash", "--previous"]), "run 1\n");
        let listed = kubectl.ok(&["get", "pod", "crash"]);
        assert!(listed.contains("CrashLoopBackOff"), "kubectl's STATUS: {listed}");
    });
}

/// The hardened context prewarm's Pods use, seen from inside, as the kernel
/// reports it: no capabilities (`CapEff` 0), `no_new_privs`, a seccomp
/// filter (RuntimeDefault), a read-only root; a `medium: Memory` emptyDir is
/// a tmpfs; and the projected service-account volume the ServiceAccount
/// admission plugin added holds `token`, `ca.crt` and `namespace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hardened_pod_created_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path(), "10.218.0.0/16", "prewarm-k2").await;
    let kubectl = Kubectl::new(&cluster.pods.api);
    let script = "busybox grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
        busybox touch /written 2>/dev/null || echo read-only root; \
        busybox grep ' /memory ' /proc/mounts | busybox cut -d' ' -f3; \
        busybox ls /var/run/secrets/kubernetes.io/serviceaccount; \
        echo namespace $(busybox cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); \
        exec busybox sleep 3600";
    let pods = json!([
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hardened", "namespace": "default"},
         "spec": {
            "nodeName": "node-1",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "localhost/busybox:test", "command": ["/bin/busybox", "sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "memory", "mountPath": "/memory"}]}],
            "volumes": [{"name": "memory", "emptyDir": {"medium": "Memory"}}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-image", "namespace": "default"},
         "spec": {"nodeName": "node-1", "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "app", "image": "localhost/busybox:test", "command": ["/bin/busybox", "sleep", "3600"]}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "host-network", "namespace": "default"},
         "spec": {"nodeName": "node-1", "hostNetwork": true,
            "containers": [{"name": "app", "image": "localhost/busybox:test", "command": ["/bin/busybox", "sleep", "3600"]}]}}
    ]);
    let file = dir.path().join("pods.yaml");
    let documents: Vec<String> = pods.as_array().unwrap().iter().map(Value::to_string).collect();
    std::fs::write(&file, documents.join("\n---\n")).unwrap();
    tokio::task::block_in_place(|| kubectl.ok(&["apply", "-f", file.to_str().unwrap()]));

    let pod = cluster
        .wait_for("hardened", "the hardened pod to run", |p| {
            condition(p, "Ready") == "True" && cluster.log(p, "app", 0).contains("namespace default")
        })
        .await;
    let log = cluster.log(&pod, "app", 0);
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("Seccomp:\t2"), "a seccomp filter: {log}");
    assert!(log.contains("read-only root"), "{log}");
    assert!(log.contains("\ntmpfs\n"), "medium: Memory is a tmpfs: {log}");
    assert!(
        log.contains("ca.crt\nnamespace\ntoken"),
        "the projected service-account files: {log}"
    );

    let refused = cluster
        .wait_for("root-image", "runAsNonRoot to refuse the image's root user", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await;
    assert_eq!(
        refused["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
        "container has runAsNonRoot and image will run as root (pod: \"root-image\", container: app)"
    );

    let host = cluster
        .wait_for("host-network", "the hostNetwork pod to run", |p| {
            condition(p, "Ready") == "True"
        })
        .await;
    assert_eq!(
        host["status"]["podIP"], host["status"]["hostIP"],
        "hostNetwork: the node's address"
    );
}
