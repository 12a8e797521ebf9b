//! Who a request is and what it may do. The admin kubeconfig's token (or no
//! token) is all-powerful, as a cluster admin is; a token issued for a
//! ServiceAccount (TokenRequest on `serviceaccounts/token`) is authorised by
//! the stored Roles, ClusterRoles and their bindings with kube-apiserver's
//! rules: verbs, API groups, resources and subresources, resource names and
//! non-resource URLs, `*` wildcards; no aggregation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::store::Store;

/// The token in the admin kubeconfig.
pub const ADMIN_TOKEN: &str = "testapi";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Admin,
    ServiceAccount {
        namespace: String,
        name: String,
        /// `userInfo.extra` of a bound token: the Pod or Node it is bound to.
        extra: Extra,
    },
}

/// `userInfo.extra`: key → values.
pub type Extra = BTreeMap<String, Vec<String>>;

impl Identity {
    pub fn username(&self) -> String {
        match self {
            Self::Admin => "kubernetes-admin".to_owned(),
            Self::ServiceAccount { namespace, name, .. } => format!("system:serviceaccount:{namespace}:{name}"),
        }
    }

    /// `userInfo` as admission webhooks and SelfSubjectReview see it.
    pub fn user_info(&self) -> Value {
        let mut info = json!({"username": self.username(), "groups": self.groups()});
        if let Self::ServiceAccount { extra, .. } = self
            && !extra.is_empty()
        {
            info["extra"] = json!(extra);
        }
        info
    }

    pub fn groups(&self) -> Vec<String> {
        match self {
            Self::Admin => vec!["system:masters".to_owned(), "system:authenticated".to_owned()],
            Self::ServiceAccount { namespace, .. } => vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ],
        }
    }
}

/// Tokens issued for ServiceAccounts.
#[derive(Debug, Default)]
pub struct Tokens(Mutex<HashMap<String, Issued>>);

/// What a token stands for.
#[derive(Clone, Debug)]
struct Issued {
    namespace: String,
    name: String,
    extra: Extra,
    bound: Option<BoundObject>,
}

/// The object a token is bound to (TokenRequest's `boundObjectRef`): the
/// token stops authenticating once that object is gone or replaced, as
/// kube-apiserver's service-account authenticator checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundObject {
    /// `pods`, `nodes` or `secrets`.
    pub plural: &'static str,
    /// Empty for a Node.
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Tokens {
    pub fn issue(&self, namespace: &str, name: &str) -> String {
        self.issue_bound(namespace, name, Extra::new(), None)
    }

    /// A token whose `userInfo.extra` is `extra`, valid while `bound` exists.
    pub fn issue_bound(&self, namespace: &str, name: &str, extra: Extra, bound: Option<BoundObject>) -> String {
        let token = format!("sa.{}", uuid::Uuid::new_v4().simple());
        let issued = Issued {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            extra,
            bound,
        };
        if let Ok(mut tokens) = self.0.lock() {
            tokens.insert(token.clone(), issued);
        }
        token
    }

    /// The identity behind an `Authorization` header; 401 for an unknown
    /// token, or one whose bound object is gone.
    pub fn identify(&self, store: &Store, authorization: Option<&str>) -> Result<Identity, ApiError> {
        let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim) else {
            return Ok(Identity::Admin);
        };
        if token == ADMIN_TOKEN {
            return Ok(Identity::Admin);
        }
        let known = self.0.lock().ok().and_then(|tokens| tokens.get(token).cloned());
        match known {
            Some(issued) if issued.bound.as_ref().is_none_or(|bound| bound.exists(store)) => {
                Ok(Identity::ServiceAccount {
                    namespace: issued.namespace,
                    name: issued.name,
                    extra: issued.extra,
                })
            }
            _ => Err(ApiError::unauthorized()),
        }
    }
}

impl BoundObject {
    fn exists(&self, store: &Store) -> bool {
        store
            .resource_type("", "v1", self.plural)
            .and_then(|rt| store.get(&rt, &self.namespace, &self.name).ok())
            .is_some_and(|object| object.pointer("/metadata/uid").and_then(Value::as_str) == Some(&self.uid))
    }
}

