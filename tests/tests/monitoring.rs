//! Monitoring with the real Prometheus (Debian's `prometheus` package): the
//! chart's alert rules pass `promtool check rules` and their unit tests, and
//! on the local cluster a Prometheus server configured from the chart's
//! PodMonitors and PrometheusRule (as the Prometheus Operator turns them into
//! its configuration) scrapes every component, has pulls per node after a
//! job, puts a failing job's alert up, and answers every dashboard query.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use common::e2e::{E2e, MINUTE, completed, job, up};
use common::repo;
use prewarm_testapi::infra::{Daemon, free_port, spawn};
use prewarm_testapi::installed::NAMESPACE;
use serde_json::{Value, json};

fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (scripts/install-test-deps.sh installs prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let checked = promtool(
        &repo("."),
        &["check", "rules", "charts/prewarm/files/prometheus-rules.yaml"],
    );
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(
        &repo("tests/fixtures/prometheus"),
        &["test", "rules", "rules-test.yaml"],
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// A Prometheus server on a loopback port with `config`, until dropped.
struct Prometheus {
    port: u16,
    _daemon: Daemon,
}

impl Prometheus {
    fn start(dir: &Path, config: &Value) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config.to_string()).unwrap();
        let port = free_port();
        let daemon = spawn(
            "prometheus",
            &[
                &format!("--config.file={}", file.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address=127.0.0.1:{port}"),
            ],
            &dir.join("prometheus.log"),
        );
        let prometheus = Self { port, _daemon: daemon };
        prometheus.wait("the server to answer", |p| p.get("/-/ready", &[]).is_some());
        prometheus
    }

    /// `GET path` with URL-encoded `params`, through curl; the body if 200.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> Option<String> {
        let mut curl = Command::new("curl");
        curl.args(["-sfG", &format!("http://127.0.0.1:{}{path}", self.port)]);
        for (key, value) in params {
            curl.args(["--data-urlencode", &format!("{key}={value}")]);
        }
        let out = curl.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The result vector of an instant query.
    fn query(&self, query: &str) -> Vec<Value> {
        let answer: Value = serde_json::from_str(&self.get("/api/v1/query", &[("query", query)]).unwrap()).unwrap();
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    fn wait(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        common::e2e::wait_until(what, MINUTE, || ready(self));
    }
}

/// The scrape configuration the Prometheus Operator makes of `monitor` (a
/// PodMonitor): the Pods its selector picks in its namespace, at the
/// container port its endpoint names, relabelled as it says.
fn scrape_config(e2e: &E2e, monitor: &Value) -> Value {
    let namespace = monitor["metadata"]["namespace"].as_str().unwrap();
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let port_name = endpoint["port"].as_str().unwrap();
    let pods = e2e.get(&["pods", "-n", namespace]);
    let mut targets = Vec::new();
    for pod in pods["items"].as_array().unwrap() {
        if !selector.iter().all(|(k, v)| pod["metadata"]["labels"][k] == *v) {
            continue;
        }
        let port = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .find(|p| p["name"] == port_name)
            .unwrap_or_else(|| panic!("{namespace} Pod without port {port_name}"));
        // The relabelings: the job named, pod and node from the Pod's metadata.
        let mut labels = json!({"pod": pod["metadata"]["name"], "node": pod["spec"]["nodeName"]});
        for relabeling in endpoint["relabelings"].as_array().unwrap() {
            if let Some(replacement) = relabeling["replacement"].as_str() {
                labels[relabeling["targetLabel"].as_str().unwrap()] = json!(replacement);
            }
        }
        targets.push(
            json!({"targets": [format!("{}:{}", pod["status"]["podIP"].as_str().unwrap(), port["containerPort"])],
                            "labels": labels}),
        );
    }
    assert!(!targets.is_empty(), "{monitor:#}");
    json!({"job_name": monitor["metadata"]["name"], "metrics_path": endpoint["path"],
           "scrape_interval": "1s", "static_configs": targets})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_install_alerts_and_fills_the_dashboard() {
    let mut e2e = up(true).await;
    let prometheus = tokio::task::block_in_place(|| {
        let crds = repo("tests/fixtures/prometheus/monitoring-crds.yaml");
        e2e.kubectl.ok(&["apply", "-f", crds.to_str().unwrap()]);
        e2e.cluster.upgrade_with(&[
            "metrics.podMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "metrics.dashboard.enabled=true",
        ]);
        let monitors = e2e.get(&["podmonitors", "-A"]);
        let monitors = monitors["items"].as_array().unwrap();
        assert_eq!(monitors.len(), 3, "{monitors:#?}");
        let scrape_configs: Vec<Value> = monitors.iter().map(|m| scrape_config(&e2e, m)).collect();
        // The rules as the operator writes them for Prometheus: the PrometheusRule's spec.
        let rule = e2e.get(&["prometheusrule", "-n", NAMESPACE, "prewarm"]);
        let shipped: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(repo("charts/prewarm/files/prometheus-rules.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(rule["spec"]["groups"], shipped["groups"]);
        let dir = e2e.cluster.pods.dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rules.yml"), rule["spec"].to_string()).unwrap();
        let config = json!({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                            "rule_files": [dir.join("rules.yml")], "scrape_configs": scrape_configs});
        Prometheus::start(&dir, &config)
    });

    // Every component is scraped: the webhook, the controller, and an agent per node.
    tokio::task::block_in_place(|| {
        prometheus.wait("every target up", |p| {
            let up = p.query("up == 1");
            ["prewarm-webhook", "prewarm-controller"]
                .iter()
                .all(|job| up.iter().any(|s| s["metric"]["job"] == *job))
                && up.iter().filter(|s| s["metric"]["job"] == "prewarm-nodeagent").count() == 3
        });
    });

    // A job that pulls on two nodes, and one that fails on one.
    let nginx = e2e.registries().image("nginx:1.25");
    let missing = e2e.registries().image("nginx:0.0-missing");
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&job("pulls", &nginx, &["node-1", "node-2"], "")).ok);
        assert!(e2e.apply(&job("fails", &missing, &["node-3"], "")).ok);
        e2e.wait_job("imagepulljob", "pulls", MINUTE, completed);
        let failed = e2e.wait_job("imagepulljob", "fails", MINUTE, completed);
        assert_eq!(failed["failed"], 1, "{failed:#}");
    });

    tokio::task::block_in_place(|| {
        // Pull counts, durations and bytes per node.
        prometheus.wait("pulls per node", |p| {
            let pulled = p.query(r#"sum by (node) (prewarm_nodeagent_pulls_total{result="pulled"}) > 0"#);
            pulled.len() == 2
        });
        // The failed pull is timed too; its scrape may land a second after the pulled ones.
        prometheus.wait("pull durations on every node, failed ones included", |p| {
            let durations = p.query("sum by (node) (prewarm_nodeagent_pull_duration_seconds_count) > 0");
            let mut nodes: Vec<&str> = durations.iter().filter_map(|s| s["metric"]["node"].as_str()).collect();
            nodes.sort_unstable();
            nodes == ["node-1", "node-2", "node-3"]
        });
        // The runtime's sizes of what was pulled, read after each pull.
        prometheus.wait("bytes pulled on two nodes", |p| {
            p.query("prewarm_nodeagent_pulled_bytes_total > 0").len() == 2
        });
        prometheus.wait("completions, succeeded and failed", |p| {
            let completions = p.query("sum by (result) (prewarm_controller_imagepulljob_completions_total) > 0");
            completions.len() == 2
        });

        // The failing job's alert is up.
        prometheus.wait("PrewarmImagePullJobsFailing", |p| {
            let alerts: Value = serde_json::from_str(&p.get("/api/v1/alerts", &[]).unwrap()).unwrap();
            alerts["data"]["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["labels"]["alertname"] == "PrewarmImagePullJobsFailing")
        });

        // Every query of the dashboard the chart ships returns data.
        let config_map = e2e.get(&["configmap", "-n", NAMESPACE, "prewarm-dashboard"]);
        assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
        let dashboard: Value = serde_json::from_str(config_map["data"]["prewarm.json"].as_str().unwrap()).unwrap();
        let queries: Vec<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
            .map(|target| target["expr"].as_str().unwrap().to_owned())
            .collect();
        assert!(queries.len() >= 10, "{queries:#?}");
        for query in &queries {
            prometheus.wait(&format!("data for {query}"), |p| !p.query(query).is_empty());
        }
    });
}
