//! Impairment profiles: the file's `[profile.NAME]` tables checked into
//! [`Profile`]s, and name resolution against them and the built-ins.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::{Spanned, Value};

use super::error::{Checked, Issue};
use super::names::{check_name, did_you_mean};
use super::raw::{RawProfile, Str};
use crate::emulation::{
    BUILTIN_PROFILES, Distribution, Profile, UnitError, builtin_profile, check_percent,
    parse_duration, parse_percent, parse_rate,
};

/// Largest queue limit accepted, in packets.
pub const MAX_QUEUE_LIMIT: i64 = 1_000_000;

/// The profiles a file defines, and those its segments and links use.
pub(crate) struct Profiles {
    defined: BTreeMap<String, Profile>,
    used: BTreeMap<String, Profile>,
}

impl Profiles {
    /// Checks every `[profile.NAME]` table, used or not.
    pub fn from_raw(raw: &BTreeMap<Str, Spanned<RawProfile>>) -> Checked<Profiles> {
        let mut defined = BTreeMap::new();
        // In file order, so that the first error reported is the first in the file.
        let mut tables: Vec<_> = raw.iter().collect();
        tables.sort_by_key(|(_, table)| table.span().start);
        for (name, table) in tables {
            check_name(name.get_ref(), "profile").map_err(|m| Issue::new(name.span(), m))?;
            defined.insert(name.get_ref().clone(), profile(table.get_ref())?);
        }
        Ok(Profiles {
            defined,
            used: BTreeMap::new(),
        })
    }

    /// Resolves a profile reference (file first, then built-in) and records it
    /// as used. Returns the name to store in the model.
    pub fn resolve(&mut self, name: &Str) -> Checked<String> {
        let key = name.get_ref();
        let found = self
            .defined
            .get(key)
            .cloned()
            .or_else(|| builtin_profile(key));
        let Some(profile) = found else {
            return Err(Issue::new(name.span(), self.unknown(key)));
        };
        self.used.insert(key.clone(), profile);
        Ok(key.clone())
    }

    /// Resolves an optional reference.
    pub fn resolve_opt(&mut self, name: Option<&Str>) -> Checked<Option<String>> {
        name.map(|n| self.resolve(n)).transpose()
    }

    /// The profiles that were resolved at least once.
    pub fn into_used(self) -> BTreeMap<String, Profile> {
        self.used
    }

    fn unknown(&self, name: &str) -> String {
        let mut known: Vec<&str> = BUILTIN_PROFILES.to_vec();
        known.extend(self.defined.keys().map(String::as_str));
        known.sort_unstable();
        known.dedup();
        let hint = did_you_mean(name, known.iter().copied());
        format!(
            "unknown profile \"{name}\"; known profiles: {}{hint}",
            known.join(", ")
        )
    }
}

/// Checks one `[profile.NAME]` table.
fn profile(raw: &RawProfile) -> Checked<Profile> {
    let mut p = Profile {
        delay_ns: opt(&raw.delay, |v| duration(v, "delay"))?.unwrap_or(0),
        jitter_ns: opt(&raw.jitter, |v| duration(v, "jitter"))?.unwrap_or(0),
        distribution: Distribution::default(),
        loss: opt(&raw.loss, |v| percent(v, "loss"))?.unwrap_or(0.0),
        rate_bps: opt(&raw.rate, rate)?,
        corrupt: opt(&raw.corrupt, |v| percent(v, "corrupt"))?.unwrap_or(0.0),
        duplicate: opt(&raw.duplicate, |v| percent(v, "duplicate"))?.unwrap_or(0.0),
        reorder: opt(&raw.reorder, |v| percent(v, "reorder"))?.unwrap_or(0.0),
        limit: raw.limit.as_ref().map(limit).transpose()?,
    };
    if let Some(d) = &raw.distribution {
        p.distribution = Distribution::parse(d.get_ref()).map_err(|e| at(d.span(), e))?;
    }
    if let Some(reorder) = raw
        .reorder
        .as_ref()
        .filter(|_| p.reorder > 0.0 && p.delay_ns == 0)
    {
        return Err(Issue::new(
            reorder.span(),
            "reorder needs a delay: packets are reordered by sending some without the delay; set delay above 0",
        ));
    }
    Ok(p)
}

/// Applies a check to an optional spanned value.
fn opt<T>(
    value: &Option<Spanned<Value>>,
    check: impl Fn(&Value) -> Result<T, String>,
) -> Checked<Option<T>> {
    value
        .as_ref()
        .map(|v| check(v.get_ref()).map_err(|m| Issue::new(v.span(), m)))
        .transpose()
}

fn at(span: Range<usize>, e: UnitError) -> Issue {
    Issue::new(span, e.message())
}

/// A duration string (`"20ms"`) or the number 0.
fn duration(value: &Value, field: &str) -> Result<u64, String> {
    match value {
        Value::String(s) => parse_duration(s).map_err(|e| format!("{field}: {e}")),
        Value::Integer(0) => Ok(0),
        Value::Integer(n) if *n < 0 => Err(format!(
            "{field}: negative duration {n}; expected a value of 0 or more, e.g. \"20ms\""
        )),
        other => Err(format!(
            "{field}: expected a duration string such as \"20ms\" (units ns, us, ms, s), found {}",
            describe(other)
        )),
    }
}

/// A percentage string (`"1%"`) or a bare number meaning percent.
fn percent(value: &Value, field: &str) -> Result<f64, String> {
    let checked = match value {
        Value::String(s) => parse_percent(s),
        Value::Integer(n) => check_percent(*n as f64),
        Value::Float(f) => check_percent(*f),
        other => {
            return Err(format!(
                "{field}: expected a percentage such as \"1%\", found {}",
                describe(other)
            ));
        }
    };
    checked.map_err(|e| format!("{field}: {e}"))
}

/// A rate string (`"10mbit"`).
fn rate(value: &Value) -> Result<u64, String> {
    match value {
        Value::String(s) => parse_rate(s).map_err(|e| format!("rate: {e}")),
        other => Err(format!(
            "rate: expected a rate string such as \"10mbit\", found {}",
            describe(other)
        )),
    }
}

fn limit(value: &Spanned<i64>) -> Checked<u32> {
    let n = *value.get_ref();
    u32::try_from(n)
        .ok()
        .filter(|_| (1..=MAX_QUEUE_LIMIT).contains(&n))
        .ok_or_else(|| {
            Issue::new(
                value.span(),
                format!("limit: {n} packets is out of range; expected 1 to {MAX_QUEUE_LIMIT}"),
            )
        })
}

/// "integer 5", "boolean true", ... for type errors.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("string \"{s}\""),
        Value::Integer(n) => format!("integer {n}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "an array".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}
