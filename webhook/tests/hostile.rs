//! The real `prewarm-webhook serve` binary under small-scale versions of the
//! attacks in BENCHMARKS.md ("under attack"): each test measures the process's
//! peak RSS (VmHWM) and CPU from /proc, and keeps a legitimate client posting
//! alongside, which must keep getting answers.
//!
//! `HOSTILE_SCALE=full` runs the first three at the full scale of the original
//! attack and prints the figures (BENCHMARKS.md):
//! `HOSTILE_SCALE=full cargo test --release -p prewarm-webhook --test hostile -- --nocapture --test-threads 1`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{Connection, VALIDATE_JOB, client_config, job_review};
use http_body_util::channel::Channel;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The webhook binary, started on loopback ports with its own certificates.
struct Webhook {
    child: Child,
    addr: SocketAddr,
    health: SocketAddr,
    ca: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Webhook {
    /// `wrapper` runs the binary under another command (such as `prlimit`).
    fn start(wrapper: &[&str], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, health_port) = (free_port(), free_port());
        let log = dir.path().join("webhook.log");
        let cert_dir = dir.path().join("certs");
        let binary = env!("CARGO_BIN_EXE_prewarm-webhook");
        let listen = format!("127.0.0.1:{port}");
        let health_listen = format!("127.0.0.1:{health_port}");
        let mut args: Vec<&str> = wrapper.to_vec();
        args.extend([
            binary,
            "serve",
            "--listen",
            &listen,
            "--health-listen",
            &health_listen,
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            "--feature-gates",
            "ImagePullJobGate=true",
        ]);
        args.extend(extra);
        let child = Command::new(args[0])
            .args(&args[1..])
            // As the shipped manifests run it: freed memory goes back at once.
            .env("MIMALLOC_PURGE_DELAY", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !cert_dir.join("ca.crt").exists() {
            assert!(started.elapsed() < Duration::from_secs(30), "the webhook did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).unwrap();
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            health: SocketAddr::from(([127, 0, 0, 1], health_port)),
            ca,
            log,
            _dir: dir,
        }
    }

    fn status_field_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap()
    }

    fn peak_rss_mib(&self) -> u64 {
        self.status_field_kib("VmHWM:") / 1024
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tls(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        client_config(&[&self.ca], alpn)
    }

    async fn tls_stream(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        TlsConnector::from(self.tls(alpn))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the legitimate client saw: answers with 200 (and their latencies), and anything else.
#[derive(Debug, Default)]
struct Seen {
    latencies: Vec<Duration>,
    failed: usize,
}

impl Seen {
    fn p99(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(sorted.len() * 99 / 100).copied().unwrap_or_default()
    }
}

/// A legitimate client posting one valid review every 100 ms on its own
/// connection until `stop`.
fn legitimate_client(webhook: &Webhook, stop: Arc<AtomicUsize>) -> tokio::task::JoinHandle<Seen> {
    let (addr, config) = (webhook.addr, webhook.tls(&[b"http/1.1"]));
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut connection = Connection::open(addr, config.clone()).await.unwrap();
        while stop.load(Ordering::SeqCst) == 0 {
            let started = Instant::now();
            let result = tokio::time::timeout(
                Duration::from_secs(5),
                connection.post(VALIDATE_JOB, &job_review("legit")),
            )
            .await;
            match result {
                Ok(Ok((200, _, body))) if body["response"]["allowed"] == true => seen.latencies.push(started.elapsed()),
                _ => {
                    seen.failed += 1;
                    connection = Connection::open(addr, config.clone()).await.unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    })
}

async fn finish(client: tokio::task::JoinHandle<Seen>, stop: &AtomicUsize) -> Seen {
    stop.store(1, Ordering::SeqCst);
    client.await.unwrap()
}

/// Small scale for the test suite, or the original attack's scale.
fn full_scale() -> bool {
    std::env::var("HOSTILE_SCALE").is_ok_and(|s| s == "full")
}

fn report(scenario: &str, webhook: &Webhook, seen: &Seen) {
    println!(
        "{scenario}: peak RSS {} MiB; legitimate client: {} answered, {} refused, p99 {:?}",
        webhook.peak_rss_mib(),
        seen.latencies.len(),
        seen.failed,
        seen.p99()
    );
}

/// 64 KiB of a JSON string's inside: bodies are built from one shared chunk.
fn chunk() -> Bytes {
    Bytes::from(vec![b'a'; 64 * 1024])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http2_streams_withholding_their_last_byte_stay_within_the_budget() {
    const BODY: usize = 6 * 1024 * 1024;
    let webhook = Webhook::start(&[], &[]);
    let stop = Arc::new(AtomicUsize::new(0));
    let legit = legitimate_client(&webhook, stop.clone());
    let mut attackers = Vec::new();
    let mut senders = Vec::new();
    let (connections, streams) = if full_scale() { (8, 200) } else { (2, 64) };
    for _ in 0..connections {
        let tls = webhook.tls_stream(&[b"h2"]).await;
        let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        for _ in 0..streams {
            let (mut body_tx, body) = Channel::<Bytes>::new(1);
            let request = hyper::Request::post(VALIDATE_JOB)
                .header("content-type", "application/json")
                .header("content-length", BODY.to_string())
                .body(body)
                .unwrap();
            let mut sender = sender.clone();
            attackers.push(tokio::spawn(async move {
                let _ = sender.ready().await;
                let _ = sender.send_request(request).await;
            }));
            senders.push(tokio::spawn(async move {
                let mut sent = 0;
                while sent + 64 * 1024 < BODY {
                    if body_tx.send_data(chunk()).await.is_err() {
                        return;
                    }
                    sent += 64 * 1024;
                }
                // The last bytes are never sent; the sender stays open.
                std::future::pending::<()>().await;
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let peak = webhook.peak_rss_mib();
    let seen = finish(legit, &stop).await;
    senders.iter().for_each(|s| s.abort());
    attackers.iter().for_each(|a| a.abort());
    report(
        &format!("HTTP/2, {connections} connections x {streams} streams x 6 MiB"),
        &webhook,
        &seen,
    );
    assert!(peak < 160, "peak RSS {peak} MiB");
    assert_eq!(seen.failed, 0, "the legitimate client was refused: {seen:?}");
    assert!(seen.latencies.len() >= 20, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http1_bodies_in_tiny_records_do_not_amplify() {
    const BODY: usize = 6_900_000;
    let webhook = Webhook::start(&[], &[]);
    let stop = Arc::new(AtomicUsize::new(0));
    let legit = legitimate_client(&webhook, stop.clone());
    let mut attackers = Vec::new();
    let connections = if full_scale() { 100 } else { 12 };
    for _ in 0..connections {
        let mut tls = webhook.tls_stream(&[b"http/1.1"]).await;
        attackers.push(tokio::spawn(async move {
            let head = format!(
                "POST {VALIDATE_JOB} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {BODY}\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).await?;
            let record = [b'a'; 1024];
            for _ in 0..BODY / 1024 {
                tls.write_all(&record).await?;
                tls.flush().await?;
            }
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let peak = webhook.peak_rss_mib();
    let seen = finish(legit, &stop).await;
    attackers.iter().for_each(|a| a.abort());
    report(
        &format!("HTTP/1.1, {connections} bodies of 6.9 MB in 1 KiB records"),
        &webhook,
        &seen,
    );
    assert!(peak < 160, "peak RSS {peak} MiB");
    assert_eq!(seen.failed, 0, "the legitimate client was refused: {seen:?}");
    // Once the burst is over the memory goes back to the system (mimalloc purges
    // freed pages at once with MIMALLOC_PURGE_DELAY=0; with its default delay an
    // idle thread may keep them).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = webhook.status_field_kib("VmRSS:") / 1024;
    println!("after the burst: RSS {idle} MiB");
    assert!(idle < 48, "RSS {idle} MiB 3 s after the burst (peak {peak} MiB)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_problems_make_a_small_answer_and_stall_no_one() {
    let webhook = Webhook::start(&[], &[]);
    let stop = Arc::new(AtomicUsize::new(0));
    let legit = legitimate_client(&webhook, stop.clone());
    let mut review = job_review("huge");
    review["request"]["object"]["spec"]["selector"]["names"] = json!(vec!["n"; 1_000_000]);
    let body = serde_json::to_vec(&review).unwrap();
    assert!(body.len() > 3_000_000);
    let mut connection = Connection::open(webhook.addr, webhook.tls(&[b"http/1.1"]))
        .await
        .unwrap();
    let started = Instant::now();
    let (status, _, answer) = connection.post(VALIDATE_JOB, &review).await.unwrap();
    let took = started.elapsed();
    let seen = finish(legit, &stop).await;
    report("one review with a million duplicate node names", &webhook, &seen);
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false);
    let causes = answer["response"]["status"]["details"]["causes"].as_array().unwrap();
    assert_eq!(causes.len(), 101, "the first 100 errors and a count");
    assert!(
        causes[100]["message"]
            .as_str()
            .unwrap()
            .contains("more errors, not listed")
    );
    assert!(serde_json::to_vec(&answer).unwrap().len() < 64 * 1024);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(webhook.peak_rss_mib() < 256, "{} MiB", webhook.peak_rss_mib());
    assert_eq!(seen.failed, 0, "the legitimate client was refused: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_file_limit_wait_instead_of_spinning() {
    let webhook = Webhook::start(&["prlimit", "--nofile=128:128", "--"], &[]);
    let cpu_before = webhook.cpu_seconds();
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(tcp) = TcpStream::connect(webhook.addr).await {
            held.push(tcp);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = webhook.cpu_seconds() - cpu_before;
    let log = webhook.log();
    drop(held);
    assert!(
        cpu < 1.0,
        "{cpu} CPU seconds in 3 s with 200 connections at a 128-descriptor limit"
    );
    assert!(log.len() < 20_000, "{} bytes of log", log.len());
    assert!(log.contains("--max-connections lowered"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_and_silent_connections_are_closed() {
    let webhook = Webhook::start(&[], &[]);
    // An h2 client that sends its preface one byte every 300 ms never reaches a request.
    let mut trickle = webhook.tls_stream(&[b"h2"]).await;
    let silent_health = TcpStream::connect(webhook.health).await.unwrap();
    let started = Instant::now();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut closed_after = None;
    for byte in preface.iter().cycle().take(100) {
        if trickle.write_all(&[*byte]).await.is_err() || trickle.flush().await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buffer = [0u8; 256];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(300), trickle.read(&mut buffer)).await {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the trickling connection was never closed");
    assert!(closed_after < Duration::from_secs(13), "closed after {closed_after:?}");

    let mut silent_health = silent_health;
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(15), silent_health.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent health connection stayed open: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_lines_are_rate_limited() {
    // A low limit, so that even a slow machine sends faster than it.
    let webhook = Webhook::start(&[], &["--max-decision-lines-per-second=10"]);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut connection = Connection::open(webhook.addr, webhook.tls(&[b"http/1.1"]))
            .await
            .unwrap();
        clients.push(tokio::spawn(async move {
            for i in 0..100 {
                let (status, _, _) = connection
                    .post(VALIDATE_JOB, &job_review(&format!("r{i}")))
                    .await
                    .unwrap();
                assert_eq!(status, 200);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let seconds = started.elapsed().as_secs() + 1;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // One more decision after a quiet second says how many were left out.
    let mut connection = Connection::open(webhook.addr, webhook.tls(&[b"http/1.1"]))
        .await
        .unwrap();
    connection.post(VALIDATE_JOB, &job_review("last")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = webhook.log();
    let lines = log.lines().filter(|l| l.contains("admission decision")).count() as u64;
    assert!(lines <= 10 * seconds + 1, "{lines} decision lines in {seconds} s");
    assert!(lines < 401, "every decision was logged");
    assert!(
        log.lines().any(|l| l.contains("uid=last") && !l.contains("unlogged=0")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_negotiated_h2_is_not_served_http1() {
    let webhook = Webhook::start(&[], &[]);
    let mut tls = webhook.tls_stream(&[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let request = format!(
        "GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\nPOST {VALIDATE_JOB} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1"), "{}", String::from_utf8_lossy(&answer));
}
