//! Writes a set of files into a directory the way kubelet updates a mounted
//! Secret: the files go into a fresh timestamped directory, `..data` is swapped
//! to point at it with one rename, and each visible name is a symlink through
//! `..data`. Readers see either the old set or the new one, never a mix, and
//! watchers of single files miss the change (which is why the webhook watches
//! the directory).
//!
//! The directory holds a private key, so it is made 0700, a directory owned by
//! another user (someone may have created it first under `/tmp`) is refused,
//! files are created with their final mode, and only a previous version named
//! as this module names them is ever removed. [`private_dir`] finds where a
//! process may write when it is given a directory root shares with it, such as
//! the emptyDir kubelet makes (owned by root, mode 0777, or 2777 with fsGroup).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// `..<seconds>_<nanoseconds>`, the names of the version directories written here.
fn is_version_name(name: &str) -> bool {
    name.strip_prefix("..")
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(secs, nanos)| {
            !secs.is_empty() && nanos.len() == 9 && secs.bytes().chain(nanos.bytes()).all(|b| b.is_ascii_digit())
        })
}

/// Creates `dir` (0700) and the version directory in it, and checks that `dir`
/// is ours (the same owner as the directory just made) before a key goes in.
fn own_directory(dir: &Path, version_dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let metadata = std::fs::symlink_metadata(dir)?;
    if !metadata.is_dir() {
        return Err(refuse(format!(
            "{} is not a directory (a symlink?); refusing to write a private key there",
            dir.display()
        )));
    }
    std::fs::DirBuilder::new().mode(0o700).create(version_dir)?;
    let me = std::fs::symlink_metadata(version_dir)?.uid();
    if metadata.uid() != me {
        std::fs::remove_dir(version_dir)?;
        return Err(refuse(format!(
            "{} is owned by uid {}, not by this process (uid {me}); refusing to write a private key there",
            dir.display(),
            metadata.uid()
        )));
    }
    if metadata.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn refuse(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

/// The effective user of this process: the owner of its `/proc/self` (Linux).
fn process_uid() -> io::Result<u32> {
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// The directory this process writes its private files into, given `dir`:
/// - `dir` itself when it is absent (then created 0700) or owned by this process;
/// - when root owns `dir` and this process is not root, `dir/prewarm-<uid>`, created
///   0700 by this process: kubelet's emptyDir is root's, 0777 (2777 with fsGroup),
///   so no other file of the volume can be made private;
/// - refused when another user owns `dir` (someone made it first, say under `/tmp`).
///
/// A shared directory without the sticky bit lets the other users that can write
/// it (in a Pod, its other containers) rename the subdirectory away; what they
/// put in its place is refused unless it is a directory of this process.
pub fn private_dir(dir: &Path) -> io::Result<PathBuf> {
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let metadata = std::fs::symlink_metadata(dir)?;
    if !metadata.is_dir() {
        return Err(refuse(format!(
            "{} is not a directory (a symlink?); refusing to write a private key there",
            dir.display()
        )));
    }
    let me = process_uid()?;
    if metadata.uid() == me {
        return Ok(dir.to_path_buf());
    }
    if metadata.uid() != 0 {
        return Err(refuse(format!(
            "{} is owned by uid {}, neither by this process (uid {me}) nor by root; refusing to write a private key there",
            dir.display(),
            metadata.uid()
        )));
    }
    let own = dir.join(format!("prewarm-{me}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&own) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::new(
            e.kind(),
            format!(
                "{} belongs to root and this process (uid {me}) cannot create {} in it: {e}; \
                 give a directory this process owns or may write",
                dir.display(),
                own.display()
            ),
        )),
        _ => Ok(own),
    }
}

/// Writes `files` (name, contents, mode) into `dir` atomically.
pub fn write_atomically(dir: &Path, files: &[(&str, &[u8], u32)]) -> io::Result<()> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let version = format!("..{}_{:09}", stamp.as_secs(), stamp.subsec_nanos());
    let version_dir = dir.join(&version);
    own_directory(dir, &version_dir)?;
    for (name, contents, mode) in files {
        // Created with its final mode: the key is never readable by others, even briefly.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(version_dir.join(name))?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    let previous = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let tmp_link = dir.join(DATA_LINK_TMP);
    match std::fs::remove_file(&tmp_link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    symlink(&version, &tmp_link)?;
    std::fs::rename(&tmp_link, dir.join(DATA_LINK))?;
    for (name, _, _) in files {
        let visible = dir.join(name);
        if std::fs::symlink_metadata(&visible).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &visible)?;
        }
    }
    // Only a plain name this module wrote: never an absolute or `..` path a link might hold.
    if let Some(previous) = previous
        .as_deref()
        .and_then(Path::to_str)
        .filter(|p| *p != version && is_version_name(p))
    {
        std::fs::remove_dir_all(dir.join(previous))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_version_names_are_removed() {
        assert!(is_version_name("..1764400000_000000001"));
        for other in [
            "..data",
            "/etc",
            "../..",
            "..1_2",
            "..1764400000_00000000x",
            "x..1_000000000",
            "..1/_000000000",
        ] {
            assert!(!is_version_name(other), "{other}");
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).map(|m| m.mode() & 0o777).unwrap_or_default()
    }

    #[test]
    fn keys_and_directories_are_private_and_links_cannot_escape() -> io::Result<()> {
        let scratch = tempfile::tempdir()?;
        let dir = scratch.path().join("certs");
        write_atomically(&dir, &[("tls.key", b"one", 0o600), ("tls.crt", b"cert", 0o644)])?;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tls.key")), 0o600);
        assert_eq!(std::fs::read(dir.join("tls.key"))?, b"one");

        // A `..data` that points outside the directory is replaced, and what it pointed at survives.
        let outside = scratch.path().join("outside");
        std::fs::create_dir(&outside)?;
        std::fs::write(outside.join("precious"), "keep")?;
        std::fs::remove_file(dir.join("..data"))?;
        symlink(&outside, dir.join("..data"))?;
        write_atomically(&dir, &[("tls.key", b"two", 0o600)])?;
        assert_eq!(std::fs::read(outside.join("precious"))?, b"keep");
        assert_eq!(std::fs::read(dir.join("tls.key"))?, b"two");

        // A group- or world-accessible directory of ours is made private.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        write_atomically(&dir, &[("tls.key", b"three", 0o600)])?;
        assert_eq!(mode(&dir), 0o700);
        Ok(())
    }

    #[test]
    fn a_directory_owned_by_someone_else_is_refused() -> io::Result<()> {
        let scratch = tempfile::tempdir()?;
        let refused = |dir: &Path| {
            write_atomically(dir, &[("tls.key", b"k", 0o600)])
                .err()
                .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
        };
        // A symlink planted where the directory should be.
        let planted = scratch.path().join("link");
        symlink(scratch.path(), &planted)?;
        assert!(refused(&planted));
        // A directory another user created first (tests run as root here, which may give it away).
        let foreign = scratch.path().join("foreign");
        std::fs::create_dir(&foreign)?;
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534))?;
        assert!(refused(&foreign));
        assert_eq!(std::fs::read_dir(&foreign)?.count(), 0, "nothing is left behind");
        Ok(())
    }
}
