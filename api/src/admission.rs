//! The admission decision for one request, shared by the webhook and the offline
//! validator so both always agree: feature gates first, then the kind's rules.

use std::fmt;

use json_patch::PatchOperation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::caps::Caps;
use crate::field::{FieldError, FieldPath, Report};
use crate::gates::{FeatureGates, Gate};
use crate::node_status::{self, Writer};
use crate::spec::Spec;
use crate::{GROUP, defaults, validation};

/// The kinds prewarm admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ImagePullJob,
    ImageListPullJob,
    AdvancedCronJob,
    NodeImage,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::ImagePullJob,
        Kind::ImageListPullJob,
        Kind::AdvancedCronJob,
        Kind::NodeImage,
    ];
    /// The API versions every kind is served in.
    pub const VERSIONS: [&'static str; 2] = ["v1alpha1", "v1beta1"];

    pub fn name(self) -> &'static str {
        match self {
            Self::ImagePullJob => "ImagePullJob",
            Self::ImageListPullJob => "ImageListPullJob",
            Self::AdvancedCronJob => "AdvancedCronJob",
            Self::NodeImage => "NodeImage",
        }
    }

    /// The resource (plural) name, as in an AdmissionRequest's `resource`.
    pub fn plural(self) -> &'static str {
        match self {
            Self::ImagePullJob => "imagepulljobs",
            Self::ImageListPullJob => "imagelistpulljobs",
            Self::AdvancedCronJob => "advancedcronjobs",
            Self::NodeImage => "nodeimages",
        }
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Self::NodeImage)
    }

    pub fn from_name(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == kind)
    }

    pub fn from_plural(resource: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == resource)
    }

    /// Recognises `apps.kruise.io/v1alpha1` or `/v1beta1` with one of our kinds.
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Self> {
        let (group, version) = api_version.split_once('/')?;
        (group == GROUP && Self::VERSIONS.contains(&version))
            .then(|| Self::from_name(kind))
            .flatten()
    }

    /// The gates that must be on for this kind to be created or changed.
    pub fn required_gates(self) -> &'static [Gate] {
        match self {
            // A cron job only makes ImageListPullJobs: it is gated like them.
            Self::ImagePullJob | Self::ImageListPullJob | Self::AdvancedCronJob => {
                &[Gate::KruiseDaemon, Gate::ImagePullJobGate]
            }
            Self::NodeImage => &[Gate::KruiseDaemon],
        }
    }

    /// The RFC 6902 `add` operations that fill in this kind's defaults.
    pub fn defaults(self, object: &Value, now: &Time) -> Vec<PatchOperation> {
        self.spec_defaults(Spec::of(object), now)
    }

    /// [`Kind::defaults`] of an object with this spec.
    pub fn spec_defaults(self, spec: Spec<'_>, now: &Time) -> Vec<PatchOperation> {
        match self {
            Self::ImagePullJob => defaults::image_pull_job(spec),
            Self::ImageListPullJob => defaults::image_list_pull_job(spec),
            Self::AdvancedCronJob => defaults::advanced_cron_job(spec),
            Self::NodeImage => defaults::node_image(spec, now),
        }
    }

    /// The object as the mutating webhook leaves it: a copy with the defaults applied.
    pub fn with_defaults(self, object: &Value, now: &Time) -> Value {
        let mut defaulted = object.clone();
        // Defaults are `add` operations computed from this very object: they apply.
        if json_patch::patch(&mut defaulted, &json_patch::Patch(self.defaults(object, now))).is_err() {
            return object.clone();
        }
        defaulted
    }

    /// What this kind's rules say about an object's name, beyond the API
    /// server's own: only AdvancedCronJob has such a rule (OpenKruise's).
    pub fn name_rule(self, name: &str) -> Result<(), String> {
        match self {
            Self::AdvancedCronJob => validation::cron_job_name(name),
            Self::ImagePullJob | Self::ImageListPullJob | Self::NodeImage => Ok(()),
        }
    }

    /// Every rule of this kind; `old` is the stored object on UPDATE.
    pub fn validate(self, object: &Value, old: Option<&Value>) -> Report {
        self.validate_spec(Spec::of(object), old.map(Spec::of))
    }

    /// [`Kind::validate`] of an object with this spec; `old` is the stored one's.
    pub fn validate_spec(self, spec: Spec<'_>, old: Option<Spec<'_>>) -> Report {
        self.validate_spec_within(spec, old, &Caps::NONE)
    }

    /// [`Kind::validate_spec`], with the admin's caps on jobs' pull policies.
    pub fn validate_spec_within(self, spec: Spec<'_>, old: Option<Spec<'_>>, caps: &Caps) -> Report {
        match self {
            Self::ImagePullJob => validation::image_pull_job(spec, old, caps),
            Self::ImageListPullJob => validation::image_list_pull_job(spec, caps),
            Self::AdvancedCronJob => validation::advanced_cron_job(spec, old, caps),
            Self::NodeImage => validation::node_image(spec),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn parse(operation: &str) -> Option<Self> {
        match operation {
            "CREATE" => Some(Self::Create),
            "UPDATE" => Some(Self::Update),
            "DELETE" => Some(Self::Delete),
            "CONNECT" => Some(Self::Connect),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// What is being admitted.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub kind: Kind,
    pub operation: Operation,
    /// `status` for writes to the status subresource.
    pub sub_resource: Option<&'a str>,
    /// The spec of the object, when there is an object.
    pub object: Option<Spec<'a>>,
    pub old_object: Option<Spec<'a>>,
    /// The object's name (read by the AdvancedCronJob name rule) and status
    /// (read by the NodeImage `/status` rule).
    pub name: &'a str,
    pub status: Option<Spec<'a>>,
    /// Who asks (`request.userInfo`).
    pub writer: Writer<'a>,
}

impl<'a> Request<'a> {
    /// A write of `object` (with `old` stored before it) by nobody in
    /// particular, as the offline validator and tests ask.
    pub fn of(kind: Kind, operation: Operation, object: Option<Spec<'a>>, old_object: Option<Spec<'a>>) -> Self {
        Self {
            kind,
            operation,
            sub_resource: None,
            object,
            old_object,
            name: "",
            status: None,
            writer: Writer::default(),
        }
    }
}

/// The verdict of the validating side.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Allowed {
        warnings: Vec<String>,
    },
    /// HTTP 403: a disabled feature gate, or (`gate: None`) a writer who may
    /// not make this change.
    Forbidden {
        gate: Option<Gate>,
        message: String,
    },
    /// Field errors: HTTP 422, like the API server's own validation.
    Invalid {
        errors: Vec<FieldError>,
        warnings: Vec<String>,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// What a decision depends on besides the request: the feature gates, the
/// caps an admin put on jobs, and who the node agents are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub gates: FeatureGates,
    pub caps: Caps,
    /// The node agents' username (`system:serviceaccount:NS:NAME`): its
    /// NodeImage status writes are held to the agent's own node. `None`: not checked.
    pub node_agent: Option<String>,
}

impl Policy {
    /// The gates alone, no caps (OpenKruise's behaviour).
    pub fn gates(gates: FeatureGates) -> Self {
        Self {
            gates,
            caps: Caps::NONE,
            node_agent: None,
        }
    }
}

/// Decides one request. Deletes, subresource writes and updates that leave the
/// spec alone always pass, so neither a disabled gate nor a rule added since the
/// object was stored can block cleanup (finalizer removal, labels, status);
/// only a node agent's NodeImage status writes are held to its own node.
pub fn validate(request: &Request<'_>, policy: &Policy) -> Decision {
    let gates = &policy.gates;
    let allowed = Decision::Allowed { warnings: Vec::new() };
    if let (Kind::NodeImage, Operation::Update, Some("status"), Some(agent)) = (
        request.kind,
        request.operation,
        request.sub_resource,
        policy.node_agent.as_deref(),
    ) {
        let spec = request.object.unwrap_or(Spec::Tree(None));
        let status = request.status.unwrap_or(Spec::Tree(None));
        return node_status::decide(request.name, request.writer, agent, spec, status);
    }
    if matches!(request.operation, Operation::Delete | Operation::Connect) || request.sub_resource.is_some() {
        return allowed;
    }
    let Some(object) = request.object else {
        return allowed;
    };
    let old = request.old_object.filter(|_| request.operation == Operation::Update);
    if let Some(old) = old
        && old.same_as(object)
    {
        return allowed;
    }
    if let Some(gate) = request.kind.required_gates().iter().find(|g| !gates.enabled(**g)) {
        return Decision::Forbidden {
            gate: Some(*gate),
            message: gate_message(request.kind, *gate),
        };
    }
    let (mut errors, warnings) = request
        .kind
        .validate_spec_within(object, old, &policy.caps)
        .into_parts();
    if request.operation == Operation::Create
        && !request.name.is_empty()
        && let Err(detail) = request.kind.name_rule(request.name)
    {
        errors.insert(
            0,
            FieldError::invalid(FieldPath::new("metadata").child("name"), request.name, detail),
        );
    }
    if errors.is_empty() {
        Decision::Allowed { warnings }
    } else {
        Decision::Invalid { errors, warnings }
    }
}

fn gate_message(kind: Kind, gate: Gate) -> String {
    format!(
        "feature gate {gate} is disabled, so {kind} objects cannot be created and their spec cannot change; \
         enable it with --feature-gates={gate}=true on prewarm-webhook (deletes, status writes and metadata-only updates stay allowed)"
    )
}
