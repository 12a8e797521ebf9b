//! Which jobs a NodeImage change concerns: the owners of each tag whose spec
//! or outcome changed, and every owner of an image whose image-level fields
//! (pull secrets, sandbox config) changed or that appeared or went. A node
//! agent's progress reports wake no job; a tag that finishes wakes only its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prewarm_api::node_image::{ImageStatus, ImageTagSpec, ImageTagStatus};
use prewarm_api::v1beta1::ImageSpec;

use crate::cached_node_image::CachedNodeImage;
use crate::index::ObjectKey;
use crate::interned::Named;
use crate::plan::node_image::job_owner;
use prewarm_api::node_image::MAX_IMAGES;

fn spec_entry<'a>(node_image: Option<&'a CachedNodeImage>, image: &str) -> Option<&'a ImageSpec> {
    spec_shared(node_image, image).map(|e| &e.value)
}

fn status_tags<'a>(node_image: Option<&'a CachedNodeImage>, image: &str) -> &'a [ImageTagStatus] {
    status_shared(node_image, image)
        .map(|e| e.value.tags.as_slice())
        .unwrap_or_default()
}

fn image_names(node_image: Option<&CachedNodeImage>) -> impl Iterator<Item = &String> {
    let status = node_image
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.image_statuses.as_ref())
        .into_iter()
        .flat_map(|s| s.keys());
    spec_image_names(node_image).chain(status)
}

fn same<V>(a: Option<&Arc<Named<V>>>, b: Option<&Arc<Named<V>>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Whether both versions hold the very same shared spec and status entries
/// for `image`: the common case, decided without comparing anything.
fn same_entries(old: Option<&CachedNodeImage>, new: Option<&CachedNodeImage>, image: &str) -> bool {
    same(spec_shared(old, image), spec_shared(new, image)) && same(status_shared(old, image), status_shared(new, image))
}

fn spec_shared<'a>(node_image: Option<&'a CachedNodeImage>, image: &str) -> Option<&'a Arc<Named<ImageSpec>>> {
    node_image?.spec.images.as_ref()?.shared(image)
}

fn status_shared<'a>(node_image: Option<&'a CachedNodeImage>, image: &str) -> Option<&'a Arc<Named<ImageStatus>>> {
    node_image?.status.as_ref()?.image_statuses.as_ref()?.shared(image)
}

/// Tags by name; a repeated tag counts by its last entry.
fn by_tag<T>(items: &[T], tag: impl Fn(&T) -> &str) -> BTreeMap<&str, &T> {
    items.iter().map(|t| (tag(t), t)).collect()
}

/// What a job counts of a status tag: its version, and whether it finished
/// and how. Waiting, Pulling and progress reports change none of it, so they
/// wake no job.
fn outcomes(tags: &[ImageTagStatus]) -> BTreeMap<&str, (Option<i64>, Option<&str>)> {
    tags.iter()
        .map(|t| {
            let finished = matches!(t.phase.as_str(), "Succeeded" | "Failed").then_some(t.phase.as_str());
            (t.tag.as_str(), (t.version, finished))
        })
        .collect()
}

fn changed_keys<'a, T: PartialEq>(old: &BTreeMap<&'a str, T>, new: &BTreeMap<&'a str, T>) -> BTreeSet<&'a str> {
    old.keys()
        .chain(new.keys())
        .filter(|tag| old.get(*tag) != new.get(*tag))
        .copied()
        .collect()
}

pub fn owners_of_changed_tags(old: Option<&CachedNodeImage>, new: Option<&CachedNodeImage>) -> BTreeSet<ObjectKey> {
    let images: BTreeSet<&String> = image_names(old).chain(image_names(new)).collect();
    let mut owners = BTreeSet::new();
    for image in images.into_iter().filter(|image| !same_entries(old, new, image)) {
        let (old_entry, new_entry) = (spec_entry(old, image), spec_entry(new, image));
        let no_tags: &[ImageTagSpec] = &[];
        let old_tags = by_tag(old_entry.map_or(no_tags, |e| e.tags.as_slice()), |t| t.tag.as_str());
        let new_tags = by_tag(new_entry.map_or(no_tags, |e| e.tags.as_slice()), |t| t.tag.as_str());
        let image_level = match (old_entry, new_entry) {
            (Some(o), Some(n)) => o.pull_secrets != n.pull_secrets || o.sandbox_config != n.sandbox_config,
            (None, None) => false,
            _ => true,
        };
        let mut tags = changed_keys(&old_tags, &new_tags);
        tags.extend(changed_keys(
            &outcomes(status_tags(old, image)),
            &outcomes(status_tags(new, image)),
        ));
        if image_level {
            tags.extend(old_tags.keys().chain(new_tags.keys()));
        }
        for tag in tags {
            let refs = [old_tags.get(tag), new_tags.get(tag)]
                .into_iter()
                .flatten()
                .flat_map(|t| t.owner_references.iter().flatten());
            owners.extend(refs.filter_map(job_owner).map(|(ns, name)| ObjectKey::new(ns, name)));
        }
    }
    owners
}

/// Whether a change may move a job's standing on a full NodeImage: it filled
/// up or freed room, or, full, its set of images changed (an entry for the
/// job's image may now be there, or gone). Such changes concern every job
/// that targets the node, not only the owners of changed tags.
pub fn room_changed(old: Option<&CachedNodeImage>, new: Option<&CachedNodeImage>) -> bool {
    // It runs for every NodeImage event: counts first, names only when full.
    let count = |n: Option<&CachedNodeImage>| n.and_then(|n| n.spec.images.as_ref()).map_or(0, |i| i.len());
    (count(old) >= MAX_IMAGES || count(new) >= MAX_IMAGES) && spec_image_names(old).ne(spec_image_names(new))
}

fn spec_image_names(node_image: Option<&CachedNodeImage>) -> impl Iterator<Item = &String> {
    node_image
        .and_then(|n| n.spec.images.as_ref())
        .into_iter()
        .flat_map(|i| i.keys())
}