/// RBAC decisions on ServiceAccounts' requests, for least-privilege tests:
/// the newest [`AUDIT_CAPACITY`] are kept.
#[derive(Debug, Default)]
pub struct Audit(Mutex<std::collections::VecDeque<Decision>>);

pub const AUDIT_CAPACITY: usize = 100_000;

#[derive(Clone, Debug)]
pub struct Decision {
    pub user: String,
    pub request: Attributes,
    pub allowed: bool,
}

impl Audit {
    pub fn record(&self, identity: &Identity, request: &Attributes, allowed: bool) {
        if !matches!(identity, Identity::ServiceAccount { .. }) {
            return;
        }
        if let Ok(mut log) = self.0.lock() {
            if log.len() == AUDIT_CAPACITY {
                log.pop_front();
            }
            log.push_back(Decision {
                user: identity.username(),
                request: request.clone(),
                allowed,
            });
        }
    }

    pub fn decisions(&self) -> Vec<Decision> {
        self.0
            .lock()
            .map(|log| log.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A rule as a binding grants it: cluster-wide (a ClusterRoleBinding) or in one namespace.
#[derive(Clone, Debug)]
pub struct ScopedRule {
    pub namespace: Option<String>,
    pub rule: Value,
}

impl ScopedRule {
    fn grants(&self, request: &Attributes) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| request.namespace.as_deref() == Some(ns.as_str()))
            && grants(&self.rule, request)
    }

    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} in {ns}", self.rule),
            None => self.rule.to_string(),
        }
    }
}

/// The rules that no request of `requests` needs: removing any other one
/// would deny at least one of them.
pub fn surplus(rules: &[ScopedRule], requests: &[Attributes]) -> Vec<String> {
    (0..rules.len())
        .filter(|&i| {
            !requests.iter().any(|request| {
                rules[i].grants(request)
                    && !rules
                        .iter()
                        .enumerate()
                        .any(|(j, other)| j != i && other.grants(request))
            })
        })
        .map(|i| rules[i].describe())
        .collect()
}

/// Verbs of `rules` that no request of `requests` used.
pub fn unused_verbs(rules: &[ScopedRule], requests: &[Attributes]) -> Vec<String> {
    let mut unused = Vec::new();
    for scoped in rules {
        for verb in scoped.rule["verbs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let mut only_verb = scoped.clone();
            only_verb.rule["verbs"] = serde_json::json!([verb]);
            if !requests.iter().any(|request| only_verb.grants(request)) {
                unused.push(format!("{verb} of {}", scoped.describe()));
            }
        }
    }
    unused
}

/// How the requests a ServiceAccount made fit the rules shipped for it.
#[derive(Debug)]
pub struct PrivilegeReport {
    pub requests: Vec<Attributes>,
    pub rules: Vec<ScopedRule>,
    pub denied: Vec<Attributes>,
    pub surplus: Vec<String>,
    pub unused_verbs: Vec<String>,
}

impl PrivilegeReport {
    /// What breaks least privilege: refused requests, rules or verbs no request needed.
    pub fn problems(&self) -> Vec<String> {
        let denied = self.denied.iter().map(|r| format!("403: {r:?}"));
        let surplus = self.surplus.iter().map(|r| format!("rule no request needed: {r}"));
        let unused = self.unused_verbs.iter().map(|v| format!("verb no request used: {v}"));
        denied.chain(surplus).chain(unused).collect()
    }
}

/// Checks ServiceAccount `namespace/name`'s recorded `decisions` against the
/// rules `objects` (rendered RBAC manifests) grant it.
pub fn least_privilege(decisions: &[Decision], objects: &[Value], namespace: &str, name: &str) -> PrivilegeReport {
    let user = format!("system:serviceaccount:{namespace}:{name}");
    let mine: Vec<&Decision> = decisions.iter().filter(|d| d.user == user).collect();
    let requests: Vec<Attributes> = mine.iter().map(|d| d.request.clone()).collect();
    let rules = granted_to(objects, namespace, name);
    PrivilegeReport {
        denied: mine.iter().filter(|d| !d.allowed).map(|d| d.request.clone()).collect(),
        surplus: surplus(&rules, &requests),
        unused_verbs: unused_verbs(&rules, &requests),
        requests,
        rules,
    }
}

