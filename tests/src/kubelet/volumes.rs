//! Pod volumes laid out on the node as kubelet lays them out, under
//! `<node root>/var/lib/kubelet/pods/<uid>/volumes/<plugin>/<name>`:
//! - emptyDir: a directory owned by root, mode 0777 (`perm` in
//!   pkg/volume/emptydir/empty_dir.go); with `fsGroup`, group-owned by it with
//!   the setgid bit (`SetVolumeOwnership` in pkg/volume/volume_linux.go), so
//!   0777 | setgid = 2777; `medium: Memory` is a tmpfs;
//! - configMap, secret and projected volumes: written by kubelet's
//!   AtomicWriter (pkg/volume/util/atomic_writer.go): the files in a
//!   timestamped directory `..<time>`, a `..data` symlink to it swapped with a
//!   rename, and one symlink per top-level name pointing into `..data`; modes
//!   from `defaultMode` (0644 when unset), group `fsGroup` with group read;
//! - hostPath: the path on the node, checked against its `type`
//!   (<https://kubernetes.io/docs/concepts/storage/volumes/#hostpath>).
//!
//! Several test nodes share one machine, so each node has a root directory and
//! a hostPath `/x` is `<node root>/x`: the one place the test kubelet differs.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

const SETGID: u32 = 0o2000;

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// The emptyDir `name` of the Pod whose directory is `pod_dir`.
pub fn empty_dir(pod_dir: &Path, name: &str, fs_group: Option<u32>, memory: bool) -> Result<PathBuf, String> {
    let dir = pod_dir.join("volumes/kubernetes.io~empty-dir").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    if memory && !is_mount_point(&dir) {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&dir)
            .status()
            .map_err(|e| io("mounting a tmpfs on", &dir, e))?;
        if !status.success() {
            return Err(format!("mounting a tmpfs on {}: {status}", dir.display()));
        }
    }
    std::os::unix::fs::chown(&dir, Some(0), fs_group).map_err(|e| io("chown", &dir, e))?;
    let mode = 0o777 | fs_group.map_or(0, |_| SETGID);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).map_err(|e| io("chmod", &dir, e))?;
    Ok(dir)
}

fn is_mount_point(dir: &Path) -> bool {
    mounts_under(dir).iter().any(|target| Path::new(target) == dir)
}

/// The mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|target| target.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

pub fn has_mounts_under(dir: &Path) -> bool {
    !mounts_under(dir).is_empty()
}

/// Unmounts what `empty_dir` mounted under `pod_dir` and removes the directory.
pub fn remove_pod_dir(pod_dir: &Path) {
    for target in mounts_under(pod_dir) {
        // Lazily: a container process may still be leaving it.
        let _ = std::process::Command::new("umount").arg("-l").arg(target).status();
    }
    let _ = std::fs::remove_dir_all(pod_dir);
}

/// A hostPath volume: the path under `node_root`, after the `type` check.
pub fn host_path(node_root: &Path, path: &str, kind: &str) -> Result<PathBuf, String> {
    let on_node = node_root.join(path.trim_start_matches('/'));
    let meta = std::fs::metadata(&on_node);
    let wrong = |expected: &str| Err(format!("hostPath type check failed: {path} is not a {expected}"));
    match kind {
        "" => Ok(on_node),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(&on_node).map_err(|e| io("creating", &on_node, e))?;
                std::fs::set_permissions(&on_node, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| io("chmod", &on_node, e))?;
            }
            match std::fs::metadata(&on_node) {
                Ok(m) if m.is_dir() => Ok(on_node),
                _ => wrong("directory"),
            }
        }
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(on_node),
            _ => wrong("directory"),
        },
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = on_node.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
                }
                std::fs::File::create(&on_node).map_err(|e| io("creating", &on_node, e))?;
                std::fs::set_permissions(&on_node, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| io("chmod", &on_node, e))?;
            }
            match std::fs::metadata(&on_node) {
                Ok(m) if m.is_file() => Ok(on_node),
                _ => wrong("file"),
            }
        }
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(on_node),
            _ => wrong("file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(on_node),
            _ => wrong("socket"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(on_node),
            _ => wrong("character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(on_node),
            _ => wrong("block device"),
        },
        other => Err(format!(
            "hostPath type {other:?} is not one of \"\", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice, BlockDevice"
        )),
    }
}

