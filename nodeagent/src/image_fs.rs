//! The image filesystem, checked before a pull starts: a job may not fill a
//! node's disk (255 large images, or one layer that unpacks to hundreds of
//! gigabytes), which kubelet, the node's containers and, on a control-plane
//! node, etcd share. Where the runtime keeps images comes from CRI
//! `ImageFsInfo`; how full that filesystem is, from `statvfs` on it, as
//! kubelet's own image garbage collection measures it (by default it frees
//! images from 85 %).

use std::path::Path;

/// `--max-image-fs-usage`: the fullest, in percent, an image filesystem may be
/// for a pull to start; 100 turns the check off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageLimit(u8);

impl UsageLimit {
    pub const DEFAULT: UsageLimit = UsageLimit(80);

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let number = text.strip_suffix('%').unwrap_or(text);
        match number.parse::<u8>() {
            Ok(percent @ 1..=100) => Ok(Self(percent)),
            _ => Err(format!(
                "{text:?} is not a percentage from 1 to 100 (100 turns the check off)"
            )),
        }
    }

    pub fn percent(self) -> u8 {
        self.0
    }

    pub fn is_off(self) -> bool {
        self.0 >= 100
    }
}

/// One image filesystem as a pull finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsUsage {
    pub mountpoint: String,
    /// What the runtime says its images take there.
    pub image_bytes: u64,
    pub capacity_bytes: u64,
    /// Free to unprivileged writers (`f_bavail`), as `df` and kubelet count it.
    pub available_bytes: u64,
}

impl FsUsage {
    /// Used share of the filesystem, 0.0 to 1.0.
    pub fn used_ratio(&self) -> f64 {
        if self.capacity_bytes == 0 {
            return 0.0;
        }
        let used = self.capacity_bytes.saturating_sub(self.available_bytes);
        used as f64 / self.capacity_bytes as f64
    }
}

/// Whether a pull may start: `Err` names the filesystem, its usage and the limit.
pub fn verdict(filesystems: &[FsUsage], limit: UsageLimit) -> Result<(), String> {
    if limit.is_off() {
        return Ok(());
    }
    let over = filesystems
        .iter()
        .find(|fs| fs.used_ratio() * 100.0 > f64::from(limit.percent()));
    match over {
        None => Ok(()),
        Some(fs) => Err(format!(
            "not pulled: the image filesystem {} is {:.1}% full ({} used of {}, images {}), above the node agent's --max-image-fs-usage of {}%; free space on the node (or let kubelet's image garbage collection run) and bump the tag's version to retry",
            fs.mountpoint,
            fs.used_ratio() * 100.0,
            bytes(fs.capacity_bytes.saturating_sub(fs.available_bytes)),
            bytes(fs.capacity_bytes),
            bytes(fs.image_bytes),
            limit.percent()
        )),
    }
}

/// The size of the filesystem at `mountpoint`: (capacity, available), in bytes.
pub fn capacity(mountpoint: &Path) -> Result<(u64, u64), String> {
    let stat = rustix::fs::statvfs(mountpoint).map_err(|e| format!("statvfs {}: {e}", mountpoint.display()))?;
    let block = stat.f_frsize.max(1);
    Ok((stat.f_blocks.saturating_mul(block), stat.f_bavail.saturating_mul(block)))
}

fn bytes(n: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= GIB {
        format!("{:.1} GiB", n / GIB)
    } else {
        format!("{:.1} MiB", n / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(capacity_gib: u64, available_gib: u64) -> FsUsage {
        FsUsage {
            mountpoint: "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
            image_bytes: 30 << 30,
            capacity_bytes: capacity_gib << 30,
            available_bytes: available_gib << 30,
        }
    }

    #[test]
    fn a_pull_starts_only_below_the_limit() {
        let limit = UsageLimit::DEFAULT;
        assert_eq!(verdict(&[fs(100, 21)], limit), Ok(()), "79 % used");
        assert_eq!(verdict(&[fs(100, 20)], limit), Ok(()), "80 % used: at the limit");
        let refused = verdict(&[fs(100, 60), fs(50, 6)], limit).err().unwrap_or_default();
        assert!(
            refused.contains("is 88.0% full (44.0 GiB used of 50.0 GiB, images 30.0 GiB)")
                && refused.contains("--max-image-fs-usage of 80%")
                && refused.contains("io.containerd.snapshotter.v1.overlayfs"),
            "{refused}"
        );
        let off = UsageLimit::parse("100").unwrap_or(UsageLimit::DEFAULT);
        assert_eq!(verdict(&[fs(50, 0)], off), Ok(()), "100 turns it off");
        assert_eq!(
            verdict(
                &[FsUsage {
                    capacity_bytes: 0,
                    ..fs(0, 0)
                }],
                limit
            ),
            Ok(())
        );
    }

    #[test]
    fn limits_are_percentages_from_1_to_100() {
        assert_eq!(UsageLimit::parse("75%"), Ok(UsageLimit(75)));
        assert_eq!(UsageLimit::parse("90"), Ok(UsageLimit(90)));
        for bad in ["0", "101", "-5", "eighty", ""] {
            let error = UsageLimit::parse(bad).err().unwrap_or_default();
            assert!(error.contains("from 1 to 100"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_capacity_of_a_real_filesystem_is_read() {
        let (total, available) = capacity(Path::new("/")).unwrap_or((0, 0));
        assert!(total > 0 && available <= total, "{total} {available}");
        let missing = capacity(Path::new("/nonexistent/image-fs")).err().unwrap_or_default();
        assert!(missing.contains("/nonexistent/image-fs"), "{missing}");
    }
}
