//! One Pod on one node, synced as kubelet's pod worker syncs it
//! (`SyncPod` in pkg/kubelet/kuberuntime/kuberuntime_manager.go): volumes,
//! then the sandbox, then each container (pulled, checked, created, started,
//! restarted by `restartPolicy` with the crash-loop back-off), probes, and the
//! Pod's status; torn down when the Pod is gone.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::backoff::Backoff;
use super::container_inputs;
use super::cri::{Cri, api};
use super::pod_volumes::{self, TokenCache};
use super::probes::{self, Probe, Tally};
use super::spec::{self, Resolved};
use super::status::{self, State};
use super::{Node, SYNC_PERIOD, text};

fn rfc3339(nanos: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn now_rfc3339() -> String {
    rfc3339(now_nanos())
}

/// A probe of the current instance, its tally and when it runs next.
#[derive(Debug)]
struct Scheduled {
    probe: Probe,
    tally: Tally,
    next: Instant,
}

#[derive(Debug)]
struct Run {
    record: status::Container,
    cri_id: Option<String>,
    /// The instance before, kept for `logs --previous`.
    previous: Option<String>,
    /// Instances created so far.
    attempts: u32,
    /// When the current instance was seen to have exited.
    finished: Option<Instant>,
    backoff: Backoff,
    readiness: Option<Scheduled>,
    liveness: Option<Scheduled>,
}

#[derive(Debug)]
struct Sandbox {
    id: String,
    ip: String,
    config: api::PodSandboxConfig,
}

#[derive(Debug, Default)]
struct PodState {
    sandbox: Option<Sandbox>,
    runs: HashMap<String, Run>,
    tokens: TokenCache,
    volumes: HashMap<String, PathBuf>,
    start_time: String,
}

pub(super) fn waiting(reason: &str, message: impl Into<String>) -> State {
    State::Waiting {
        reason: reason.to_owned(),
        message: message.into(),
    }
}

pub(super) async fn run(node: Node, mut cri: Cri, uid: String) {
    let mut state = PodState {
        start_time: now_rfc3339(),
        ..PodState::default()
    };
    let mut key: Option<(String, String)> = None;
    loop {
        let pod = match &key {
            Some((namespace, name)) => node.get("pods", namespace, name),
            None => node.pods().into_iter().find(|p| text(p, "/metadata/uid") == uid),
        }
        .filter(|p| text(p, "/metadata/uid") == uid);
        let Some(pod) = pod else {
            teardown(&node, &mut cri, &mut state, &uid, Duration::from_secs(30)).await;
            return;
        };
        key.get_or_insert_with(|| {
            (
                text(&pod, "/metadata/namespace").to_owned(),
                text(&pod, "/metadata/name").to_owned(),
            )
        });
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            let grace = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(30);
            teardown(&node, &mut cri, &mut state, &uid, Duration::from_secs(grace)).await;
        } else {
            sync(&node, &mut cri, &mut state, &pod).await;
        }
        tokio::time::sleep(SYNC_PERIOD).await;
    }
}

async fn teardown(node: &Node, cri: &mut Cri, state: &mut PodState, uid: &str, grace: Duration) {
    for run in state.runs.values_mut() {
        if let Some(id) = run.previous.take() {
            let _ = cri
                .runtime
                .remove_container(api::RemoveContainerRequest { container_id: id })
                .await;
        }
        if let Some(id) = run.cri_id.take() {
            let timeout = i64::try_from(grace.as_secs()).unwrap_or(30);
            let _ = cri
                .runtime
                .stop_container(api::StopContainerRequest {
                    container_id: id.clone(),
                    timeout,
                })
                .await;
            let _ = cri
                .runtime
                .remove_container(api::RemoveContainerRequest { container_id: id })
                .await;
        }
    }
    if let Some(sandbox) = state.sandbox.take() {
        let _ = cri
            .runtime
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await;
        let _ = cri
            .runtime
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.id,
            })
            .await;
    }
    super::volumes::remove_pod_dir(&node.pod_dir(uid));
}

fn containers(pod: &Value) -> Vec<Value> {
    pod["spec"]["containers"].as_array().cloned().unwrap_or_default()
}

fn record_all(node: &Node, pod: &Value, state: &mut PodState, reason: &str, message: &str) {
    for container in containers(pod) {
        let run = run_of(node, state, &container);
        if run.cri_id.is_none() {
            run.record.state = waiting(reason, message);
        }
    }
}

