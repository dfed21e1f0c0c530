//! Sensor readings and acknowledgements, and their fixed big-endian wire
//! encodings (the plaintext inside a sealed frame).
//!
//! A reading is `version | kind | sensor_id | counter | timestamp_us | value`
//! ([`Reading::LEN`] bytes); an ack is `version | counter | received_us`
//! ([`Ack::LEN`] bytes). Decoding accepts exactly what encoding produces, so
//! `encode(decode(b)?) == b` for every `b` that decodes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Version byte that starts every encoded reading and ack.
pub const VERSION: u8 = 1;

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorKind {
    /// Air temperature in °C.
    Temperature,
    /// Presence: 1 when motion is detected, 0 otherwise.
    Motion,
    /// Relative humidity in %.
    Humidity,
    /// Door contact: 1 open, 0 closed.
    Door,
    /// Smoke level, an integer from 0 (clear) to 10.
    Smoke,
    /// Power draw in kW.
    Energy,
}

impl SensorKind {
    /// Every kind, in code order.
    pub const ALL: [SensorKind; 6] = [
        SensorKind::Temperature,
        SensorKind::Motion,
        SensorKind::Humidity,
        SensorKind::Door,
        SensorKind::Smoke,
        SensorKind::Energy,
    ];

    /// The wire code: 1 to 6 in [`SensorKind::ALL`] order (0 is never valid).
    pub fn code(self) -> u8 {
        match self {
            SensorKind::Temperature => 1,
            SensorKind::Motion => 2,
            SensorKind::Humidity => 3,
            SensorKind::Door => 4,
            SensorKind::Smoke => 5,
            SensorKind::Energy => 6,
        }
    }

    /// The kind with this wire code, if any.
    pub fn from_code(code: u8) -> Option<SensorKind> {
        SensorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The lowercase name used in configuration, JSON and `Display`.
    pub fn name(self) -> &'static str {
        match self {
            SensorKind::Temperature => "temperature",
            SensorKind::Motion => "motion",
            SensorKind::Humidity => "humidity",
            SensorKind::Door => "door",
            SensorKind::Smoke => "smoke",
            SensorKind::Energy => "energy",
        }
    }

    /// The unit of the value ("" for the on/off kinds).
    pub fn unit(self) -> &'static str {
        match self {
            SensorKind::Temperature => "°C",
            SensorKind::Motion | SensorKind::Door => "",
            SensorKind::Humidity => "%",
            SensorKind::Smoke => "level",
            SensorKind::Energy => "kW",
        }
    }
}

impl fmt::Display for SensorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A sensor kind name that is none of the six.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown sensor kind {0:?}, expected one of temperature, motion, humidity, door, smoke, energy"
)]
pub struct UnknownSensorKind(pub String);

impl FromStr for SensorKind {
    type Err = UnknownSensorKind;

    fn from_str(s: &str) -> Result<SensorKind, UnknownSensorKind> {
        SensorKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownSensorKind(s.to_owned()))
    }
}

/// One measurement, as the sensor sealed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The sensor that took it.
    pub sensor_id: u32,
    /// What was measured.
    pub kind: SensorKind,
    /// The sensor's nonce counter for this reading: unique per sensor.
    pub counter: u64,
    /// Unix time at the sensor, in µs.
    pub timestamp_us: u64,
    /// The measured value, in [`SensorKind::unit`]s; always finite once decoded.
    pub value: f64,
}

/// Why bytes are not an encoded [`Reading`].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ReadingError {
    /// Not exactly [`Reading::LEN`] bytes.
    #[error("reading is {0} bytes, expected {len}", len = Reading::LEN)]
    Length(usize),
    /// A version byte other than [`VERSION`].
    #[error("reading version is {0}, expected {VERSION}")]
    Version(u8),
    /// A kind code that [`SensorKind::from_code`] does not know.
    #[error("sensor kind code is {0}, expected 1 to 6")]
    Kind(u8),
    /// A NaN or infinite value.
    #[error("reading value is {0}, expected a finite number")]
    Value(f64),
}

impl Reading {
    /// Length of the encoding.
    pub const LEN: usize = 1 + 1 + 4 + 8 + 8 + 8;

    /// The fixed big-endian encoding.
    pub fn encode(&self) -> [u8; Reading::LEN] {
        let mut b = [0u8; Reading::LEN];
        b[0] = VERSION;
        b[1] = self.kind.code();
        b[2..6].copy_from_slice(&self.sensor_id.to_be_bytes());
        b[6..14].copy_from_slice(&self.counter.to_be_bytes());
        b[14..22].copy_from_slice(&self.timestamp_us.to_be_bytes());
        b[22..30].copy_from_slice(&self.value.to_bits().to_be_bytes());
        b
    }

    /// Decodes exactly [`Reading::LEN`] bytes of a known version and kind
    /// with a finite value.
    pub fn decode(bytes: &[u8]) -> Result<Reading, ReadingError> {
        let b: &[u8; Reading::LEN] = bytes
            .try_into()
            .map_err(|_| ReadingError::Length(bytes.len()))?;
        if b[0] != VERSION {
            return Err(ReadingError::Version(b[0]));
        }
        let kind = SensorKind::from_code(b[1]).ok_or(ReadingError::Kind(b[1]))?;
        let value = f64::from_bits(u64::from_be_bytes(field(b, 22)));
        if !value.is_finite() {
            return Err(ReadingError::Value(value));
        }
        Ok(Reading {
            sensor_id: u32::from_be_bytes(field(b, 2)),
            kind,
            counter: u64::from_be_bytes(field(b, 6)),
            timestamp_us: u64::from_be_bytes(field(b, 14)),
            value,
        })
    }

