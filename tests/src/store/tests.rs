//! The store's own behaviour, apart from the HTTP layer.
use super::*;

fn named(kind: &str, api_version: &str, namespace: &str, name: &str) -> Value {
    let mut metadata = json!({"name": name});
    if !namespace.is_empty() {
        metadata["namespace"] = json!(namespace);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata})
}

fn names(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .collect()
}

#[test]
fn a_list_holds_exactly_the_objects_of_its_type_and_namespace() -> Result<(), ApiError> {
    let store = Store::default();
    let type_of = |group: &str, plural: &str| {
        store
            .resource_type(group, "v1", plural)
            .ok_or_else(|| ApiError::not_found(plural, group, ""))
    };
    let (namespaces, config_maps, secrets, nodes) = (
        type_of("", "namespaces")?,
        type_of("", "configmaps")?,
        type_of("", "secrets")?,
        type_of("", "nodes")?,
    );
    for ns in ["a", "b", "c"] {
        store.create(&namespaces, "", named("Namespace", "v1", "", ns), false)?;
    }
    for (ns, name) in [("a", "one"), ("b", "two"), ("b", "three"), ("c", "four")] {
        store.create(&config_maps, ns, named("ConfigMap", "v1", ns, name), false)?;
        store.create(&secrets, ns, named("Secret", "v1", ns, &format!("s-{name}")), false)?;
    }
    store.create(&nodes, "", named("Node", "v1", "", "n1"), false)?;

    assert_eq!(names(&store.list(&config_maps, Some("b")).0), ["three", "two"]);
    assert_eq!(
        names(&store.list(&config_maps, None).0),
        ["one", "three", "two", "four"]
    );
    assert_eq!(names(&store.list(&secrets, Some("c")).0), ["s-four"]);
    assert!(store.list(&config_maps, Some("absent")).0.is_empty());
    assert_eq!(names(&store.list(&nodes, None).0), ["n1"]);
    assert_eq!(names(&store.list(&namespaces, None).0), ["a", "b", "c"]);
    Ok(())
}