fn run_of<'a>(node: &Node, state: &'a mut PodState, container: &Value) -> &'a mut Run {
    let name = text(container, "/name").to_owned();
    state.runs.entry(name.clone()).or_insert_with(|| Run {
        record: status::Container {
            name,
            image: text(container, "/image").to_owned(),
            image_id: String::new(),
            container_id: String::new(),
            state: waiting("ContainerCreating", ""),
            last_state: None,
            restart_count: 0,
            ready: false,
        },
        cri_id: None,
        previous: None,
        attempts: 0,
        finished: None,
        backoff: Backoff::new(node.backoff),
        readiness: None,
        liveness: None,
    })
}

async fn sync(node: &Node, cri: &mut Cri, state: &mut PodState, pod: &Value) {
    let uid = text(pod, "/metadata/uid");
    let stamp = k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(now_nanos()))
        .map(|t| t.strftime("%Y_%m_%d_%H_%M_%S.%f").to_string())
        .unwrap_or_default();
    match pod_volumes::prepare(node, pod, &node.pod_dir(uid), &mut state.tokens, &stamp) {
        Ok(volumes) => state.volumes = volumes,
        Err(e) => {
            record_all(node, pod, state, "ContainerCreating", &e);
            return write_status(node, state, pod);
        }
    }
    if state.sandbox.is_none() {
        match run_sandbox(node, cri, pod).await {
            Ok(sandbox) => state.sandbox = Some(sandbox),
            Err(e) => {
                record_all(node, pod, state, "ContainerCreating", &e);
                return write_status(node, state, pod);
            }
        }
    }
    for container in containers(pod) {
        sync_container(node, cri, state, pod, &container).await;
    }
    write_status(node, state, pod);
}

fn write_status(node: &Node, state: &PodState, pod: &Value) {
    let records: Vec<status::Container> = containers(pod)
        .iter()
        .filter_map(|c| state.runs.get(text(c, "/name")))
        .map(|run| run.record.clone())
        .collect();
    let observed = status::Observed {
        restart_policy: pod
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always"),
        sandbox_ready: state.sandbox.is_some(),
        pod_ip: state.sandbox.as_ref().map(|s| s.ip.as_str()),
        host_ip: &node.host_ip,
        start_time: &state.start_time,
        containers: &records,
    };
    let status = status::pod_status(&observed, &pod["status"], &now_rfc3339());
    node.write_status(pod, status);
}

async fn run_sandbox(node: &Node, cri: &mut Cri, pod: &Value) -> Result<Sandbox, String> {
    let log_dir = node.log_dir(pod);
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
    let config = spec::sandbox_config(pod, &log_dir.display().to_string());
    let id = cri
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| format!("Failed to create pod sandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let ip = if spec::host_network(pod) {
        node.host_ip.clone()
    } else {
        cri.runtime
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            })
            .await
            .map_err(|e| format!("PodSandboxStatus: {}", e.message()))?
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    };
    Ok(Sandbox { id, ip, config })
}

