//! The impairment model: what a profile asks of one direction of a link.
//!
//! Units are fixed here so both backends read the same numbers: durations in
//! nanoseconds, probabilities as percentages in `0.0..=100.0`, rate in bits/s.

use serde::{Deserialize, Serialize};

/// Delay distribution, as netem names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

/// How a profile loses frames. See `docs/impairments.md`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum LossSpec {
    /// Independent (or, with [`Profile::loss_correlation`], correlated) loss
    /// with probability [`Profile::loss`]: netem `loss random`.
    #[default]
    Random,
    /// Two-state Gilbert-Elliott chain, netem `loss gemodel p r 1-h 1-k`. All
    /// percent: `p` good-to-bad, `r` bad-to-good, `bad_loss` the loss
    /// probability in the bad state (1-h), `good_loss` in the good state
    /// (1-k). [`Profile::loss`] and [`Profile::loss_correlation`] are 0.
    GilbertElliott {
        p: f64,
        r: f64,
        bad_loss: f64,
        good_loss: f64,
    },
}

impl LossSpec {
    /// Gilbert-Elliott with `tc`'s defaults for everything but `p`:
    /// `r = 100 - p`, `bad_loss = 100`, `good_loss = 0`.
    pub fn gilbert_elliott(p: f64) -> LossSpec {
        LossSpec::GilbertElliott {
            p,
            r: 100.0 - p,
            bad_loss: 100.0,
            good_loss: 0.0,
        }
    }
}

/// Impairments for one direction of a link or port. All zero means a clean wire.
///
/// Fields missing from a serialised profile take their defaults, so plans
/// written before a field existed still read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    /// Mean one-way delay, ns.
    pub delay_ns: u64,
    /// Jitter around the mean, ns (the distribution's spread).
    pub jitter_ns: u64,
    pub distribution: Distribution,
    /// Loss probability, percent (random loss only; 0 with Gilbert-Elliott).
    pub loss: f64,
    /// Rate limit in bits/s; `None` is unlimited.
    pub rate_bps: Option<u64>,
    /// Corruption probability (one bit flipped), percent.
    pub corrupt: f64,
    /// Duplication probability, percent.
    pub duplicate: f64,
    /// Reordering probability (sent without delay), percent. Needs a delay.
    pub reorder: f64,
    /// Queue limit in packets; `None` is the backend default (1000).
    pub limit: Option<u32>,
    /// Correlation of successive delay draws, percent (netem's delay
    /// correlation; matters only with jitter).
    pub delay_correlation: f64,
    /// Correlation of successive random-loss decisions, percent. Random loss
    /// only.
    pub loss_correlation: f64,
    /// The loss model: random (with `loss`) or Gilbert-Elliott.
    pub loss_model: LossSpec,
    /// Correlation of successive duplication decisions, percent.
    pub duplicate_correlation: f64,
    /// Correlation of successive corruption decisions, percent.
    pub corrupt_correlation: f64,
    /// Correlation of successive reorder decisions, percent.
    pub reorder_correlation: f64,
    /// netem's reorder `gap`: after a reordered frame the next `gap - 1`
    /// frames are delayed. `None` is 1 (every frame a candidate), as in `tc`.
    /// Only with `reorder` above 0.
    pub reorder_gap: Option<u32>,
    /// Bytes added to (negative: removed from) each frame's length when the
    /// rate limit computes its transmission time (netem `rate ... PACKETOVERHEAD`).
    pub rate_overhead: i32,
}

impl Distribution {
    /// Every distribution, in the order messages list them.
    pub const ALL: [Distribution; 4] = [
        Distribution::Uniform,
        Distribution::Normal,
        Distribution::Pareto,
        Distribution::Paretonormal,
    ];

    /// The name used in topology files and by netem.
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
            Distribution::Pareto => "pareto",
            Distribution::Paretonormal => "paretonormal",
        }
    }

    /// Parses a distribution name as written in a topology file.
    pub fn parse(text: &str) -> Result<Distribution, UnitError> {
        Distribution::ALL
            .into_iter()
            .find(|d| d.as_str() == text)
            .ok_or_else(|| {
                UnitError(format!(
                    "unknown distribution \"{text}\"; expected one of uniform, normal, pareto, paretonormal"
                ))
            })
    }
}

