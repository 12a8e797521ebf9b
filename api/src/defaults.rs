//! Defaulting as RFC 6902 `add` operations computed on the raw object: only absent
//! fields are added (an empty string counts as absent for the string enums, as
//! in OpenKruise), so fields unknown to our types survive, and defaulting an
//! already-defaulted object yields no operation.

use std::fmt;
use std::sync::LazyLock;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use serde::Serialize;

use crate::job::{COMPLETION_ALWAYS, CompletionPolicy, PULL_IF_NOT_PRESENT, PullPolicy};
use crate::node_image::ImageTagPullPolicy;
use crate::spec::Spec;
use crate::text::Key;

pub const DEFAULT_TIMEOUT_SECONDS: i32 = 600;
pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;

/// `completionPolicy.type=Always`, `pullPolicy{timeoutSeconds 600, backoffLimit 3}`
/// and `imagePullPolicy=IfNotPresent`.
pub fn image_pull_job(spec: Spec<'_>) -> Vec<PatchOperation> {
    static TEMPLATE: LazyLock<Value> = LazyLock::new(|| job_template(Some(PULL_IF_NOT_PRESENT)));
    spec_defaults(spec, &TEMPLATE)
}

/// As ImagePullJob but without `imagePullPolicy`: each child ImagePullJob gets it.
pub fn image_list_pull_job(spec: Spec<'_>) -> Vec<PatchOperation> {
    static TEMPLATE: LazyLock<Value> = LazyLock::new(|| job_template(None));
    spec_defaults(spec, &TEMPLATE)
}

/// OpenKruise's AdvancedCronJob defaults: `paused=false`, history limits 3
/// and 1, and, with an `imageListPullJobTemplate`, `concurrencyPolicy=Replace`
/// (a second pull of the same images beside the first is useless) and the
/// ImagePullJob defaults in the template's spec; otherwise `Allow`.
pub fn advanced_cron_job(spec: Spec<'_>) -> Vec<PatchOperation> {
    static WITH_LIST_TEMPLATE: LazyLock<Value> = LazyLock::new(|| cron_job_template(true));
    static OTHERWISE: LazyLock<Value> = LazyLock::new(|| cron_job_template(false));
    // Nested too deeply to read: validation says so.
    let Ok(Some(tree)) = spec.tree() else {
        return Vec::new();
    };
    let has_list_template = tree
        .pointer("/template/imageListPullJobTemplate")
        .is_some_and(Value::is_object);
    let template = if has_list_template {
        &WITH_LIST_TEMPLATE
    } else {
        &OTHERWISE
    };
    spec_defaults(Spec::Tree(Some(&tree)), template)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CronJobDefaults {
    concurrency_policy: &'static str,
    paused: bool,
    successful_jobs_history_limit: i32,
    failed_jobs_history_limit: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<Value>,
}

fn cron_job_template(has_list_template: bool) -> Value {
    use crate::cron_job::{
        CONCURRENCY_ALLOW, CONCURRENCY_REPLACE, DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
        DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
    };
    template(&CronJobDefaults {
        concurrency_policy: if has_list_template {
            CONCURRENCY_REPLACE
        } else {
            CONCURRENCY_ALLOW
        },
        paused: false,
        successful_jobs_history_limit: DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT,
        failed_jobs_history_limit: DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
        template: has_list_template.then(
            || serde_json::json!({"imageListPullJobTemplate": {"spec": job_template(Some(PULL_IF_NOT_PRESENT))}}),
        ),
    })
}

/// What defaulting adds to a job spec, in the spec's own types (a test
/// checks every path against the kind's schema).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobDefaults {
    completion_policy: CompletionPolicy,
    pull_policy: PullPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_pull_policy: Option<&'static str>,
}

/// What defaulting adds to each NodeImage tag.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TagDefaults<'a> {
    created_at: &'a Time,
    pull_policy: ImageTagPullPolicy,
}

/// Serialising these plain structs cannot fail; `Null` adds nothing.
fn template(defaults: &impl Serialize) -> Value {
    serde_json::to_value(defaults).unwrap_or(Value::Null)
}