    /// The value as a person would read it: "22.5 °C", "motion detected",
    /// "45.2 %", "door open", "level 4", "1.73 kW".
    pub fn describe(&self) -> String {
        let v = self.value;
        match self.kind {
            SensorKind::Temperature => format!("{v:.1} °C"),
            SensorKind::Motion if v >= 0.5 => "motion detected".to_owned(),
            SensorKind::Motion => "no motion".to_owned(),
            SensorKind::Humidity => format!("{v:.1} %"),
            SensorKind::Door if v >= 0.5 => "door open".to_owned(),
            SensorKind::Door => "door closed".to_owned(),
            SensorKind::Smoke => format!("level {v:.0}"),
            SensorKind::Energy => format!("{v:.2} kW"),
        }
    }
}

/// The controller's acknowledgement of one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The counter of the reading acknowledged.
    pub counter: u64,
    /// Unix time at the controller when the reading arrived, in µs.
    pub received_us: u64,
}

/// Why bytes are not an encoded [`Ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// Not exactly [`Ack::LEN`] bytes.
    #[error("ack is {0} bytes, expected {len}", len = Ack::LEN)]
    Length(usize),
    /// A version byte other than [`VERSION`].
    #[error("ack version is {0}, expected {VERSION}")]
    Version(u8),
}

impl Ack {
    /// Length of the encoding.
    pub const LEN: usize = 1 + 8 + 8;

    /// The fixed big-endian encoding.
    pub fn encode(&self) -> [u8; Ack::LEN] {
        let mut b = [0u8; Ack::LEN];
        b[0] = VERSION;
        b[1..9].copy_from_slice(&self.counter.to_be_bytes());
        b[9..17].copy_from_slice(&self.received_us.to_be_bytes());
        b
    }

    /// Decodes exactly [`Ack::LEN`] bytes of a known version.
    pub fn decode(bytes: &[u8]) -> Result<Ack, AckError> {
        let b: &[u8; Ack::LEN] = bytes
            .try_into()
            .map_err(|_| AckError::Length(bytes.len()))?;
        if b[0] != VERSION {
            return Err(AckError::Version(b[0]));
        }
        Ok(Ack {
            counter: u64::from_be_bytes(field(b, 1)),
            received_us: u64::from_be_bytes(field(b, 9)),
        })
    }
}

/// Bytes `at..at + N` of an encoding; `at` is a constant within `L - N`.
fn field<const N: usize, const L: usize>(b: &[u8; L], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(kind: SensorKind, value: f64) -> Reading {
        Reading {
            sensor_id: 7,
            kind,
            counter: 1,
            timestamp_us: 2,
            value,
        }
    }

    #[test]
    fn describes_like_a_person() {
        let cases = [
            (SensorKind::Temperature, 22.5, "22.5 °C"),
            (SensorKind::Motion, 1.0, "motion detected"),
            (SensorKind::Motion, 0.0, "no motion"),
            (SensorKind::Humidity, 45.2, "45.2 %"),
            (SensorKind::Door, 1.0, "door open"),
            (SensorKind::Door, 0.0, "door closed"),
            (SensorKind::Smoke, 4.0, "level 4"),
            (SensorKind::Energy, 1.734, "1.73 kW"),
        ];
        for (kind, value, text) in cases {
            assert_eq!(reading(kind, value).describe(), text);
        }
    }

    #[test]
    fn kinds_round_trip_through_names_codes_and_json() {
        for kind in SensorKind::ALL {
            assert_eq!(kind.to_string().parse::<SensorKind>(), Ok(kind));
            assert_eq!(SensorKind::from_code(kind.code()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<SensorKind>(&json).unwrap(), kind);
        }
        assert_eq!(SensorKind::from_code(0), None);
        assert_eq!(SensorKind::from_code(7), None);
        let err = "Smoke".parse::<SensorKind>().unwrap_err().to_string();
        assert!(err.contains("temperature, motion, humidity, door, smoke, energy"));
    }

    #[test]
    fn each_decode_failure_says_what_was_expected() {
        let good = reading(SensorKind::Smoke, 3.0).encode();
        assert_eq!(
            Reading::decode(&good[..17]).unwrap_err().to_string(),
            "reading is 17 bytes, expected 30"
        );
        let mut b = good;
        b[0] = 2;
        assert_eq!(Reading::decode(&b), Err(ReadingError::Version(2)));
        let mut b = good;
        b[1] = 9;
        assert_eq!(Reading::decode(&b), Err(ReadingError::Kind(9)));
        let b = reading(SensorKind::Smoke, f64::INFINITY).encode();
        assert!(matches!(Reading::decode(&b), Err(ReadingError::Value(_))));
        assert_eq!(
            Ack::decode(&[1; 3]).unwrap_err().to_string(),
            "ack is 3 bytes, expected 17"
        );
    }
}
