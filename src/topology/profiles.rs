//! Impairment profiles: the file's `[profile.NAME]` tables checked into
//! [`Profile`]s, and name resolution against them and the built-ins.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::{Spanned, Value};

use super::error::{Checked, Issue};
use super::names::{check_name, did_you_mean};
use super::raw::{RawProfile, Str};
use crate::emulation::pipeline::MAX_JITTER_NS;
use crate::emulation::{
    BUILTIN_PROFILES, Distribution, LossSpec, Profile, UnitError, builtin_profile, check_percent,
    format_duration, parse_duration, parse_percent, parse_rate,
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

/// Largest reorder gap accepted, in packets.
pub const MAX_REORDER_GAP: i64 = 1_000_000;

/// Largest rate overhead accepted either way, in bytes per packet.
pub const MAX_RATE_OVERHEAD: i64 = 65_535;

/// Checks one `[profile.NAME]` table.
fn profile(raw: &RawProfile) -> Checked<Profile> {
    let pct = |value: &Option<Spanned<Value>>, field: &str| {
        opt(value, |v| percent(v, field)).map(|p| p.unwrap_or(0.0))
    };
    let (loss, loss_model) = match raw.loss.as_ref() {
        None => (0.0, LossSpec::Random),
        Some(spanned) => match spanned.get_ref() {
            RawLoss::Value(v) => (
                percent(v, "loss").map_err(|m| Issue::new(spanned.span(), m))?,
                LossSpec::Random,
            ),
            RawLoss::Table(keys) => (0.0, loss_table(spanned.span(), keys)?),
        },
    };
    let mut p = Profile {
        delay_ns: opt(&raw.delay, |v| duration(v, "delay"))?.unwrap_or(0),
        jitter_ns: opt(&raw.jitter, |v| duration(v, "jitter"))?.unwrap_or(0),
        distribution: Distribution::default(),
        loss,
        rate_bps: opt(&raw.rate, rate)?,
        corrupt: pct(&raw.corrupt, "corrupt")?,
        duplicate: pct(&raw.duplicate, "duplicate")?,
        reorder: pct(&raw.reorder, "reorder")?,
        limit: raw.limit.as_ref().map(limit).transpose()?,
        delay_correlation: pct(&raw.delay_correlation, "delay_correlation")?,
        loss_correlation: pct(&raw.loss_correlation, "loss_correlation")?,
        loss_model,
        duplicate_correlation: pct(&raw.duplicate_correlation, "duplicate_correlation")?,
        corrupt_correlation: pct(&raw.corrupt_correlation, "corrupt_correlation")?,
        reorder_correlation: pct(&raw.reorder_correlation, "reorder_correlation")?,
        reorder_gap: raw.reorder_gap.as_ref().map(reorder_gap).transpose()?,
        rate_overhead: raw
            .rate_overhead
            .as_ref()
            .map(rate_overhead)
            .transpose()?
            .unwrap_or(0),
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
    if let Some(jitter) = raw.jitter.as_ref().filter(|_| p.jitter_ns > MAX_JITTER_NS) {
        return Err(Issue::new(
            jitter.span(),
            format!(
                "jitter: {} is above netem's maximum of {} (2^31 - 1 ns)",
                format_duration(p.jitter_ns),
                format_duration(MAX_JITTER_NS)
            ),
        ));
    }
    if let Some(gap) = raw.reorder_gap.as_ref().filter(|_| p.reorder == 0.0) {
        return Err(Issue::new(
            gap.span(),
            "reorder_gap needs reorder above 0: the gap counts packets between reordered ones",
        ));
    }
    if let Some(corr) = raw
        .loss_correlation
        .as_ref()
        .filter(|_| matches!(p.loss_model, LossSpec::GilbertElliott { .. }))
    {
        return Err(Issue::new(
            corr.span(),
            "loss_correlation applies to random loss only; a Gilbert-Elliott model makes its own bursts (tune p and r)",
        ));
    }
    if let Some(overhead) = raw.rate_overhead.as_ref().filter(|_| p.rate_bps.is_none()) {
        return Err(Issue::new(
            overhead.span(),
            "rate_overhead needs a rate: it only changes how long a packet takes at the rate limit",
        ));
    }
    Ok(p)
}

/// `loss` as written: a percentage, or an inline table naming a loss model.
/// Table keys and values keep their spans so errors point inside the table.
#[derive(Debug)]
pub(crate) enum RawLoss {
    Value(Value),
    Table(Vec<(Str, Spanned<Value>)>),
}

impl<'de> Deserialize<'de> for RawLoss {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawLoss, D::Error> {
        deserializer.deserialize_any(RawLossVisitor)
    }
}

struct RawLossVisitor;

impl<'de> Visitor<'de> for RawLossVisitor {
    type Value = RawLoss;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a percentage such as \"1%\" or a table such as { model = \"gilbert-elliott\", p = \"1%\" }")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawLoss, E> {
        Ok(RawLoss::Value(Value::Boolean(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawLoss, E> {
        Ok(RawLoss::Value(Value::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawLoss, E> {
        Ok(RawLoss::Value(match i64::try_from(v) {
            Ok(n) => Value::Integer(n),
            Err(_) => Value::Float(v as f64),
        }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawLoss, E> {
        Ok(RawLoss::Value(Value::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawLoss, E> {
        Ok(RawLoss::Value(Value::String(v.to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawLoss, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(RawLoss::Value(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawLoss, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<Str>()? {
            let value = map.next_value::<Spanned<Value>>()?;
            keys.push((key, value));
        }
        Ok(RawLoss::Table(keys))
    }
}

/// Loss models a `loss` table may name.
const LOSS_MODELS: &str = "\"gilbert-elliott\" (random loss is a plain percentage, loss = \"1%\")";

/// Keys of a Gilbert-Elliott `loss` table.
const GE_KEYS: [&str; 5] = ["model", "p", "r", "bad_loss", "good_loss"];

/// Checks `loss = { model = "gilbert-elliott", p = "1%", ... }`.
fn loss_table(span: Range<usize>, keys: &[(Str, Spanned<Value>)]) -> Checked<LossSpec> {
    for (key, _) in keys {
        if !GE_KEYS.contains(&key.get_ref().as_str()) {
            return Err(Issue::new(
                key.span(),
                format!(
                    "loss: unknown key \"{}\"; a gilbert-elliott table takes {}",
                    key.get_ref(),
                    GE_KEYS.join(", ")
                ),
            ));
        }
    }
    let get = |name: &str| {
        keys.iter()
            .find(|(k, _)| k.get_ref() == name)
            .map(|(_, v)| v)
    };
    let Some(model) = get("model") else {
        return Err(Issue::new(
            span,
            format!("loss: a loss table needs a model; expected model = {LOSS_MODELS}"),
        ));
    };
    match model.get_ref() {
        Value::String(m) if m == "gilbert-elliott" => {}
        Value::String(m) => {
            return Err(Issue::new(
                model.span(),
                format!("loss: unknown model \"{m}\"; expected {LOSS_MODELS}"),
            ));
        }
        other => {
            return Err(Issue::new(
                model.span(),
                format!(
                    "loss: model must be a string, found {}; expected {LOSS_MODELS}",
                    describe(other)
                ),
            ));
        }
    }
    let field = |name: &str| -> Checked<Option<f64>> {
        get(name)
            .map(|v| {
                percent(v.get_ref(), &format!("loss {name}")).map_err(|m| Issue::new(v.span(), m))
            })
            .transpose()
    };
    let Some(p) = field("p")? else {
        return Err(Issue::new(
            span,
            "loss: gilbert-elliott needs p, the good-to-bad transition probability, e.g. p = \"1%\"",
        ));
    };
    if p == 0.0 {
        return Err(Issue::new(
            get("p").map_or(span, |v| v.span()),
            "loss p: gilbert-elliott p must be above 0%; with p = 0 the chain never leaves the good state",
        ));
    }
    let LossSpec::GilbertElliott {
        r: default_r,
        bad_loss: default_bad,
        good_loss: default_good,
        ..
    } = LossSpec::gilbert_elliott(p)
    else {
        unreachable!("gilbert_elliott builds a Gilbert-Elliott model")
    };
    Ok(LossSpec::GilbertElliott {
        p,
        r: field("r")?.unwrap_or(default_r),
        bad_loss: field("bad_loss")?.unwrap_or(default_bad),
        good_loss: field("good_loss")?.unwrap_or(default_good),
    })
}

fn reorder_gap(value: &Spanned<i64>) -> Checked<u32> {
    let n = *value.get_ref();
    u32::try_from(n)
        .ok()
        .filter(|_| (1..=MAX_REORDER_GAP).contains(&n))
        .ok_or_else(|| {
            Issue::new(
                value.span(),
                format!(
                    "reorder_gap: {n} is out of range; expected 1 to {MAX_REORDER_GAP} packets"
                ),
            )
        })
}

fn rate_overhead(value: &Spanned<i64>) -> Checked<i32> {
    let n = *value.get_ref();
    i32::try_from(n)
        .ok()
        .filter(|_| (-MAX_RATE_OVERHEAD..=MAX_RATE_OVERHEAD).contains(&n))
        .ok_or_else(|| {
            Issue::new(
                value.span(),
                format!(
                    "rate_overhead: {n} bytes is out of range; expected -{MAX_RATE_OVERHEAD} to {MAX_RATE_OVERHEAD}"
                ),
            )
        })
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