/// The rules the RBAC objects of `objects` (Roles, ClusterRoles and their
/// bindings, as rendered manifests) grant to ServiceAccount `namespace/name`.
pub fn granted_to(objects: &[Value], namespace: &str, name: &str) -> Vec<ScopedRule> {
    let identity = Identity::ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        extra: Extra::new(),
    };
    let role = |kind: &str, role_name: &str, role_namespace: Option<&str>| {
        objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == role_name
                && (kind == "ClusterRole" || o["metadata"]["namespace"].as_str() == role_namespace)
        })
    };
    let mut rules = Vec::new();
    for binding in objects.iter().filter(|o| binds(o, &identity)) {
        let scope = match binding["kind"].as_str() {
            Some("ClusterRoleBinding") => None,
            Some("RoleBinding") => binding["metadata"]["namespace"].as_str(),
            _ => continue,
        };
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        for rule in role(role_kind, role_name, scope)
            .and_then(|r| r["rules"].as_array())
            .into_iter()
            .flatten()
        {
            rules.push(ScopedRule {
                namespace: scope.map(str::to_owned),
                rule: rule.clone(),
            });
        }
    }
    rules
}

/// One request, as RBAC sees it.
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// For non-resource requests (`/healthz`, `/metrics`).
    pub path: Option<String>,
}

fn list(store: &Store, plural: &str, namespace: Option<&str>) -> Vec<Value> {
    store
        .resource_type("rbac.authorization.k8s.io", "v1", plural)
        .map(|rt| store.list(&rt, namespace).0)
        .unwrap_or_default()
}

fn binds(binding: &Value, identity: &Identity) -> bool {
    let Identity::ServiceAccount { namespace, name, .. } = identity else {
        return true;
    };
    let groups = identity.groups();
    let username = identity.username();
    binding["subjects"].as_array().into_iter().flatten().any(|subject| {
        let text = |k: &str| subject[k].as_str().unwrap_or_default();
        match text("kind") {
            "ServiceAccount" => text("name") == name && text("namespace") == namespace,
            "User" => text("name") == username,
            "Group" => groups.iter().any(|g| g == text("name")),
            _ => false,
        }
    })
}

/// The rules granted to `identity` in `namespace` (cluster-wide ones included).
pub fn rules(store: &Store, identity: &Identity, namespace: Option<&str>) -> Vec<Value> {
    let cluster_roles = list(store, "clusterroles", None);
    let role_rules = |kind: &str, name: &str, role_namespace: Option<&str>| -> Vec<Value> {
        let roles = match kind {
            "ClusterRole" => cluster_roles.clone(),
            _ => list(store, "roles", role_namespace),
        };
        roles
            .into_iter()
            .filter(|r| r["metadata"]["name"] == name)
            .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let mut granted = Vec::new();
    for binding in list(store, "clusterrolebindings", None)
        .iter()
        .filter(|b| binds(b, identity))
    {
        if binding["roleRef"]["kind"] == "ClusterRole" {
            granted.extend(role_rules(
                "ClusterRole",
                binding["roleRef"]["name"].as_str().unwrap_or_default(),
                None,
            ));
        }
    }
    if let Some(namespace) = namespace {
        for binding in list(store, "rolebindings", Some(namespace))
            .iter()
            .filter(|b| binds(b, identity))
        {
            let kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
            granted.extend(role_rules(
                kind,
                binding["roleRef"]["name"].as_str().unwrap_or_default(),
                Some(namespace),
            ));
        }
    }
    granted
}

fn has(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|i| i == "*" || i.as_str() == Some(wanted)))
}

fn grants(rule: &Value, request: &Attributes) -> bool {
    if !has(&rule["verbs"], &request.verb) {
        return false;
    }
    if let Some(path) = &request.path {
        return rule["nonResourceURLs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|url| {
                url == "*" || url == path || url.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
            });
    }
    let resource = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let resource_matches = rule["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|r| {
            r == "*"
                || r == resource
                || request
                    .subresource
                    .as_ref()
                    .is_some_and(|sub| r == format!("*/{sub}") || r == format!("{}/*", request.resource))
        });
    let names = rule["resourceNames"].as_array().filter(|n| !n.is_empty());
    let name_matches = match (names, &request.name) {
        (None, _) => true,
        (Some(names), Some(name)) => names.iter().any(|n| n.as_str() == Some(name)),
        (Some(_), None) => false,
    };
    has(&rule["apiGroups"], &request.group) && resource_matches && name_matches
}

