//! Plausible values for each kind of sensor, from a seeded generator: the
//! same kind, seed and sequence of times give the same values.

use std::f64::consts::TAU;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::reading::SensorKind;

/// Chance per reading that a clear smoke sensor starts a spike.
const SMOKE_SPIKE: f64 = 0.005;

/// The next value of one sensor, given the time.
///
/// Every value is finite and within its kind's range: temperature in
/// [-20, 60] °C, motion and door 0 or 1, humidity in [30, 70] %, smoke an
/// integer level in 0..=10, energy at least 0 kW.
#[derive(Debug, Clone)]
pub struct ValueModel {
    kind: SensorKind,
    rng: ChaCha8Rng,
    /// Temperature and energy: the random walk around the daily curve;
    /// humidity: the value; motion and door: 0 or 1; smoke: the level.
    level: f64,
    /// Smoke: readings left in the current spike.
    spike_left: u32,
}

impl ValueModel {
    /// A model of `kind` seeded with `seed`.
    pub fn new(kind: SensorKind, seed: u64) -> ValueModel {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let level = match kind {
            SensorKind::Humidity => rng.random_range(40.0..=60.0),
            _ => 0.0,
        };
        ValueModel {
            kind,
            rng,
            level,
            spike_left: 0,
        }
    }

    /// The value at `unix_secs` (Unix time in seconds; a non-finite time is
    /// taken as midnight). Each call advances the model one reading.
    pub fn next(&mut self, unix_secs: f64) -> f64 {
        let day = if unix_secs.is_finite() {
            (unix_secs / 86_400.0).rem_euclid(1.0)
        } else {
            0.0
        };
        let rng = &mut self.rng;
        match self.kind {
            SensorKind::Temperature => {
                // ±3 °C over the day, warmest at 15:00 UTC, plus a slow walk.
                self.level = 0.98 * self.level + rng.random_range(-0.1..=0.1);
                (21.0 + 3.0 * daily(day, 15.0) + self.level).clamp(-20.0, 60.0)
            }
            SensorKind::Motion => {
                self.level = markov(rng, self.level, 0.1, 0.25);
                self.level
            }
            SensorKind::Humidity => {
                let pull = 0.01 * (50.0 - self.level);
                self.level = (self.level + pull + rng.random_range(-0.5..=0.5)).clamp(30.0, 70.0);
                self.level
            }
            SensorKind::Door => {
                // Open about 6 % of the time, for a few readings at once.
                self.level = markov(rng, self.level, 0.02, 0.3);
                self.level
            }
            SensorKind::Smoke => {
                if self.spike_left == 0 {
                    self.level = if rng.random_bool(SMOKE_SPIKE) {
                        self.spike_left = rng.random_range(1..=5);
                        f64::from(rng.random_range(1..=10u8))
                    } else {
                        0.0
                    };
                }
                self.spike_left = self.spike_left.saturating_sub(1);
                self.level
            }
            SensorKind::Energy => {
                // Around 1.5 kW, highest at 19:00 UTC, with short-term noise.
                self.level = 0.9 * self.level + rng.random_range(-0.1..=0.1);
                (1.5 + 0.5 * daily(day, 19.0) + self.level).max(0.0)
            }
        }
    }
}

/// A daily cycle in [-1, 1] peaking at `peak_hour`; `day` is the fraction of
/// the day elapsed.
fn daily(day: f64, peak_hour: f64) -> f64 {
    (TAU * (day - peak_hour / 24.0)).cos()
}

/// One step of a two-state chain over 0 and 1: from 0 to 1 with chance `on`,
/// from 1 to 0 with chance `off`.
fn markov(rng: &mut ChaCha8Rng, state: f64, on: f64, off: f64) -> f64 {
    let flip = rng.random_bool(if state == 0.0 { on } else { off });
    if flip { 1.0 - state } else { state }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(kind: SensorKind, seed: u64, start: f64, n: usize) -> Vec<f64> {
        let mut m = ValueModel::new(kind, seed);
        (0..n).map(|i| m.next(start + 10.0 * i as f64)).collect()
    }

    #[test]
    fn same_seed_same_values_other_seed_other_values() {
        for kind in SensorKind::ALL {
            let a = run(kind, 42, 1.7e9, 2000);
            assert_eq!(a, run(kind, 42, 1.7e9, 2000), "{kind}");
            assert_ne!(a, run(kind, 43, 1.7e9, 2000), "{kind}");
        }
    }

    #[test]
    fn values_look_like_their_kind() {
        let day = 8640;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let temperature = run(SensorKind::Temperature, 1, 0.0, day);
        assert!((mean(&temperature) - 21.0).abs() < 1.5);
        // 15:00 is warmer than 03:00.
        assert!(temperature[day * 15 / 24] > temperature[day * 3 / 24]);
        let door = run(SensorKind::Door, 1, 0.0, day);
        assert!(mean(&door) < 0.2, "mostly closed");
        let smoke = run(SensorKind::Smoke, 1, 0.0, day);
        assert!(smoke.iter().filter(|&&v| v == 0.0).count() > day * 9 / 10);
        assert!(smoke.iter().any(|&v| v > 0.0), "a spike in a day");
        let energy = run(SensorKind::Energy, 1, 0.0, day);
        assert!((mean(&energy) - 1.5).abs() < 0.3);
    }

    proptest! {
        #[test]
        fn values_stay_in_range(
            kind in proptest::sample::select(SensorKind::ALL.to_vec()),
            seed in any::<u64>(),
            start in any::<f64>(),
        ) {
            let mut m = ValueModel::new(kind, seed);
            for i in 0..500 {
                let v = m.next(start + 60.0 * f64::from(i));
                prop_assert!(v.is_finite());
                let ok = match kind {
                    SensorKind::Temperature => (-20.0..=60.0).contains(&v),
                    SensorKind::Motion | SensorKind::Door => v == 0.0 || v == 1.0,
                    SensorKind::Humidity => (30.0..=70.0).contains(&v),
                    SensorKind::Smoke => (0.0..=10.0).contains(&v) && v.fract() == 0.0,
                    SensorKind::Energy => v >= 0.0,
                };
                prop_assert!(ok, "{} value {}", kind, v);
            }
        }
    }
}