/// Why a duration, percentage or rate string was rejected. The message says
/// what was found and what is allowed, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

impl UnitError {
    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// A non-negative decimal number as written: `digits / 10^scale`.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    digits: u128,
    scale: u32,
}

impl Decimal {
    fn to_f64(self) -> f64 {
        // At most 24 digits: the conversion is as exact as f64 allows.
        self.digits as f64 / 10f64.powi(self.scale as i32)
    }

    /// `self * factor` as a whole number.
    fn times(self, factor: u64) -> Scaled {
        let Some(product) = self.digits.checked_mul(u128::from(factor)) else {
            return Scaled::TooLarge;
        };
        // scale <= 24 (see parse_decimal), so the power always fits a u128.
        let Some(divisor) = 10u128.checked_pow(self.scale) else {
            return Scaled::TooLarge;
        };
        if product % divisor != 0 {
            return Scaled::Fraction;
        }
        u64::try_from(product / divisor).map_or(Scaled::TooLarge, Scaled::Whole)
    }
}

/// A decimal number times a unit factor.
enum Scaled {
    Whole(u64),
    /// Not a whole number of the base unit.
    Fraction,
    /// Past `u64::MAX`.
    TooLarge,
}

/// Splits `"1.5ms"` into the number and the unit (`"ms"`), rejecting signs,
/// exponents and anything that is not `digits[.digits]`.
fn split_number<'a>(
    text: &'a str,
    what: &str,
    example: &str,
) -> Result<(Decimal, &'a str), UnitError> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(UnitError(format!(
            "negative {what} \"{text}\"; expected a value of 0 or more, e.g. \"{example}\""
        )));
    }
    let end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(end);
    let decimal = parse_decimal(number).ok_or_else(|| {
        UnitError(format!(
            "invalid {what} \"{text}\"; expected a number followed by a unit, e.g. \"{example}\""
        ))
    })?;
    Ok((decimal, unit.trim_start()))
}

/// Parses `digits[.digits]`: at least one digit, at most 24 significant
/// digits and 24 decimals, so that [`Decimal::times`] cannot overflow `u128`
/// for any unit factor below 10^13.
fn parse_decimal(number: &str) -> Option<Decimal> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let all = format!("{int}{frac}");
    let significant = all.trim_start_matches('0');
    if significant.len() > 24 || frac.len() > 24 || !all.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    let scale = u32::try_from(frac.len()).ok()?;
    Some(Decimal { digits, scale })
}

