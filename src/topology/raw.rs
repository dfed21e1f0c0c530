//! The file as written: serde types that keep the span of every value, so
//! that validation can point at it. Unknown fields are rejected everywhere.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub(crate) use super::profiles::RawLoss;

/// A string value with its position.
pub(crate) type Str = Spanned<String>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub lab: Option<Spanned<RawLab>>,
    #[serde(default)]
    pub profile: BTreeMap<Str, Spanned<RawProfile>>,
    #[serde(default)]
    pub node: Vec<Spanned<RawNode>>,
    #[serde(default)]
    pub group: Vec<Spanned<RawGroup>>,
    #[serde(default)]
    pub segment: Vec<Spanned<RawSegment>>,
    #[serde(default)]
    pub link: Vec<Spanned<RawLink>>,
}

/// `[lab]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLab {
    pub name: Str,
    pub seed: Option<Spanned<u64>>,
    pub backend: Option<Str>,
    pub engine_busy_poll: Option<Str>,
    pub pool: Option<Str>,
    pub pool6: Option<Str>,
}

/// `[profile.NAME]`. Quantities are strings with units, or bare numbers
/// where that makes sense, so they are kept as TOML values until checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub delay: Option<Spanned<toml::Value>>,
    pub jitter: Option<Spanned<toml::Value>>,
    pub distribution: Option<Str>,
    /// A percentage, or an inline table naming a loss model.
    pub loss: Option<Spanned<RawLoss>>,
    pub rate: Option<Spanned<toml::Value>>,
    pub corrupt: Option<Spanned<toml::Value>>,
    pub duplicate: Option<Spanned<toml::Value>>,
    pub reorder: Option<Spanned<toml::Value>>,
    pub limit: Option<Spanned<i64>>,
    pub delay_correlation: Option<Spanned<toml::Value>>,
    pub loss_correlation: Option<Spanned<toml::Value>>,
    pub duplicate_correlation: Option<Spanned<toml::Value>>,
    pub corrupt_correlation: Option<Spanned<toml::Value>>,
    pub reorder_correlation: Option<Spanned<toml::Value>>,
    pub reorder_gap: Option<Spanned<i64>>,
    pub rate_overhead: Option<Spanned<i64>>,
}

/// `[[node]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Str,
    pub kind: Str,
    pub position: Option<Spanned<Vec<f64>>>,
    pub role: Option<Str>,
    pub options: Option<Spanned<toml::Table>>,
    pub addresses: Option<BTreeMap<Str, Str>>,
}

/// `[[group]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub name: Str,
    pub template: Str,
    pub count: Spanned<i64>,
    pub start: Option<Spanned<i64>>,
    pub kind: Str,
    pub role: Option<Str>,
    pub options: Option<Spanned<toml::Table>>,
    pub placement: Option<Spanned<RawPlacement>>,
}

/// Where a group's nodes are put.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub(crate) enum RawPlacement {
    /// Uniformly along a straight road.
    Road {
        from: Spanned<Vec<f64>>,
        to: Spanned<Vec<f64>>,
    },
    /// Uniformly in a rectangle.
    Area {
        min: Spanned<Vec<f64>>,
        max: Spanned<Vec<f64>>,
    },
}

/// `[[segment]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSegment {
    pub name: Str,
    pub kind: Option<Str>,
    pub members: Spanned<Vec<Str>>,
    pub profile: Option<Str>,
    pub subnet: Option<Str>,
    pub subnet6: Option<Str>,
    pub in_path: Option<bool>,
}

/// `[[link]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLink {
    pub a: Str,
    pub b: Str,
    pub name: Option<Str>,
    pub profile: Option<Str>,
    pub profile_ab: Option<Str>,
    pub profile_ba: Option<Str>,
    pub subnet: Option<Str>,
    pub subnet6: Option<Str>,
    pub in_path: Option<bool>,
}
