//! The server over real TLS: curl over HTTP/1.1 and HTTP/2, old protocol
//! versions refused, health and metrics, and certificates rotated the way
//! kubelet updates a mounted Secret while requests keep flowing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use prewarm_certs::{CA_CERT_FILE, TLS_CERT_FILE, TLS_KEY_FILE, write_atomically, write_self_signed};
use serde_json::Value;

fn curl_post(server: &TestServer, http: &str, path: &str, body: &Value) -> (String, Value) {
    let ca = server.cert_dir.join(CA_CERT_FILE);
    let url = format!("https://localhost:{}{path}", server.addr.port());
    let out = run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--fail-with-body",
            http,
            "--cacert",
            ca.to_str().unwrap(),
            "--header",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
            "--write-out",
            "\n%{http_version}",
            &url,
        ],
    );
    let (json, version) = out.rsplit_once('\n').unwrap();
    (version.to_owned(), serde_json::from_str(json).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_talks_http1_and_http2() {
    let server = TestServer::start(|_| {}).await;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let server = &server;
        let (negotiated, answer) =
            tokio::task::block_in_place(|| curl_post(server, flag, MUTATE_JOB, &job_review("curl-uid")));
        assert_eq!(negotiated, version);
        assert_eq!(answer["response"]["uid"], "curl-uid");
        assert_eq!(answer["response"]["allowed"], true);
    }
}

