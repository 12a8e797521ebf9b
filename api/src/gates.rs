//! Feature gates, in the Kubernetes `--feature-gates` syntax:
//! `ImagePullJobGate=true,KruiseDaemon=false`, plus `AllAlpha` / `AllBeta`.

use std::fmt;
use std::str::FromStr;

/// The gates prewarm knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gate {
    /// ImagePullJob and ImageListPullJob (alpha, off by default since OpenKruise 1.5).
    ImagePullJobGate,
    /// The node agent, and with it every kind here (beta, on by default).
    KruiseDaemon,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Alpha,
    Beta,
}

impl Gate {
    pub const ALL: [Gate; 2] = [Gate::ImagePullJobGate, Gate::KruiseDaemon];

    pub fn name(self) -> &'static str {
        match self {
            Self::ImagePullJobGate => "ImagePullJobGate",
            Self::KruiseDaemon => "KruiseDaemon",
        }
    }

    pub fn default_enabled(self) -> bool {
        match self {
            Self::ImagePullJobGate => false,
            Self::KruiseDaemon => true,
        }
    }

    fn stage(self) -> Stage {
        match self {
            Self::ImagePullJobGate => Stage::Alpha,
            Self::KruiseDaemon => Stage::Beta,
        }
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a `--feature-gates` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("unrecognized feature gate {name:?}: known gates are {}", known_gates())]
    Unknown { name: String },
    #[error("invalid value {value:?} for feature gate {name}: use true or false")]
    InvalidValue { name: String, value: String },
    #[error("missing '=' in feature gate setting {0:?}: use Name=true or Name=false")]
    Malformed(String),
}

fn known_gates() -> String {
    let mut names: Vec<&str> = Gate::ALL.iter().map(|g| g.name()).collect();
    names.extend(["AllAlpha", "AllBeta"]);
    names.join(", ")
}

/// The effective state of every gate after parsing and dependency rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureGates {
    image_pull_job: bool,
    kruise_daemon: bool,
}

impl Default for FeatureGates {
    fn default() -> Self {
        Self::from_settings(|gate| gate.default_enabled())
    }
}

impl FeatureGates {
    /// Builds the gates from a setting per gate, then applies the dependency:
    /// without the node agent (KruiseDaemon off) jobs cannot run, so
    /// ImagePullJobGate is forced off.
    fn from_settings(setting: impl Fn(Gate) -> bool) -> Self {
        let kruise_daemon = setting(Gate::KruiseDaemon);
        Self {
            image_pull_job: kruise_daemon && setting(Gate::ImagePullJobGate),
            kruise_daemon,
        }
    }

    pub fn enabled(&self, gate: Gate) -> bool {
        match gate {
            Gate::ImagePullJobGate => self.image_pull_job,
            Gate::KruiseDaemon => self.kruise_daemon,
        }
    }

    /// Parses `Name=bool` pairs separated by commas. Explicit settings win over
    /// `AllAlpha`/`AllBeta` whatever the order, as in Kubernetes.
    pub fn parse(value: &str) -> Result<Self, GateError> {
        let mut explicit: Vec<(Gate, bool)> = Vec::new();
        let mut all_alpha = None;
        let mut all_beta = None;
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, raw) = entry
                .split_once('=')
                .ok_or_else(|| GateError::Malformed(entry.to_owned()))?;
            let (name, raw) = (name.trim(), raw.trim());
            let enabled = parse_bool(raw).ok_or_else(|| GateError::InvalidValue {
                name: name.to_owned(),
                value: raw.to_owned(),
            })?;
            match name {
                "AllAlpha" => all_alpha = Some(enabled),
                "AllBeta" => all_beta = Some(enabled),
                _ => {
                    let gate = Gate::ALL
                        .into_iter()
                        .find(|g| g.name() == name)
                        .ok_or_else(|| GateError::Unknown { name: name.to_owned() })?;
                    explicit.push((gate, enabled));
                }
            }
        }
        Ok(Self::from_settings(|gate| {
            let stage_wide = match gate.stage() {
                Stage::Alpha => all_alpha,
                Stage::Beta => all_beta,
            };
            let last_explicit = explicit.iter().rev().find(|(g, _)| *g == gate).map(|(_, on)| *on);
            last_explicit.or(stage_wide).unwrap_or(gate.default_enabled())
        }))
    }
}

impl FromStr for FeatureGates {
    type Err = GateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FeatureGates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings: Vec<String> = Gate::ALL.iter().map(|g| format!("{g}={}", self.enabled(*g))).collect();
        f.write_str(&settings.join(","))
    }
}

/// Go's `strconv.ParseBool`, which Kubernetes uses for gate values.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}
