//! The real binary as the image's user (uid 65532) with `--cert-dir` on a
//! directory laid out as kubelet lays out an emptyDir: owned by root, mode 0777,
//! or, with `fsGroup`, its group set to that group with the setgid bit (2777)
//! (DESIGN.md, "Checked on this machine, 2026-12-01"; kubelet's
//! `pkg/volume/emptydir` and `volume.SetVolumeOwnership`). The webhook must start,
//! keep its key private, serve TLS, and find the same CA after a restart.
//! Runs as root, as CI does, to lay out the volume and change user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

const IMAGE_USER: u32 = 65532;

struct Webhook {
    child: Child,
    listen: std::net::SocketAddr,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary serve --cert-dir volume` as uid/gid 65532 with only the given
/// supplementary groups, as the container runtime starts the image's user.
fn start_as_image_user(binary: &Path, volume: &Path, groups: &[u32]) -> Result<Webhook, String> {
    let groups = groups.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let mut command = Command::new("setpriv");
    command.args([&format!("--reuid={IMAGE_USER}"), &format!("--regid={IMAGE_USER}")]);
    if groups.is_empty() {
        command.arg("--clear-groups");
    } else {
        command.arg(format!("--groups={groups}"));
    }
    let mut child = command
        .arg(binary)
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(["--health-listen", "127.0.0.1:0", "--cert-dir"])
        .arg(volume)
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) runs the binary");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if entry["fields"]["message"] == "serving admission webhooks" {
            let listen = entry["fields"]["listen"].as_str().unwrap().parse().unwrap();
            std::thread::spawn(move || lines.for_each(drop));
            return Ok(Webhook { child, listen });
        }
        seen.push(line);
    }
    let status = child.wait().unwrap();
    Err(format!(
        "the webhook exited ({status}) before serving:\n{}",
        seen.join("\n")
    ))
}

/// A directory as kubelet makes an emptyDir: root's, 0777; with an fsGroup, that
/// group and the setgid bit. Created here by root, never handed to the image's user.
fn empty_dir(parent: &Path, name: &str, fs_group: Option<u32>) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    let mode = match fs_group {
        Some(group) => {
            std::os::unix::fs::lchown(&dir, None, Some(group)).unwrap();
            0o2777
        }
        None => 0o777,
    };
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_on_an_empty_dir_as_kubelet_lays_it_out() {
    assert_eq!(
        std::fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test lays out volumes as kubelet does and changes user: run it as root (CI does)"
    );
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A copy the image's user may execute wherever the checkout is (say under /root).
    let binary = scratch.path().join("prewarm-webhook");
    std::fs::copy(env!("CARGO_BIN_EXE_prewarm-webhook"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();

    for (name, fs_group, groups) in [
        ("no-fs-group", None, &[][..]),
        ("fs-group", Some(IMAGE_USER), &[IMAGE_USER][..]),
    ] {
        let volume = empty_dir(scratch.path(), name, fs_group);
        let before = std::fs::symlink_metadata(&volume).unwrap();
        let webhook = start_as_image_user(&binary, &volume, groups).unwrap_or_else(|e| panic!("{name}: {e}"));

        // The volume is left as kubelet made it; the key is in a directory of the process's own.
        let after = std::fs::symlink_metadata(&volume).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), mode(&volume)),
            (before.uid(), before.gid(), before.mode() & 0o7777)
        );
        let own = volume.join(format!("prewarm-{IMAGE_USER}"));
        let own_meta = std::fs::symlink_metadata(&own).unwrap();
        assert!(own_meta.is_dir(), "{name}");
        // Private to the process (a setgid parent passes its bit on to the subdirectory, harmlessly).
        assert_eq!((own_meta.uid(), mode(&own) & 0o777), (IMAGE_USER, 0o700), "{name}");
        let key = std::fs::metadata(own.join("tls.key")).unwrap();
        assert_eq!((key.uid(), key.mode() & 0o777), (IMAGE_USER, 0o600), "{name}");

        // It serves TLS with the generated certificate.
        let ca = std::fs::read_to_string(own.join("ca.crt")).unwrap();
        let mut connection = Connection::open(webhook.listen, client_config(&[&ca], &[b"http/1.1"]))
            .await
            .unwrap();
        let (status, _, answer) = connection
            .post(VALIDATE_JOB, &job_review("kubelet-volume"))
            .await
            .unwrap();
        assert_eq!(status, 200, "{name}: {answer}");
        assert_eq!(answer["response"]["uid"], "kubelet-volume", "{name}: {answer}");
        drop(connection);

        // A restarted container finds its certificate in the volume, which outlives it.
        drop(webhook);
        let _again = start_as_image_user(&binary, &volume, groups).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            std::fs::read_to_string(own.join("ca.crt")).unwrap(),
            ca,
            "{name}: the CA was regenerated"
        );
    }

    // Another user's directory (made first under a shared /tmp, say) is still refused, naming the owner.
    let foreign = scratch.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = start_as_image_user(&binary, &foreign, &[])
        .err()
        .expect("a foreign directory is refused");
    assert!(refused.contains("owned by uid 65534"), "{refused}");
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        0,
        "nothing is left behind"
    );
}