/// What `openssl s_client` reports for one handshake at a fixed protocol version.
fn openssl_handshake(server: &TestServer, version_flag: &str) -> String {
    let output = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.addr.to_string(),
            "-servername",
            "localhost",
            version_flag,
        ])
        .args([
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-CAfile",
            server.cert_dir.join(CA_CERT_FILE).to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running openssl (scripts/install-test-deps.sh installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let server = TestServer::start(|_| {}).await;
    let server = &server;
    tokio::task::block_in_place(|| {
        for old in ["-tls1", "-tls1_1"] {
            let report = openssl_handshake(server, old);
            assert!(
                report.contains("alert handshake failure"),
                "{old} was not refused:\n{report}"
            );
            assert!(report.contains("no peer certificate available"), "{old}:\n{report}");
        }
        for (flag, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
            let report = openssl_handshake(server, flag);
            assert!(
                report.contains(&format!("New, {protocol}, Cipher is")),
                "{flag}:\n{report}"
            );
            assert!(report.contains("Verify return code: 0 (ok)"), "{flag}:\n{report}");
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics_answer() {
    let server = TestServer::start(|_| {}).await;
    let mut connection = Connection::open(server.addr, client_config(&[&server.ca_pem()], &[b"http/1.1"]))
        .await
        .unwrap();
    connection.post(VALIDATE_JOB, &job_review("m1")).await.unwrap();
    let base = format!("http://{}", server.health_addr);
    let (healthz, readyz, metrics) = tokio::task::block_in_place(|| {
        (
            run("curl", &["-sf", &format!("{base}/healthz")]),
            run("curl", &["-sf", &format!("{base}/readyz")]),
            run("curl", &["-sf", &format!("{base}/metrics")]),
        )
    });
    assert_eq!((healthz.as_str(), readyz.as_str()), ("ok", "ok"));
    for expected in [
        r#"prewarm_webhook_decisions_total{kind="ImagePullJob",webhook="validate",operation="CREATE",result="allowed",dry_run="false"} 1"#,
        r#"prewarm_webhook_request_duration_seconds_bucket{le="0.00025",kind="ImagePullJob",webhook="validate",operation="CREATE"}"#,
        "prewarm_webhook_in_flight_requests 0",
        "prewarm_webhook_certificate_expiry_timestamp_seconds ",
    ] {
        assert!(metrics.contains(expected), "metrics lack {expected:?}:\n{metrics}");
    }
}

/// Writes a fresh CA and serving certificate the way kubelet swaps a Secret.
fn rotate(dir: &std::path::Path) -> String {
    let localhost = ["localhost".to_owned()];
    write_self_signed(
        dir,
        "rotated-ca",
        &localhost,
        &["127.0.0.1".parse().unwrap()],
        Duration::from_secs(3600),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_certificate_is_served_within_seconds_without_failed_requests() {
    // Polling is an hour away: only the directory watch can pick the swap up.
    let server = TestServer::start(|c| c.cert_poll_interval = Duration::from_secs(3600)).await;
    let old_ca = server.ca_pem();
    let new_ca_slot = Arc::new(std::sync::Mutex::new(String::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (succeeded, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));

    // Clients trusting both CAs, on fresh connections and on keep-alive ones.
    let mut clients = Vec::new();
    for fresh in [true, true, false, false] {
        let (stop, succeeded, failed, old_ca, slot) = (
            stop.clone(),
            succeeded.clone(),
            failed.clone(),
            old_ca.clone(),
            new_ca_slot.clone(),
        );
        let addr = server.addr;
        clients.push(tokio::spawn(async move {
            let mut connection: Option<Connection> = None;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let new_ca = slot.lock().unwrap().clone();
                let config = client_config(&[&old_ca, &new_ca], &[b"http/1.1"]);
                if fresh || connection.as_ref().is_none_or(|c| !c.is_open()) {
                    connection = Connection::open(addr, config).await.ok();
                }
                let uid = format!("rotate-{i}");
                i += 1;
                let ok = match connection.as_mut() {
                    Some(c) => matches!(c.post(VALIDATE_JOB, &job_review(&uid)).await, Ok((200, _, body)) if body["response"]["uid"] == uid),
                    None => false,
                };
                let counter = if ok { &succeeded } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new_ca = rotate(&server.cert_dir);
    *new_ca_slot.lock().unwrap() = new_ca.clone();

    // A client that trusts only the new CA connects within seconds.
    let started = Instant::now();
    let only_new = client_config(&[&new_ca], &[b"http/1.1"]);
    loop {
        if let Ok(mut c) = Connection::open(server.addr, only_new.clone()).await
            && c.post(VALIDATE_JOB, &job_review("new")).await.is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the rotated certificate was not served within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let swap_latency = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, bad) = (succeeded.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(bad, 0, "{bad} of {} requests failed during the swap", ok + bad);
    assert!(ok > 50, "too few requests to mean anything: {ok}");
    eprintln!("rotation served after {swap_latency:?}; {ok} requests, none failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_new_pair_keeps_the_old_one_serving() {
    let server = TestServer::start(|c| c.cert_poll_interval = Duration::from_millis(100)).await;
    let ca = server.ca_pem();
    let broken: [(&str, &[u8], u32); 3] = [
        (CA_CERT_FILE, ca.as_bytes(), 0o644),
        (
            TLS_CERT_FILE,
            b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
            0o644,
        ),
        (TLS_KEY_FILE, b"not a key", 0o600),
    ];
    write_atomically(&server.cert_dir, &broken).unwrap();
    let metrics_url = format!("http://{}/metrics", server.health_addr);
    let started = Instant::now();
    loop {
        let metrics = tokio::task::block_in_place(|| run("curl", &["-sf", &metrics_url]));
        if metrics.contains(r#"prewarm_webhook_certificate_reloads_total{result="failed"}"#) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no failed reload recorded:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut connection = Connection::open(server.addr, client_config(&[&ca], &[b"http/1.1"]))
        .await
        .unwrap();
    let (status, _, body) = connection.post(VALIDATE_JOB, &job_review("still")).await.unwrap();
    assert_eq!((status, &body["response"]["uid"]), (200, &Value::from("still")));
}

#[tokio::test]
async fn silent_connections_are_closed() {
    use tokio::io::AsyncReadExt;
    let server = TestServer::start(|c| c.idle_timeout = Duration::from_millis(500)).await;
    let config = client_config(&[&server.ca_pem()], &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buffer))
        .await
        .expect("the server should close a silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed too early: {:?}",
        started.elapsed()
    );
    // A busy connection is not idle: requests spaced below the timeout keep it open.
    let mut connection = Connection::open(server.addr, config).await.unwrap();
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, _, _) = connection
            .post(VALIDATE_JOB, &job_review(&format!("busy-{i}")))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
}