/// Every tag of every image gets `createdAt` (`now`) and
/// `pullPolicy{timeoutSeconds 600, backoffLimit 3}`.
pub fn node_image(spec: Spec<'_>, now: &Time) -> Vec<PatchOperation> {
    let mut operations = Vec::new();
    // Nested too deeply to read: validation says so.
    let Ok(Some(spec)) = spec.tree() else {
        return operations;
    };
    let Some(images) = spec.get("images").and_then(Value::as_object) else {
        return operations;
    };
    let template = template(&TagDefaults {
        created_at: now,
        pull_policy: ImageTagPullPolicy {
            timeout_seconds: Some(DEFAULT_TIMEOUT_SECONDS),
            backoff_limit: Some(DEFAULT_BACKOFF_LIMIT),
            ..ImageTagPullPolicy::default()
        },
    });
    for (name, image) in images {
        let Some(tags) = image.get("tags").and_then(Value::as_array) else {
            continue;
        };
        for (i, tag) in tags.iter().enumerate() {
            let index = i.to_string();
            let mut tokens = vec!["spec", "images", name.as_str(), "tags", &index];
            add_missing(&mut operations, &mut tokens, tag, &template);
        }
    }
    operations
}

fn job_template(image_pull_policy: Option<&'static str>) -> Value {
    template(&JobDefaults {
        completion_policy: CompletionPolicy {
            type_: Some(COMPLETION_ALWAYS.to_owned()),
            ..CompletionPolicy::default()
        },
        pull_policy: PullPolicy {
            timeout_seconds: Some(DEFAULT_TIMEOUT_SECONDS),
            backoff_limit: Some(DEFAULT_BACKOFF_LIMIT),
        },
        image_pull_policy,
    })
}

fn spec_defaults(spec: Spec<'_>, template: &Value) -> Vec<PatchOperation> {
    let mut operations = Vec::new();
    let mut tokens = vec!["spec"];
    match spec {
        Spec::Tree(Some(spec)) => add_missing(&mut operations, &mut tokens, spec, template),
        Spec::Text(Some(text)) => {
            let mut reader = serde_json::Deserializer::from_str(text.get());
            // Nested too deeply to read: validation says so.
            if let Ok(spec) = Pruned(template).deserialize(&mut reader) {
                add_missing(&mut operations, &mut tokens, &spec, template);
            }
        }
        Spec::Tree(None) | Spec::Text(None) => {}
    }
    operations
}

/// Reads JSON text as the part of it that [`add_missing`] looks at, given the
/// same template: the members the template names, recursively, and of every
/// other value only whether it is `null`, `""` or something else (`true`).
/// Nothing else is built, and the rest of the text is skipped unread.
struct Pruned<'t>(&'t Value);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

const PRESENT: Value = Value::Bool(true);

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(template) = self.0.as_object() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(PRESENT);
        };
        let mut kept = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match template.get(key.as_ref()) {
                // A repeated key keeps its last value, as in a tree.
                Some(member) => {
                    kept.insert(key.into_owned(), map.next_value_seed(Pruned(member))?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(PRESENT)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Value, E> {
        Ok(if text.is_empty() {
            Value::String(String::new())
        } else {
            PRESENT
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(PRESENT)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(PRESENT)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(PRESENT)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(PRESENT)
    }
}

/// Adds each member of `template` that `actual` lacks; recurses into objects
/// both have. A non-object `actual` is left alone for validation to report.
/// `tokens` is the path to `actual`; pointers are built only for additions.
fn add_missing<'t>(
    operations: &mut Vec<PatchOperation>,
    tokens: &mut Vec<&'t str>,
    actual: &Value,
    template: &'t Value,
) {
    let (Some(actual), Some(template)) = (actual.as_object(), template.as_object()) else {
        return;
    };
    for (key, default) in template {
        tokens.push(key);
        match actual.get(key) {
            None | Some(Value::Null) => push_add(operations, tokens, default),
            Some(Value::String(s)) if s.is_empty() && default.is_string() => push_add(operations, tokens, default),
            Some(present) if default.is_object() => add_missing(operations, tokens, present, default),
            Some(_) => {}
        }
        tokens.pop();
    }
}

fn push_add(operations: &mut Vec<PatchOperation>, tokens: &[&str], value: &Value) {
    operations.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value: value.clone(),
    }));
}
