//! HTTP probes with kubelet's thresholds (pkg/kubelet/prober/worker.go,
//! <https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/#configure-probes>):
//! a result changes only after `successThreshold` (default 1) or
//! `failureThreshold` (default 3) probes in a row agree; readiness starts as a
//! failure and liveness as a success; probes start after
//! `initialDelaySeconds` (0) and run every `periodSeconds` (10), each given
//! `timeoutSeconds` (1). An answer from 200 to 399 is a success.

use std::time::Duration;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub path: String,
    pub port: u16,
    pub https: bool,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(probe: &Value, field: &str, default: u64) -> Duration {
    Duration::from_secs(probe.get(field).and_then(Value::as_u64).unwrap_or(default))
}

impl Probe {
    /// The probe `probe` (a container's `readinessProbe`, say) of `container`;
    /// `Err` for what the test kubelet does not run (exec, tcpSocket, grpc).
    pub fn parse(probe: &Value, container: &Value) -> Result<Self, String> {
        let Some(get) = probe.get("httpGet") else {
            return Err("only httpGet probes are run by the test kubelet".to_owned());
        };
        let port = match &get["port"] {
            Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Value::String(name) => container["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .and_then(|p| u16::try_from(p).ok()),
            _ => None,
        }
        .ok_or_else(|| format!("httpGet.port {} names no port of the container", get["port"]))?;
        let threshold = |field: &str, default: u32| {
            probe
                .get(field)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(default)
        };
        Ok(Self {
            path: get["path"].as_str().unwrap_or("/").to_owned(),
            port,
            https: get["scheme"] == "HTTPS",
            initial_delay: seconds(probe, "initialDelaySeconds", 0),
            period: seconds(probe, "periodSeconds", 10),
            timeout: seconds(probe, "timeoutSeconds", 1),
            success_threshold: threshold("successThreshold", 1),
            failure_threshold: threshold("failureThreshold", 3),
        })
    }
}

/// The running result of one probe of one container instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    pub passing: bool,
    last: Option<bool>,
    run: u32,
}

impl Tally {
    pub fn readiness() -> Self {
        Self {
            passing: false,
            last: None,
            run: 0,
        }
    }

    pub fn liveness() -> Self {
        Self {
            passing: true,
            last: None,
            run: 0,
        }
    }

    /// Records one probe; returns whether the result changed.
    pub fn record(&mut self, ok: bool, probe: &Probe) -> bool {
        self.run = if self.last == Some(ok) { self.run + 1 } else { 1 };
        self.last = Some(ok);
        let threshold = if ok {
            probe.success_threshold
        } else {
            probe.failure_threshold
        };
        if self.passing != ok && self.run >= threshold {
            self.passing = ok;
            return true;
        }
        false
    }
}

/// One HTTP GET of `probe` against `ip`: true for a 2xx or 3xx answer in time.
pub async fn http_get(ip: std::net::IpAddr, probe: &Probe) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if probe.https {
        // The webhook and the agents serve probes over HTTP; HTTPS probes
        // (which kubelet runs without verifying) are not needed here.
        return false;
    }
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((ip, probe.port)).await.ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {ip}:{}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n",
            probe.path, probe.port
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    tokio::time::timeout(probe.timeout, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn probe(failure: u32, success: u32) -> Probe {
        Probe::parse(
            &json!({"httpGet": {"path": "/healthz", "port": "health"},
                    "failureThreshold": failure, "successThreshold": success}),
            &json!({"ports": [{"name": "health", "containerPort": 8080}]}),
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_named_ports() {
        let parsed = Probe::parse(&json!({"httpGet": {"port": 9}}), &json!({})).unwrap();
        assert_eq!(
            (
                parsed.path.as_str(),
                parsed.period,
                parsed.timeout,
                parsed.failure_threshold,
                parsed.success_threshold
            ),
            ("/", Duration::from_secs(10), Duration::from_secs(1), 3, 1)
        );
        assert_eq!(probe(3, 1).port, 8080);
        assert!(Probe::parse(&json!({"exec": {"command": ["true"]}}), &json!({})).is_err());
    }

    #[test]
    fn liveness_fails_after_failure_threshold_failures_in_a_row() {
        let p = probe(3, 1);
        let mut live = Tally::liveness();
        assert!(!live.record(false, &p));
        assert!(!live.record(false, &p));
        assert!(!live.record(true, &p), "a success breaks the run");
        assert!(!live.record(false, &p));
        assert!(!live.record(false, &p));
        assert!(live.record(false, &p));
        assert!(!live.passing);
    }

    #[test]
    fn readiness_starts_failing_and_needs_success_threshold() {
        let p = probe(3, 2);
        let mut ready = Tally::readiness();
        assert!(!ready.passing);
        assert!(!ready.record(true, &p));
        assert!(ready.record(true, &p));
        assert!(ready.passing);
    }
}
