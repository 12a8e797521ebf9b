//! Writes a set of files into a directory the way kubelet updates a mounted
//! Secret: the files go into a fresh timestamped directory, `..data` is swapped
//! to point at it with one rename, and each visible name is a symlink through
//! `..data`. Readers see either the old set or the new one, never a mix, and
//! watchers of single files miss the change (which is why the webhook watches
//! the directory).

use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// Writes `files` (name, contents, mode) into `dir` atomically.
pub fn write_atomically(dir: &Path, files: &[(&str, &[u8], u32)]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let version = format!("..{}_{:09}", stamp.as_secs(), stamp.subsec_nanos());
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir)?;
    for (name, contents, mode) in files {
        let path = version_dir.join(name);
        std::fs::write(&path, contents)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
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
    if let Some(previous) = previous.filter(|p| p.as_os_str() != version.as_str()) {
        std::fs::remove_dir_all(dir.join(previous))?;
    }
    Ok(())
}