pub fn allowed(store: &Store, identity: &Identity, request: &Attributes) -> bool {
    *identity == Identity::Admin
        || rules(store, identity, request.namespace.as_deref())
            .iter()
            .any(|rule| grants(rule, request))
}

/// kube-apiserver's 403 for a request RBAC does not allow.
pub fn denial(identity: &Identity, request: &Attributes) -> ApiError {
    let user = identity.username();
    if let Some(path) = &request.path {
        return ApiError::forbidden(format!(
            "forbidden: User \"{user}\" cannot {} path \"{path}\"",
            request.verb
        ));
    }
    let resource = match &request.subresource {
        Some(sub) => format!("{}/{sub}", request.resource),
        None => request.resource.clone(),
    };
    let qualified = if request.group.is_empty() {
        request.resource.clone()
    } else {
        format!("{}.{}", request.resource, request.group)
    };
    let subject = match &request.name {
        Some(name) => format!("{qualified} \"{name}\""),
        None => qualified,
    };
    let scope = match &request.namespace {
        Some(namespace) => format!("in the namespace \"{namespace}\""),
        None => "at the cluster scope".to_owned(),
    };
    ApiError::forbidden(format!(
        "{subject} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        request.verb, request.group
    ))
}

/// The status of a SelfSubjectAccessReview body.
pub fn access_review(store: &Store, identity: &Identity, review: &Value) -> Value {
    let text = |pointer: &str| {
        review
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let request = match review.pointer("/spec/nonResourceAttributes") {
        Some(_) => Attributes {
            verb: text("/spec/nonResourceAttributes/verb").unwrap_or_default(),
            path: text("/spec/nonResourceAttributes/path"),
            ..Attributes::default()
        },
        None => Attributes {
            verb: text("/spec/resourceAttributes/verb").unwrap_or_default(),
            group: text("/spec/resourceAttributes/group").unwrap_or_default(),
            resource: text("/spec/resourceAttributes/resource").unwrap_or_default(),
            subresource: text("/spec/resourceAttributes/subresource"),
            namespace: text("/spec/resourceAttributes/namespace"),
            name: text("/spec/resourceAttributes/name"),
            path: None,
        },
    };
    let allowed = allowed(store, identity, &request);
    json!({"allowed": allowed, "reason": if allowed { "RBAC: allowed" } else { "" }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_as_kube_apiserver_matches_them() {
        let request = |verb: &str, resource: &str, sub: Option<&str>, name: Option<&str>| Attributes {
            verb: verb.into(),
            group: "apps.kruise.io".into(),
            resource: resource.into(),
            subresource: sub.map(Into::into),
            namespace: Some("ns".into()),
            name: name.map(Into::into),
            path: None,
        };
        let rule = json!({"apiGroups": ["apps.kruise.io"], "resources": ["imagepulljobs", "imagepulljobs/status"], "verbs": ["get", "patch"]});
        assert!(grants(&rule, &request("get", "imagepulljobs", None, Some("j"))));
        assert!(grants(
            &rule,
            &request("patch", "imagepulljobs", Some("status"), Some("j"))
        ));
        assert!(!grants(&rule, &request("delete", "imagepulljobs", None, Some("j"))));
        assert!(!grants(&rule, &request("get", "nodeimages", None, None)));
        let named = json!({"apiGroups": ["*"], "resources": ["*"], "resourceNames": ["only"], "verbs": ["*"]});
        assert!(grants(&named, &request("update", "imagepulljobs", None, Some("only"))));
        assert!(!grants(&named, &request("list", "imagepulljobs", None, None)));
        let urls = json!({"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]});
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: Some(p.into()),
            ..Attributes::default()
        };
        assert!(
            grants(&urls, &path("/metrics"))
                && grants(&urls, &path("/debug/pprof"))
                && !grants(&urls, &path("/healthz"))
        );
    }
}