/// Duration units and their length in nanoseconds.
const DURATION_UNITS: [(&str, u64); 4] = [
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a duration such as `"20ms"`, `"1.5s"`, `"250us"`, `"0"` into
/// nanoseconds.
///
/// Units: `ns`, `us`, `ms`, `s`. A bare `"0"` needs no unit. Negative values,
/// other units, fractions of a nanosecond and values past `u64::MAX` ns are
/// errors.
pub fn parse_duration(text: &str) -> Result<u64, UnitError> {
    let (value, unit) = split_number(text, "duration", "20ms")?;
    if unit.is_empty() {
        return match value.digits {
            0 => Ok(0),
            _ => Err(UnitError(format!(
                "duration \"{text}\" has no unit; expected a number followed by ns, us, ms or s, e.g. \"20ms\""
            ))),
        };
    }
    let (_, factor) = DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(|| {
            UnitError(format!(
                "unknown duration unit \"{unit}\" in \"{text}\"; expected one of ns, us, ms, s"
            ))
        })?;
    match value.times(*factor) {
        Scaled::Whole(ns) => Ok(ns),
        Scaled::Fraction => Err(UnitError(format!(
            "duration \"{text}\" is not a whole number of nanoseconds"
        ))),
        Scaled::TooLarge => Err(UnitError(format!("duration \"{text}\" is too large"))),
    }
}

/// Formats nanoseconds as the shortest exact string [`parse_duration`] reads
/// back: `0` -> `"0"`, `1_500_000_000` -> `"1.5s"`, `20_000_000` -> `"20ms"`.
pub fn format_duration(ns: u64) -> String {
    if ns == 0 {
        return "0".to_string();
    }
    let (unit, factor) = DURATION_UNITS
        .iter()
        .find(|(_, factor)| ns >= *factor)
        .copied()
        .unwrap_or(("ns", 1));
    let whole = ns / factor;
    let rest = ns % factor;
    if rest == 0 {
        return format!("{whole}{unit}");
    }
    let width = factor.ilog10() as usize;
    let fraction = format!("{rest:0width$}");
    format!("{whole}.{}{unit}", fraction.trim_end_matches('0'))
}

/// Parses a percentage such as `"1%"`, `"0.5%"` or `"100%"` into a number in
/// `0.0..=100.0`. The `%` sign is required.
pub fn parse_percent(text: &str) -> Result<f64, UnitError> {
    let (value, unit) = split_number(text, "percentage", "1%")?;
    if unit != "%" {
        return Err(UnitError(format!(
            "invalid percentage \"{text}\"; expected a number from 0 to 100 followed by %, e.g. \"1%\""
        )));
    }
    let percent = value.to_f64();
    if percent > 100.0 {
        return Err(UnitError(format!(
            "percentage \"{text}\" is above 100%; expected 0% to 100%"
        )));
    }
    Ok(percent)
}

/// Accepts a bare number as a percentage (`0.5` means 0.5 %), if it lies in
/// `0.0..=100.0`.
pub fn check_percent(percent: f64) -> Result<f64, UnitError> {
    if (0.0..=100.0).contains(&percent) {
        Ok(percent)
    } else {
        Err(UnitError(format!(
            "percentage {percent} is out of range; expected 0 to 100"
        )))
    }
}

/// Rate units and their value in bits per second. As in tc, `bps` means
/// bytes per second; all prefixes are SI (1000-based).
const RATE_UNITS: [(&str, u64); 10] = [
    ("bit", 1),
    ("kbit", 1_000),
    ("mbit", 1_000_000),
    ("gbit", 1_000_000_000),
    ("tbit", 1_000_000_000_000),
    ("bps", 8),
    ("kbps", 8_000),
    ("mbps", 8_000_000),
    ("gbps", 8_000_000_000),
    ("tbps", 8_000_000_000_000),
];

/// Parses a rate such as `"10mbit"` or `"1.5gbit"` into bits per second.
///
/// Units (case-insensitive, SI): `bit`, `kbit`, `mbit`, `gbit`, `tbit`, and as
/// in tc `bps`, `kbps`, `mbps`, `gbps`, `tbps` for BYTES per second. The rate
/// must be a whole number of bits per second above zero.
pub fn parse_rate(text: &str) -> Result<u64, UnitError> {
    let (value, unit) = split_number(text, "rate", "10mbit")?;
    let lower = unit.to_ascii_lowercase();
    let (_, factor) = RATE_UNITS
        .iter()
        .find(|(name, _)| *name == lower)
        .ok_or_else(|| {
            UnitError(format!(
                "unknown rate unit \"{unit}\" in \"{text}\"; expected one of bit, kbit, mbit, gbit, tbit (bits/s) or bps, kbps, mbps, gbps, tbps (bytes/s)"
            ))
        })?;
    match value.times(*factor) {
        Scaled::Whole(0) => Err(UnitError(format!(
            "rate \"{text}\" is zero; expected a rate above 0, e.g. \"10mbit\""
        ))),
        Scaled::Whole(bps) => Ok(bps),
        Scaled::Fraction => Err(UnitError(format!(
            "rate \"{text}\" is not a whole number of bits per second"
        ))),
        Scaled::TooLarge => Err(UnitError(format!("rate \"{text}\" is too large"))),
    }
}

/// Formats bits per second with the largest exact SI bit unit: `"10mbit"`.
pub fn format_rate(bps: u64) -> String {
    RATE_UNITS[..5]
        .iter()
        .rev()
        .find(|(_, factor)| bps.is_multiple_of(*factor) && bps >= *factor)
        .map(|(unit, factor)| format!("{}{unit}", bps / factor))
        .unwrap_or_else(|| format!("{bps}bit"))
}

/// Names of the built-in profiles, in the order documentation lists them.
pub const BUILTIN_PROFILES: [&str; 6] = ["lan", "5g", "4g", "spotty_4g", "dsrc", "cps_qos"];

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

/// The built-in profile of that name, if there is one. A topology file may
/// define a profile of the same name, which then shadows the built-in one.
pub fn builtin_profile(name: &str) -> Option<Profile> {
    match name {
        "lan" => Some(lan()),
        "5g" => Some(five_g()),
        "4g" => Some(four_g()),
        "spotty_4g" => Some(spotty_four_g()),
        "dsrc" => Some(dsrc()),
        "cps_qos" => Some(cps_qos()),
        _ => None,
    }
}

/// `lan`: a clean switched Gigabit Ethernet. No added delay or loss (a switch
/// adds microseconds, below what netem resolves usefully); the rate limit of
/// 1 Gbit/s keeps a LAN from being faster than the wire it stands for.
fn lan() -> Profile {
    Profile {
        rate_bps: Some(1_000_000_000),
        ..Profile::default()
    }
}

/// `5g`: a loaded 5G NR (sub-6 GHz, non-standalone) link. 10 ms one-way is the
/// middle of the 15-25 ms round trips that public drive tests report; 2 ms
/// normal jitter; 0.1 % residual loss after HARQ/RLC retransmission;
/// 100 Mbit/s, a typical per-user share rather than the cell's peak.
fn five_g() -> Profile {
    Profile {
        delay_ns: 10 * MS,
        jitter_ns: 2 * MS,
        distribution: Distribution::Normal,
        loss: 0.1,
        rate_bps: Some(100_000_000),
        ..Profile::default()
    }
}

/// `4g`: an LTE link under ordinary load. 35 ms one-way (LTE round trips of
/// 50-80 ms are typical), 8 ms normal jitter, 0.5 % loss, 20 Mbit/s.
fn four_g() -> Profile {
    Profile {
        delay_ns: 35 * MS,
        jitter_ns: 8 * MS,
        distribution: Distribution::Normal,
        loss: 0.5,
        rate_bps: Some(20_000_000),
        ..Profile::default()
    }
}

/// `spotty_4g`: LTE at a cell edge or in a moving vehicle. 60 ms one-way with a
/// heavy-tailed 25 ms paretonormal jitter (handovers and retransmissions make
/// long stalls more common than a normal curve allows), 3 % loss, 5 Mbit/s.
fn spotty_four_g() -> Profile {
    Profile {
        delay_ns: 60 * MS,
        jitter_ns: 25 * MS,
        distribution: Distribution::Paretonormal,
        loss: 3.0,
        rate_bps: Some(5_000_000),
        ..Profile::default()
    }
}

/// `dsrc`: IEEE 802.11p / DSRC in a 10 MHz channel. 6 Mbit/s is the default
/// data rate of the control channel; 2 ms one-way covers channel access under
/// light load (0.5 ms normal jitter); 1 % loss is a packet error rate within
/// a few hundred metres of the RSU.
fn dsrc() -> Profile {
    Profile {
        delay_ns: 2 * MS,
        jitter_ns: 500 * US,
        distribution: Distribution::Normal,
        loss: 1.0,
        rate_bps: Some(6_000_000),
        ..Profile::default()
    }
}

/// `cps_qos`: the degraded CPS network of the seed scenario 002: latency
/// uniform between 0.1 s and 0.5 s (300 ms +- 200 ms uniform) and 10 % loss.
/// No rate limit: the scenario is about delay and loss, not bandwidth.
fn cps_qos() -> Profile {
    Profile {
        delay_ns: 300 * MS,
        jitter_ns: 200 * MS,
        distribution: Distribution::Uniform,
        loss: 10.0,
        ..Profile::default()
    }
}
