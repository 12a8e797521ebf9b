//! A job's progress node by node, as `kubectl prewarm progress` prints it:
//! from the job and the NodeImages, the nodes the job has written its tag to,
//! each with the phase the node agent reports for the job's version of it; and
//! a list job's progress image by image, from its children.

use k8s_openapi::jiff::Timestamp;
use prewarm_api::reference::ImageReference;
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob, NodeImage};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub node: String,
    /// Waiting (written, not started), Pulling, Succeeded or Failed.
    pub phase: String,
    /// 0 to 100, as the agent reports it.
    pub progress: i32,
    /// Seconds from the pull's start to its end, or to `now` while it runs.
    pub seconds: Option<i64>,
    pub message: String,
}

/// The rows of `job` over `node_images`, by node name.
pub fn rows(job: &ImagePullJob, node_images: &[NodeImage], now: Timestamp) -> Result<Vec<Row>, String> {
    let reference = ImageReference::parse(&job.spec.image)
        .map_err(|e| format!("spec.image {:?} is not an image reference: {e}", job.spec.image))?;
    let (image, tag) = (reference.familiar_name(), reference.tag_or_digest());
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let mut rows: Vec<Row> = node_images
        .iter()
        .filter_map(|node_image| {
            let spec_tag = node_image.spec.images.as_ref()?.get(&image)?.tags.iter().find(|t| {
                t.tag == tag
                    && t.owner_references
                        .iter()
                        .flatten()
                        .any(|o| o.uid.as_deref() == Some(uid))
            })?;
            let version = spec_tag.version.unwrap_or(0);
            let status = node_image
                .status
                .as_ref()
                .and_then(|s| s.image_statuses.as_ref())
                .and_then(|s| s.get(&image))
                .and_then(|s| {
                    s.tags
                        .iter()
                        .find(|t| t.tag == tag && t.version.unwrap_or(0) == version)
                });
            let seconds = status.and_then(|s| {
                let start = s.start_time.as_ref()?.0;
                let end = s.completion_time.as_ref().map_or(now, |t| t.0);
                Some(end.as_second() - start.as_second())
            });
            Some(Row {
                node: node_image.metadata.name.clone().unwrap_or_default(),
                phase: status.map_or_else(|| "Waiting".to_owned(), |s| s.phase.clone()),
                progress: status.and_then(|s| s.progress).unwrap_or(0),
                seconds,
                message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
            })
        })
        .collect();
    rows.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(rows)
}

/// The rows as a table, kubectl-style (columns padded, one line each).
pub fn render(rows: &[Row]) -> String {
    table(
        ["NODE", "PHASE", "PROGRESS", "DURATION", "MESSAGE"],
        rows.iter().map(|r| {
            [
                r.node.clone(),
                r.phase.clone(),
                format!("{}%", r.progress),
                r.seconds.map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
                r.message.replace('\n', " "),
            ]
        }),
    )
}

/// One image of a list job: its child ImagePullJob and how far it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildRow {
    pub image: String,
    /// The child ImagePullJob (none yet: the controller has not made it).
    pub job: Option<String>,
    pub desired: i32,
    pub succeeded: i32,
    pub failed: i32,
    pub active: i32,
    pub completed: bool,
    pub message: String,
}

/// A row per image of `list`, from its children (the ImagePullJobs it controls).
pub fn child_rows(list: &ImageListPullJob, jobs: &[ImagePullJob]) -> Vec<ChildRow> {
    let uid = list.metadata.uid.as_deref();
    let children: Vec<&ImagePullJob> = jobs
        .iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
        })
        .collect();
    list.spec
        .images
        .iter()
        .map(|image| {
            let child = children.iter().find(|c| &c.spec.image == image);
            let status = child.and_then(|c| c.status.clone()).unwrap_or_default();
            ChildRow {
                image: image.clone(),
                job: child.and_then(|c| c.metadata.name.clone()),
                desired: status.desired,
                succeeded: status.succeeded.unwrap_or(0),
                failed: status.failed.unwrap_or(0),
                active: status.active.unwrap_or(0),
                completed: status.completion_time.is_some(),
                message: status.message.unwrap_or_default(),
            }
        })
        .collect()
}

pub fn render_children(rows: &[ChildRow]) -> String {
    table(
        ["IMAGE", "JOB", "TOTAL", "SUCCEED", "FAILED", "ACTIVE", "MESSAGE"],
        rows.iter().map(|r| {
            [
                r.image.clone(),
                r.job.clone().unwrap_or_else(|| "-".to_owned()),
                r.desired.to_string(),
                r.succeeded.to_string(),
                r.failed.to_string(),
                r.active.to_string(),
                r.message.replace('\n', " "),
            ]
        }),
    )
}

/// Columns padded to their widest cell, three spaces apart; the last one as is.
fn table<const N: usize>(header: [&str; N], rows: impl Iterator<Item = [String; N]>) -> String {
    let cells: Vec<[String; N]> = std::iter::once(header.map(str::to_owned)).chain(rows).collect();
    let widths: Vec<usize> = (0..N)
        .map(|c| cells.iter().map(|row| row[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == N {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rows_follow_the_jobs_own_tag_version_and_owner() {
        let job: ImagePullJob = parse(json!({"metadata": {"name": "j", "namespace": "default", "uid": "u1"},
            "spec": {"image": "nginx:1.9.1", "completionPolicy": {"type": "Always"}}}));
        let owner = json!([{"uid": "u1", "name": "j"}]);
        let node_image = |name: &str, tags: serde_json::Value, statuses: serde_json::Value| -> NodeImage {
            parse(
                json!({"metadata": {"name": name}, "spec": {"images": {"nginx": {"tags": tags}}},
                "status": {"desired": 1, "imageStatuses": {"nginx": {"tags": statuses}}}}),
            )
        };
        let node_images = [
            node_image(
                "node-2",
                json!([{"tag": "1.9.1", "version": 1, "ownerReferences": owner}]),
                json!([{"tag": "1.9.1", "version": 1, "phase": "Failed", "progress": 0, "message": "not found",
                    "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:07Z"}]),
            ),
            // An older version's status does not count.
            node_image(
                "node-1",
                json!([{"tag": "1.9.1", "version": 2, "ownerReferences": owner}]),
                json!([{"tag": "1.9.1", "version": 1, "phase": "Succeeded"}]),
            ),
            // Another job's tag is not ours.
            node_image(
                "node-3",
                json!([{"tag": "1.9.1", "ownerReferences": [{"uid": "u2"}]}]),
                json!([]),
            ),
        ];
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap_or_else(|e| panic!("{e}"));
        let rows = rows(&job, &node_images, now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows,
            [
                Row {
                    node: "node-1".into(),
                    phase: "Waiting".into(),
                    progress: 0,
                    seconds: None,
                    message: String::new()
                },
                Row {
                    node: "node-2".into(),
                    phase: "Failed".into(),
                    progress: 0,
                    seconds: Some(7),
                    message: "not found".into()
                },
            ]
        );
        let table = render(&rows);
        assert_eq!(
            table.lines().next(),
            Some("NODE     PHASE     PROGRESS   DURATION   MESSAGE")
        );
        assert!(
            table.contains("node-2   Failed    0%         7s         not found"),
            "{table}"
        );
    }
}