fn restarts(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

async fn sync_container(node: &Node, cri: &mut Cri, state: &mut PodState, pod: &Value, container: &Value) {
    let policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_owned();
    let pod_label = format!(
        "{}_{}({})",
        text(pod, "/metadata/name"),
        text(pod, "/metadata/namespace"),
        text(pod, "/metadata/uid")
    );
    let Some(ip) = state.sandbox.as_ref().map(|s| s.ip.clone()) else {
        return;
    };
    let run = run_of(node, state, container);
    if let Some(id) = run.cri_id.clone() {
        let observed = cri
            .runtime
            .container_status(api::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().status);
        let Some(observed) = observed else { return };
        match api::ContainerState::try_from(observed.state) {
            Ok(api::ContainerState::ContainerRunning) => {
                run.record.state = State::Running {
                    started_at: rfc3339(observed.started_at),
                };
                probe(cri, run, &id, &ip, pod).await;
                return;
            }
            Ok(api::ContainerState::ContainerExited) => {
                let terminated = State::Terminated {
                    exit_code: observed.exit_code,
                    reason: if observed.reason.is_empty() {
                        if observed.exit_code == 0 { "Completed" } else { "Error" }.to_owned()
                    } else {
                        observed.reason.clone()
                    },
                    message: observed.message.clone(),
                    started_at: rfc3339(observed.started_at),
                    finished_at: rfc3339(observed.finished_at),
                    container_id: format!("containerd://{id}"),
                };
                run.record.ready = false;
                run.readiness = None;
                run.liveness = None;
                if !restarts(&policy, observed.exit_code) {
                    run.record.state = terminated;
                    return;
                }
                let now = Instant::now();
                let finished = *run.finished.get_or_insert(now);
                run.record.last_state = Some(terminated);
                if let Some(wait) = run.backoff.waiting(finished, now) {
                    run.record.state = waiting(
                        "CrashLoopBackOff",
                        format!(
                            "back-off {}s restarting failed container={} pod={pod_label}",
                            wait.as_secs(),
                            run.record.name
                        ),
                    );
                    return;
                }
                run.backoff.restarted(finished, now);
                run.record.restart_count += 1;
            }
            _ => return,
        }
    }
    start_container(node, cri, state, pod, container, &ip).await;
}

async fn probe(cri: &mut Cri, run: &mut Run, id: &str, ip: &str, pod: &Value) {
    let Ok(address) = ip.parse::<std::net::IpAddr>() else {
        return;
    };
    let now = Instant::now();
    if let Some(readiness) = run.readiness.as_mut() {
        if readiness.next <= now {
            let ok = probes::http_get(address, &readiness.probe).await;
            readiness.tally.record(ok, &readiness.probe);
            readiness.next = now + readiness.probe.period;
        }
        run.record.ready = readiness.tally.passing;
    } else {
        run.record.ready = true;
    }
    if let Some(liveness) = run.liveness.as_mut()
        && liveness.next <= now
    {
        let ok = probes::http_get(address, &liveness.probe).await;
        let changed = liveness.tally.record(ok, &liveness.probe);
        liveness.next = now + liveness.probe.period;
        if changed && !liveness.tally.passing {
            tracing::info!(
                container = run.record.name,
                "failed its liveness probe, will be restarted"
            );
            let grace = pod
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            let _ = cri
                .runtime
                .stop_container(api::StopContainerRequest {
                    container_id: id.to_owned(),
                    timeout: grace,
                })
                .await;
        }
    }
}

async fn start_container(node: &Node, cri: &mut Cri, state: &mut PodState, pod: &Value, container: &Value, ip: &str) {
    let (image_id, user) = match container_inputs::ensure_image(cri, container).await {
        Ok(found) => found,
        Err(failure) => {
            run_of(node, state, container).record.state = failure;
            return;
        }
    };
    let prepared = spec::verify_run_as_non_root(pod, container, &user)
        .and_then(|()| container_inputs::environment(node, pod, container, ip))
        .and_then(|env| Ok((env, container_inputs::mounts(&state.volumes, container)?)));
    let (env, mounts) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            run_of(node, state, container).record.state = waiting("CreateContainerConfigError", e);
            return;
        }
    };
    let Some(sandbox) = state.sandbox.as_ref() else {
        return;
    };
    let (sandbox_id, sandbox_config) = (sandbox.id.clone(), sandbox.config.clone());
    let run = run_of(node, state, container);
    let log_path = format!("{}/{}.log", run.record.name, run.record.restart_count);
    let config = spec::container_config(
        pod,
        container,
        Resolved {
            image: &image_id,
            env,
            mounts,
            log_path,
            attempt: run.attempts,
        },
    );
    let created = cri
        .runtime
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id,
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        })
        .await;
    let id = match created {
        Ok(created) => created.into_inner().container_id,
        Err(e) => {
            run.record.state = waiting("CreateContainerError", e.message());
            return;
        }
    };
    run.attempts += 1;
    // kubelet keeps the previous instance (for `logs --previous`) and removes older ones.
    if let Some(older) = std::mem::replace(&mut run.previous, run.cri_id.replace(id.clone())) {
        let _ = cri
            .runtime
            .remove_container(api::RemoveContainerRequest { container_id: older })
            .await;
    }
    run.finished = None;
    run.record.container_id = format!("containerd://{id}");
    run.record.image_id = image_id;
    if let Err(e) = cri
        .runtime
        .start_container(api::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
    {
        run.record.state = waiting("RunContainerError", e.message());
        return;
    }
    let now = Instant::now();
    let schedule = |field: &str| {
        container
            .get(field)
            .and_then(|p| Probe::parse(p, container).ok())
            .map(|probe| Scheduled {
                next: now + probe.initial_delay,
                tally: if field == "readinessProbe" {
                    Tally::readiness()
                } else {
                    Tally::liveness()
                },
                probe,
            })
    };
    run.readiness = schedule("readinessProbe");
    run.liveness = schedule("livenessProbe");
    run.record.state = State::Running {
        started_at: now_rfc3339(),
    };
    run.record.ready = run.readiness.is_none();
}
