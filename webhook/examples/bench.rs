//! Throughput and latency of ImagePullJob mutate + validate over TLS keep-alive
//! HTTP/1.1, beside a do-nothing rustls + hyper server measured in the same run:
//!
//! ```sh
//! cargo build --release -p prewarm-webhook
//! cargo run --release -p prewarm-webhook --example bench -- [CONNECTIONS] [SECONDS]
//! ```
//!
//! Each server runs in its own child process, with the same certificate and TLS
//! settings: the real `prewarm-webhook serve` binary (logging at info, stderr to
//! /dev/null), and this program re-executed as the do-nothing server. The load
//! comes from this process. Phase 1 drives each server flat out with CONNECTIONS keep-alive
//! connections; phase 2 offers prewarm half of its phase-1 rate and reports the
//! latency there. Prewarm's RSS is read from /proc at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "shared/review_body.rs"]
mod review_body;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prewarm_certs::write_self_signed;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--serve-baseline") => serve_baseline(&args[2], &args[3]),
        _ => {
            let connections = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
            let seconds = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
            drive(connections, Duration::from_secs(seconds));
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The do-nothing server: same TLS stack and settings, reads the body, answers a constant.
fn serve_baseline(cert_dir: &str, port: &str) {
    runtime().block_on(async {
        let loaded = prewarm_webhook::tls::load(cert_dir.as_ref()).unwrap();
        let store = Arc::new(prewarm_webhook::tls::CertStore::new(loaded));
        let acceptor = tokio_rustls::TlsAcceptor::from(prewarm_webhook::tls::server_config(store).unwrap());
        let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await.unwrap();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    let answer = Bytes::from_static(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}"#);
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(answer)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `prewarm-webhook` binary, built beside this example.
fn prewarm_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(|examples| examples.parent())
        .unwrap()
        .join("prewarm-webhook");
    assert!(
        binary.exists(),
        "{} is missing: build it first with cargo build --release -p prewarm-webhook",
        binary.display()
    );
    binary
}

fn start(role: &str, cert_dir: &std::path::Path) -> ChildServer {
    let port = free_port();
    let mut command = if role == "prewarm" {
        let mut command = Command::new(prewarm_binary());
        command.args([
            "serve",
            "--feature-gates",
            "ImagePullJobGate=true",
            "--health-listen",
            "127.0.0.1:0",
        ]);
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cert-dir")
            .arg(cert_dir);
        command
    } else {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args([role, cert_dir.to_str().unwrap(), &port.to_string()]);
        command
    };
    let child = command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let server = ChildServer {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(server.addr).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{role} did not start");
}

fn review(operation_uid: usize) -> Bytes {
    Bytes::from(serde_json::to_vec(&review_body::review(&format!("bench-{operation_uid}"))).unwrap())
}

const PATHS: [&str; 2] = [
    "/mutate-apps-kruise-io-imagepulljob",
    "/validate-apps-kruise-io-imagepulljob",
];

/// Drives `addr` with `connections` keep-alive connections for `duration`; each
/// connection waits `pace` between request starts (zero: flat out). Returns
/// request latencies.
async fn load(addr: SocketAddr, ca: &str, connections: usize, duration: Duration, pace: Duration) -> Vec<Duration> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..64).map(review).collect());
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (connector, bodies) = (connector.clone(), bodies.clone());
            tokio::spawn(async move {
                let tcp = TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
                let (mut sender, connection) = http1::handshake(TokioIo::new(tls)).await.unwrap();
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                let mut next = Instant::now() + pace.mul_f64(c as f64 / connections as f64);
                let mut i = c;
                while Instant::now() < deadline {
                    if !pace.is_zero() {
                        tokio::time::sleep_until(next.into()).await;
                        next += pace;
                    }
                    let request = hyper::Request::post(PATHS[i % 2])
                        .header("host", "localhost")
                        .header("content-type", "application/json")
                        .body(Full::new(bodies[i % bodies.len()].clone()))
                        .unwrap();
                    i += 1;
                    let started = Instant::now();
                    sender.ready().await.unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(name: &str, mut latencies: Vec<Duration>, duration: Duration) -> f64 {
    latencies.sort();
    let rate = latencies.len() as f64 / duration.as_secs_f64();
    println!(
        "{name:<28} {rate:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   ({} requests)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len()
    );
    rate
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn drive(connections: usize, duration: Duration) {
    let dir = tempfile_dir();
    let localhost = ["localhost".to_owned()];
    let ca = write_self_signed(
        &dir,
        "bench-ca",
        &localhost,
        &["127.0.0.1".parse().unwrap()],
        Duration::from_secs(3600),
    )
    .unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{connections} keep-alive TLS 1.3 HTTP/1.1 connections, {duration:?} per phase, {cpus} CPUs; ImagePullJob mutate and validate alternating"
    );

    let rt = runtime();
    let baseline = start("--serve-baseline", &dir);
    let warm = Duration::from_secs(1);
    rt.block_on(load(baseline.addr, &ca, connections, warm, Duration::ZERO));
    let baseline_rate = report(
        "do-nothing rustls+hyper",
        rt.block_on(load(baseline.addr, &ca, connections, duration, Duration::ZERO)),
        duration,
    );
    drop(baseline);

    let prewarm = start("prewarm", &dir);
    rt.block_on(load(prewarm.addr, &ca, connections, warm, Duration::ZERO));
    let prewarm_rate = report(
        "prewarm-webhook (flat out)",
        rt.block_on(load(prewarm.addr, &ca, connections, duration, Duration::ZERO)),
        duration,
    );
    let pace = Duration::from_secs_f64(connections as f64 / (prewarm_rate / 2.0));
    let half = rt.block_on(load(prewarm.addr, &ca, connections, duration, pace));
    report("prewarm-webhook (half load)", half, duration);
    let pid = prewarm.child.id();
    println!(
        "prewarm RSS: {} KiB now, {} KiB peak",
        rss_kib(pid, "VmRSS:"),
        rss_kib(pid, "VmHWM:")
    );
    println!(
        "ratio prewarm / do-nothing: {:.1} %",
        100.0 * prewarm_rate / baseline_rate
    );
    drop(prewarm);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("prewarm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
