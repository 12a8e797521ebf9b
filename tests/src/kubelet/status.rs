//! A Pod's status from what the kubelet observed, as kubelet computes it:
//! `getPhase` and `generateAPIPodStatus` in pkg/kubelet/kubelet_pods.go and the
//! conditions of pkg/kubelet/status/generate.go
//! (<https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/>).

use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, …
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        /// `Completed` for 0, `Error` otherwise, or the runtime's (`OOMKilled`).
        reason: String,
        message: String,
        started_at: String,
        finished_at: String,
        container_id: String,
    },
}

impl State {
    fn to_json(&self) -> Value {
        match self {
            Self::Waiting { reason, message } => {
                let mut waiting = json!({"reason": reason});
                if !message.is_empty() {
                    waiting["message"] = json!(message);
                }
                json!({"waiting": waiting})
            }
            Self::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            Self::Terminated {
                exit_code,
                reason,
                message,
                started_at,
                finished_at,
                container_id,
            } => {
                let mut terminated = json!({"exitCode": exit_code, "reason": reason,
                    "startedAt": started_at, "finishedAt": finished_at, "containerID": container_id});
                if !message.is_empty() {
                    terminated["message"] = json!(message);
                }
                json!({"terminated": terminated})
            }
        }
    }
}

/// The kubelet's record of one container of the Pod's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// `containerd://<id>` of the current instance; empty before the first.
    pub container_id: String,
    pub state: State,
    /// The previous instance's end, once it restarted.
    pub last_state: Option<State>,
    pub restart_count: u32,
    /// Running and, where a readiness probe is set, passing it.
    pub ready: bool,
}

#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub restart_policy: &'a str,
    pub sandbox_ready: bool,
    pub pod_ip: Option<&'a str>,
    pub host_ip: &'a str,
    pub start_time: &'a str,
    pub containers: &'a [Container],
}

/// kubelet's `getPhase` for a Pod without init containers.
pub fn phase(observed: &Observed<'_>) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in observed.containers {
        match &container.state {
            State::Running { .. } => running += 1,
            State::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if container.last_state.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    match () {
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        _ if stopped > 0 => match observed.restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        },
        _ => "Pending",
    }
}

/// One condition; `lastTransitionTime` is kept from `previous` while the
/// status does not change.
fn condition(kind: &str, ok: bool, reason: &str, message: &str, previous: &Value, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let old = previous.as_array().and_then(|c| c.iter().find(|c| c["type"] == kind));
    let since = match old {
        Some(old) if old["status"] == status => old["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut condition = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if !ok {
        condition["reason"] = json!(reason);
        condition["message"] = json!(message);
    }
    condition
}

/// The Pod's `status`; `previous` is its current one (for transition times
/// and the scheduler's PodScheduled condition).
pub fn pod_status(observed: &Observed<'_>, previous: &Value, now: &str) -> Value {
    let conditions_before = &previous["conditions"];
    let unready: Vec<&str> = observed
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = unready.is_empty();
    let not_ready = format!("containers with unready status: [{}]", unready.join(" "));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            observed.sandbox_ready,
            "",
            "",
            conditions_before,
            now,
        ),
        condition("Initialized", true, "", "", conditions_before, now),
        condition(
            "Ready",
            containers_ready,
            "ContainersNotReady",
            &not_ready,
            conditions_before,
            now,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            "ContainersNotReady",
            &not_ready,
            conditions_before,
            now,
        ),
    ];
    if let Some(scheduled) = conditions_before
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
    {
        conditions.push(scheduled.clone());
    }
    let statuses: Vec<Value> = observed
        .containers
        .iter()
        .map(|c| {
            let mut status = json!({
                "name": c.name,
                "image": c.image,
                "imageID": c.image_id,
                "state": c.state.to_json(),
                "lastState": c.last_state.as_ref().map_or(json!({}), State::to_json),
                "ready": c.ready,
                "restartCount": c.restart_count,
                "started": matches!(c.state, State::Running { .. }),
            });
            if !c.container_id.is_empty() {
                status["containerID"] = json!(c.container_id);
            }
            status
        })
        .collect();
    let mut status = json!({
        "phase": phase(observed),
        "conditions": conditions,
        "hostIP": observed.host_ip,
        "hostIPs": [{"ip": observed.host_ip}],
        "startTime": observed.start_time,
        "containerStatuses": statuses,
    });
    if let Some(ip) = observed.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(qos) = previous.get("qosClass") {
        status["qosClass"] = qos.clone();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: State, last: Option<State>, ready: bool) -> Container {
        Container {
            name: "app".into(),
            image: "img".into(),
            image_id: String::new(),
            container_id: "containerd://1".into(),
            state,
            last_state: last,
            restart_count: u32::from(ready),
            ready,
        }
    }

    fn exited(code: i32) -> State {
        State::Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at: "t0".into(),
            finished_at: "t1".into(),
            container_id: "containerd://1".into(),
        }
    }

    fn waiting(reason: &str) -> State {
        State::Waiting {
            reason: reason.into(),
            message: String::new(),
        }
    }

    fn phase_of(policy: &str, containers: &[Container]) -> &'static str {
        phase(&Observed {
            restart_policy: policy,
            sandbox_ready: true,
            pod_ip: None,
            host_ip: "10.0.0.1",
            start_time: "t",
            containers,
        })
    }

    /// The cases of kubelet's TestPodPhaseWithRestartAlways/Never/OnFailure.
    #[test]
    fn phases_as_kubelet_computes_them() {
        let running = State::Running { started_at: "t".into() };
        assert_eq!(
            phase_of("Always", &[container(waiting("ContainerCreating"), None, false)]),
            "Pending"
        );
        assert_eq!(phase_of("Always", &[container(running.clone(), None, true)]), "Running");
        assert_eq!(
            phase_of(
                "Always",
                &[container(waiting("CrashLoopBackOff"), Some(exited(1)), false)]
            ),
            "Running",
            "a container restarting is stopped, not waiting"
        );
        assert_eq!(phase_of("Always", &[container(exited(0), None, false)]), "Running");
        assert_eq!(phase_of("Never", &[container(exited(0), None, false)]), "Succeeded");
        assert_eq!(phase_of("Never", &[container(exited(2), None, false)]), "Failed");
        assert_eq!(phase_of("OnFailure", &[container(exited(2), None, false)]), "Running");
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let containers = [container(State::Running { started_at: "t".into() }, None, false)];
        let observed = Observed {
            restart_policy: "Always",
            sandbox_ready: true,
            pod_ip: Some("10.213.0.5"),
            host_ip: "10.213.0.1",
            start_time: "t",
            containers: &containers,
        };
        let first = pod_status(&observed, &json!({}), "T1");
        let ready = |s: &Value| {
            s["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()
                .clone()
        };
        assert_eq!(ready(&first)["status"], "False");
        assert_eq!(ready(&first)["message"], "containers with unready status: [app]");
        let second = pod_status(&observed, &first, "T2");
        assert_eq!(ready(&second)["lastTransitionTime"], "T1");
        let ready_containers = [container(State::Running { started_at: "t".into() }, None, true)];
        let third = pod_status(
            &Observed {
                containers: &ready_containers,
                ..observed
            },
            &second,
            "T3",
        );
        assert_eq!(ready(&third)["status"], "True");
        assert_eq!(ready(&third)["lastTransitionTime"], "T3");
        assert_eq!(third["podIP"], "10.213.0.5");
    }
}
