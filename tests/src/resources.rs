//! The resource types the server knows: a fixed set of built-in ones, and one
//! per CustomResourceDefinition stored, the moment it is stored.

use serde_json::Value;

/// An additional printer column of one version.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub name: String,
    pub columns: Vec<Column>,
    /// The version's `openAPIV3Schema`, for defaulting and pruning.
    pub schema: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    /// `""` for the core group.
    pub group: String,
    /// Served versions, the preferred (storage) one first.
    pub versions: Vec<Version>,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Fields selectable beyond metadata.name and metadata.namespace: (field, JSON pointer).
    pub field_selectors: Vec<(&'static str, &'static str)>,
    /// Set for types that come from a CRD.
    pub from_crd: bool,
}

impl ResourceType {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    pub fn serves(&self, version: &str) -> bool {
        self.versions.iter().any(|v| v.name == version)
    }

    pub fn version(&self, version: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == version)
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool, status: bool) -> Self {
        Self {
            group: group.to_owned(),
            versions: vec![Version {
                name: version.to_owned(),
                columns: Vec::new(),
                schema: None,
            }],
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            status_subresource: status,
            short_names: Vec::new(),
            categories: Vec::new(),
            field_selectors: Vec::new(),
            from_crd: false,
        }
    }

    /// The types every cluster has (the subset prewarm uses).
    pub fn builtins() -> Vec<Self> {
        let short = |mut t: Self, names: &[&str]| {
            t.short_names = names.iter().map(|n| (*n).to_owned()).collect();
            t
        };
        let mut pods = short(Self::builtin("", "v1", "Pod", "pods", true, true), &["po"]);
        pods.field_selectors = vec![("spec.nodeName", "/spec/nodeName"), ("status.phase", "/status/phase")];
        let all = |mut t: Self| {
            t.categories = vec!["all".to_owned()];
            t
        };
        let mut events = short(Self::builtin("", "v1", "Event", "events", true, false), &["ev"]);
        events.field_selectors = crate::events::CORE_FIELDS.to_vec();
        let mut events_api = Self::builtin(crate::events::GROUP, "v1", "Event", "events", true, false);
        events_api.short_names = vec!["ev".to_owned()];
        events_api.field_selectors = crate::events::EVENTS_API_FIELDS.to_vec();
        vec![
            short(Self::builtin("", "v1", "Namespace", "namespaces", false, true), &["ns"]),
            short(Self::builtin("", "v1", "Node", "nodes", false, true), &["no"]),
            all(pods),
            all(short(
                Self::builtin("", "v1", "Service", "services", true, true),
                &["svc"],
            )),
            short(
                Self::builtin("", "v1", "ServiceAccount", "serviceaccounts", true, false),
                &["sa"],
            ),
            short(Self::builtin("", "v1", "Endpoints", "endpoints", true, false), &["ep"]),
            Self::builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, false),
            all(short(
                Self::builtin("apps", "v1", "Deployment", "deployments", true, true),
                &["deploy"],
            )),
            all(short(
                Self::builtin("apps", "v1", "DaemonSet", "daemonsets", true, true),
                &["ds"],
            )),
            Self::builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false),
            Self::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
                false,
            ),
            Self::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
                false,
            ),
            Self::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
                false,
            ),
            short(
                Self::builtin("", "v1", "ResourceQuota", "resourcequotas", true, true),
                &["quota"],
            ),
            short(
                Self::builtin(
                    "networking.k8s.io",
                    "v1",
                    "NetworkPolicy",
                    "networkpolicies",
                    true,
                    false,
                ),
                &["netpol"],
            ),
            short(
                Self::builtin(
                    "policy",
                    "v1",
                    "PodDisruptionBudget",
                    "poddisruptionbudgets",
                    true,
                    true,
                ),
                &["pdb"],
            ),
            Self::builtin(
                "authorization.k8s.io",
                "v1",
                "SelfSubjectAccessReview",
                "selfsubjectaccessreviews",
                false,
                false,
            ),
            Self::builtin(
                "authorization.k8s.io",
                "v1",
                "SelfSubjectRulesReview",
                "selfsubjectrulesreviews",
                false,
                false,
            ),
            Self::builtin(
                "authentication.k8s.io",
                "v1",
                "SelfSubjectReview",
                "selfsubjectreviews",
                false,
                false,
            ),
            Self::builtin("", "v1", "Secret", "secrets", true, false),
            short(Self::builtin("", "v1", "ConfigMap", "configmaps", true, false), &["cm"]),
            events,
            events_api,
            Self::builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
            Self::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
                false,
                false,
            ),
            Self::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
                false,
                false,
            ),
            short(
                Self::builtin(
                    "apiextensions.k8s.io",
                    "v1",
                    "CustomResourceDefinition",
                    "customresourcedefinitions",
                    false,
                    true,
                ),
                &["crd", "crds"],
            ),
        ]
    }

    /// The type a CRD defines, or why the CRD is unusable.
    pub fn from_crd(crd: &Value) -> Result<Self, String> {
        let spec = crd.get("spec").ok_or("spec is required")?;
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let names = spec.get("names").ok_or("spec.names is required")?;
        let list = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let kind = text(names, "kind").ok_or("spec.names.kind is required")?;
        let plural = text(names, "plural").ok_or("spec.names.plural is required")?;
        let mut versions = Vec::new();
        let mut status = false;
        let mut storage_first = None;
        for version in spec.get("versions").and_then(Value::as_array).into_iter().flatten() {
            if version.get("served").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let name = text(version, "name").ok_or("spec.versions[].name is required")?;
            status |= version.pointer("/subresources/status").is_some();
            let columns = version
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| Column {
                    name: text(c, "name").unwrap_or_default(),
                    type_: text(c, "type").unwrap_or_default(),
                    json_path: text(c, "jsonPath").unwrap_or_default(),
                    description: text(c, "description").unwrap_or_default(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                })
                .collect();
            if version.get("storage").and_then(Value::as_bool) == Some(true) {
                storage_first = Some(versions.len());
            }
            versions.push(Version {
                name,
                columns,
                schema: version.pointer("/schema/openAPIV3Schema").cloned(),
            });
        }
        if let Some(i) = storage_first {
            let storage = versions.remove(i);
            versions.insert(0, storage);
        }
        if versions.is_empty() {
            return Err("spec.versions must serve at least one version".to_owned());
        }
        Ok(Self {
            group: text(spec, "group").ok_or("spec.group is required")?,
            versions,
            singular: text(names, "singular").unwrap_or_else(|| kind.to_ascii_lowercase()),
            kind,
            plural,
            namespaced: text(spec, "scope").as_deref() != Some("Cluster"),
            status_subresource: status,
            short_names: list(names.get("shortNames")),
            categories: list(names.get("categories")),
            field_selectors: Vec::new(),
            from_crd: true,
        })
    }
}
