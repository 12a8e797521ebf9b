//! SIGTERM under load, against the real binary: readiness turns false at once,
//! requests keep being answered through the drain window (each with
//! `Connection: close`), a request still being received when the listener
//! closes is answered, none is lost, and the process exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use common::*;
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_rustls::TlsConnector;

const DRAIN: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("certs");
    let mut child = Command::new(env!("CARGO_BIN_EXE_prewarm-webhook"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .args(["--feature-gates", "ImagePullJobGate=true", "--shutdown-delay", "1500ms"])
        .arg("--cert-dir")
        .arg(&cert_dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let (addr, health): (std::net::SocketAddr, String) = loop {
        let line = logs.next().expect("the server exited before serving").unwrap();
        let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if entry["fields"]["message"] == "serving admission webhooks" {
            break (
                entry["fields"]["listen"].as_str().unwrap().parse().unwrap(),
                entry["fields"]["health_listen"].as_str().unwrap().to_owned(),
            );
        }
    };
    let log_lines = std::thread::spawn(move || logs.map_while(Result::ok).collect::<Vec<_>>());
    let ca = std::fs::read_to_string(cert_dir.join("ca.crt")).unwrap();
    let config = client_config(&[&ca], &[b"http/1.1"]);

    // A request whose body is still arriving when the listener closes.
    let (mut body_tx, body) = Channel::<Bytes>::new(2);
    let slow = {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(config.clone())
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post(VALIDATE_JOB)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        tokio::spawn(async move {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null)))
        })
    };
    let slow_body = serde_json::to_vec(&job_review("slow")).unwrap();
    let (first, second) = slow_body.split_at(slow_body.len() / 2);
    body_tx.send_data(Bytes::copy_from_slice(first)).await.unwrap();

    let terminated = Arc::new(AtomicBool::new(false));
    let new_connections = Arc::new(AtomicBool::new(true));
    let (answered, answered_after_term, closed, lost) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut clients = Vec::new();
    for client in 0..6 {
        let (config, terminated, new_connections) = (config.clone(), terminated.clone(), new_connections.clone());
        let (answered, answered_after_term, closed, lost) = (
            answered.clone(),
            answered_after_term.clone(),
            closed.clone(),
            lost.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut connection: Option<Connection> = None;
            for i in 0.. {
                if connection.as_ref().is_none_or(|c| !c.is_open()) {
                    // Once endpoints have dropped the replica, no new connections reach it.
                    if !new_connections.load(Ordering::Relaxed) {
                        return;
                    }
                    connection = Some(
                        Connection::open(addr, config.clone())
                            .await
                            .expect("connecting during the drain window"),
                    );
                }
                let Some(open) = connection.as_mut() else { continue };
                let uid = format!("load-{client}-{i}");
                let after_term = terminated.load(Ordering::Relaxed);
                match open.post(VALIDATE_JOB, &job_review(&uid)).await {
                    Ok((200, closes, body)) if body["response"]["uid"] == uid.as_str() => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        if after_term {
                            answered_after_term.fetch_add(1, Ordering::Relaxed);
                            assert!(closes, "responses after SIGTERM must close their connection");
                        }
                        if closes {
                            closed.fetch_add(1, Ordering::Relaxed);
                            connection = None;
                        }
                    }
                    other => {
                        lost.fetch_add(1, Ordering::Relaxed);
                        panic!("request {uid} lost: {other:?}");
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let readyz = format!("http://{health}/readyz");
    let ready_before =
        tokio::task::block_in_place(|| run("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &readyz]));
    assert_eq!(ready_before, "200");
    run("kill", &["-TERM", &child.id().to_string()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready_during =
        tokio::task::block_in_place(|| run("curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", &readyz]));
    assert_eq!(ready_during, "503", "readiness must turn false at SIGTERM");
    // From here on the server is draining: every answer must close its connection.
    terminated.store(true, Ordering::Relaxed);

    tokio::time::sleep(DRAIN - Duration::from_millis(500)).await;
    new_connections.store(false, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    // The drain window is over: the listener is closed, the slow request is still open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener should be closed after the drain window"
    );
    body_tx.send_data(Bytes::copy_from_slice(second)).await.unwrap();
    drop(body_tx);
    let (status, body) = slow.await.unwrap().expect("the in-flight request was dropped");
    assert_eq!((status, &body["response"]["uid"]), (200, &Value::from("slow")));

    let exit = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(exit.success(), "exit status {exit}");
    let logs = log_lines.join().unwrap();
    assert!(logs.iter().any(|l| l.contains("\"stopped\"")), "{logs:?}");
    let (answered, after, closed, lost) = (
        answered.load(Ordering::Relaxed),
        answered_after_term.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
    );
    assert_eq!(lost, 0);
    assert!(after > 10, "too few requests during the drain window: {after}");
    assert!(closed >= after, "every response after SIGTERM closes its connection");
    eprintln!("{answered} requests answered, {after} after SIGTERM, none lost");
}

/// A first Ctrl-C starts the drain (here 30 s); a second one exits at once.
#[test]
fn a_second_ctrl_c_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_prewarm-webhook"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .args(["--shutdown-delay", "30s"])
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let interrupt = || {
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    loop {
        let line = logs.next().expect("the server exited before serving").unwrap();
        if line.contains("serving admission webhooks") {
            break;
        }
    }
    interrupt();
    loop {
        let line = logs.next().expect("the server exited before draining").unwrap();
        if line.contains("shutting down") || line.contains("drain") {
            break;
        }
    }
    interrupt();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still draining after a second Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
}