/// A file of a configMap, secret or projected volume: its path in the volume
/// (`ca.crt`, `sub/key`), content and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Writes `payload` into `dir` as AtomicWriter does; returns false when it
/// was already there unchanged (nothing is written then).
pub fn atomic_write(dir: &Path, payload: &[Payload], fs_group: Option<u32>, stamp: &str) -> Result<bool, String> {
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let data = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data)
        && same_payload(&dir.join(&current), payload)
    {
        return Ok(false);
    }
    let stamped = dir.join(format!("..{stamp}"));
    std::fs::create_dir_all(&stamped).map_err(|e| io("creating", &stamped, e))?;
    std::fs::set_permissions(&stamped, std::fs::Permissions::from_mode(0o755)).map_err(|e| io("chmod", &stamped, e))?;
    for file in payload {
        let path = stamped.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
        }
        std::fs::write(&path, &file.content).map_err(|e| io("writing", &path, e))?;
        // The group may read what fsGroup owns, as SetVolumeOwnership's read-only mask.
        let mode = file.mode | fs_group.map_or(0, |_| 0o440);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| io("chmod", &path, e))?;
        if fs_group.is_some() {
            std::os::unix::fs::chown(&path, None, fs_group).map_err(|e| io("chown", &path, e))?;
        }
    }
    let temporary = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&temporary);
    let stamped_name = format!("..{stamp}");
    std::os::unix::fs::symlink(&stamped_name, &temporary).map_err(|e| io("linking", &temporary, e))?;
    let old = std::fs::read_link(&data).ok();
    std::fs::rename(&temporary, &data).map_err(|e| io("renaming to", &data, e))?;
    let mut top: Vec<&str> = payload.iter().filter_map(|f| f.path.split('/').next()).collect();
    top.dedup();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).map_err(|e| io("linking", &link, e))?;
        }
    }
    // Names the new payload no longer has, and the previous timestamped directory.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !top.contains(&name.as_str()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Some(old) = old.filter(|old| *old != Path::new(&stamped_name)) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

fn same_payload(current: &Path, payload: &[Payload]) -> bool {
    payload.iter().all(|file| {
        let path = current.join(&file.path);
        std::fs::read(&path).is_ok_and(|c| c == file.content)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 & file.mode == file.mode)
    }) && count_files(current) == payload.len()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    count_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_empty_dir_is_root_owned_0777_or_2777_with_an_fs_group() {
        let pod = tempfile::tempdir().unwrap();
        let plain = empty_dir(pod.path(), "scratch", None, false).unwrap();
        let meta = std::fs::metadata(&plain).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o777));
        let grouped = empty_dir(pod.path(), "certs", Some(65532), false).unwrap();
        let meta = std::fs::metadata(&grouped).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, 65532, 0o2777));
        assert!(grouped.ends_with("volumes/kubernetes.io~empty-dir/certs"));
    }

    #[test]
    fn atomic_writes_swap_data_and_link_each_name() {
        let volume = tempfile::tempdir().unwrap();
        let file = |path: &str, content: &str| Payload {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            mode: 0o644,
        };
        assert!(atomic_write(volume.path(), &[file("a", "1"), file("b", "2")], Some(2000), "t1").unwrap());
        assert_eq!(
            std::fs::read_link(volume.path().join("..data")).unwrap(),
            Path::new("..t1")
        );
        assert_eq!(
            std::fs::read_link(volume.path().join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(std::fs::read_to_string(volume.path().join("a")).unwrap(), "1");
        let meta = std::fs::metadata(volume.path().join("..t1/a")).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o777), (2000, 0o644));
        assert!(!atomic_write(volume.path(), &[file("a", "1"), file("b", "2")], Some(2000), "t2").unwrap());
        assert!(atomic_write(volume.path(), &[file("a", "3")], Some(2000), "t3").unwrap());
        assert_eq!(std::fs::read_to_string(volume.path().join("a")).unwrap(), "3");
        assert!(std::fs::symlink_metadata(volume.path().join("b")).is_err(), "b is gone");
        assert!(!volume.path().join("..t1").exists(), "the old data is removed");
    }

    #[test]
    fn host_paths_are_checked_against_their_type() {
        let node = tempfile::tempdir().unwrap();
        assert!(host_path(node.path(), "/var/lib/x", "Directory").is_err());
        let created = host_path(node.path(), "/var/lib/x", "DirectoryOrCreate").unwrap();
        assert_eq!(created, node.path().join("var/lib/x"));
        assert!(host_path(node.path(), "/var/lib/x", "Directory").is_ok());
        let error = host_path(node.path(), "/var/lib/x", "Socket").unwrap_err();
        assert_eq!(error, "hostPath type check failed: /var/lib/x is not a socket");
        assert!(host_path(node.path(), "/etc/f", "FileOrCreate").is_ok());
    }
}
