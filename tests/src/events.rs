//! Events as kube-apiserver serves them: one resource seen two ways. Core `v1`
//! Events are stored; `events.k8s.io/v1` Events are the same objects with
//! their fields renamed (`regarding` for `involvedObject`, `note` for
//! `message`, `reportingController` for `reportingComponent`, and the
//! `deprecated…` legacy fields), so an event recorded through either API is
//! seen by both (`kubectl describe` reads core Events).

use serde_json::{Map, Value};

pub const GROUP: &str = "events.k8s.io";

/// (events.k8s.io/v1 field, core v1 field) pairs that differ.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether a resource of `group`/`plural` is stored as core Events.
pub fn is_events_api(group: &str, plural: &str) -> bool {
    group == GROUP && plural == "events"
}

/// The stored (core) form of an events.k8s.io/v1 Event.
pub fn to_core(object: Value) -> Value {
    rename(object, |(events, core)| (events, core))
}

/// The events.k8s.io/v1 form of a stored (core) Event.
pub fn to_events_api(object: Value) -> Value {
    rename(object, |(events, core)| (core, events))
}

fn rename(object: Value, direction: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str)) -> Value {
    let Value::Object(map) = object else {
        return object;
    };
    let mut renamed = Map::new();
    for (key, value) in map {
        let key = RENAMED
            .iter()
            .map(|pair| direction(*pair))
            .find(|(from, _)| *from == key)
            .map_or(key, |(_, to)| to.to_owned());
        renamed.insert(key, value);
    }
    Value::Object(renamed)
}

/// Field selectors: (selector, pointer into the stored core Event).
pub const CORE_FIELDS: [(&str, &str); 11] = [
    ("involvedObject.kind", "/involvedObject/kind"),
    ("involvedObject.namespace", "/involvedObject/namespace"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.uid", "/involvedObject/uid"),
    ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
    ("involvedObject.resourceVersion", "/involvedObject/resourceVersion"),
    ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
    ("reason", "/reason"),
    ("reportingComponent", "/reportingComponent"),
    ("source", "/source/component"),
    ("type", "/type"),
];

pub const EVENTS_API_FIELDS: [(&str, &str); 10] = [
    ("regarding.kind", "/involvedObject/kind"),
    ("regarding.namespace", "/involvedObject/namespace"),
    ("regarding.name", "/involvedObject/name"),
    ("regarding.uid", "/involvedObject/uid"),
    ("regarding.apiVersion", "/involvedObject/apiVersion"),
    ("regarding.resourceVersion", "/involvedObject/resourceVersion"),
    ("regarding.fieldPath", "/involvedObject/fieldPath"),
    ("reason", "/reason"),
    ("reportingController", "/reportingComponent"),
    ("type", "/type"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_event_two_ways() {
        let recorded = json!({"metadata": {"name": "e"}, "regarding": {"name": "job"}, "note": "pulled",
            "reportingController": "prewarm", "reason": "Pulled", "type": "Normal", "deprecatedCount": 2});
        let core = to_core(recorded.clone());
        assert_eq!(core["involvedObject"]["name"], "job");
        assert_eq!(core["message"], "pulled");
        assert_eq!(core["count"], 2);
        assert_eq!(core["reason"], "Pulled");
        assert_eq!(to_events_api(core), recorded);
    }
}
