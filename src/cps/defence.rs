//! The controller's defence switches, for negative controls only: an attack
//! scenario asserts that a defence stops it, then runs again with that
//! defence off to prove the assertion can fail.
//!
//! A switched-off check still runs: its verdict is only not enforced. An
//! input accepted although a switched-off check would have refused it is a
//! *miss* of that defence, counted in `testbed_defence_misses_total` and
//! named in the row's `reason` (`miss:replay_window`). With every defence on
//! there is never a miss.

use serde::Deserialize;

/// A defence option's value: `"on"` (the default) or `"off"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    #[default]
    On,
    Off,
}

/// A check of the controller that can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Defence {
    /// The 128-wide replay window (`replayed`).
    ReplayWindow,
    /// The AES-GCM tag (`undecryptable`); off, readings are decrypted
    /// without it.
    Authenticate,
    /// `max_age`, before-start and future checks (`stale`).
    Freshness,
    /// The size and rate checks (`oversize`, `over-rate`).
    Limits,
}

impl Defence {
    pub const ALL: [Defence; 4] = [
        Defence::ReplayWindow,
        Defence::Authenticate,
        Defence::Freshness,
        Defence::Limits,
    ];

    /// The option name, also the metrics label and the `miss:` reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Defence::ReplayWindow => "replay_window",
            Defence::Authenticate => "authenticate",
            Defence::Freshness => "freshness",
            Defence::Limits => "limits",
        }
    }

    /// What switching it off lets through (for the start-up notice).
    pub fn consequence(self) -> &'static str {
        match self {
            Defence::ReplayWindow => "replayed readings will be accepted",
            Defence::Authenticate => {
                "readings are decrypted without checking their tag: tampered readings will be accepted"
            }
            Defence::Freshness => "stale and future-dated readings will be accepted",
            Defence::Limits => "readings over the rate limit will be accepted",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl std::fmt::Display for Defence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of defences (which are off; which an input got past).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefenceSet(u8);

impl DefenceSet {
    pub fn insert(&mut self, d: Defence) {
        self.0 |= d.bit();
    }

    pub fn contains(self, d: Defence) -> bool {
        self.0 & d.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Members in [`Defence::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Defence> {
        Defence::ALL.into_iter().filter(move |d| self.contains(*d))
    }

    /// The `reason` column of an accepted row: `miss:NAME` per member, joined
    /// by `;` (empty for the empty set).
    pub fn reason(self) -> String {
        self.iter()
            .map(|d| format!("miss:{d}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Which defences are in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    off: DefenceSet,
}

impl Switches {
    /// Every defence on.
    pub fn all_on() -> Switches {
        Switches::default()
    }

    pub fn set(&mut self, d: Defence, switch: Switch) {
        match switch {
            Switch::On => self.off.0 &= !d.bit(),
            Switch::Off => self.off.insert(d),
        }
    }

    pub fn is_on(self, d: Defence) -> bool {
        !self.off.contains(d)
    }

    /// The defences switched off.
    pub fn off(self) -> DefenceSet {
        self.off
    }

    /// Applies the verdict of `d`'s check: a refusal stands while `d` is on;
    /// with `d` off it is waived and `d` noted in `misses` (a miss once the
    /// input is accepted). A pass never notes anything.
    pub fn enforce<E>(
        self,
        d: Defence,
        verdict: Result<(), E>,
        misses: &mut DefenceSet,
    ) -> Result<(), E> {
        match verdict {
            Err(e) if self.is_on(d) => Err(e),
            Err(_) => {
                misses.insert(d);
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_is_noted_only_when_the_switch_is_off_and_the_check_fails() {
        for d in Defence::ALL {
            for switch in [Switch::On, Switch::Off] {
                let mut switches = Switches::all_on();
                switches.set(d, switch);
                for fails in [false, true] {
                    let mut misses = DefenceSet::default();
                    let verdict = if fails { Err("refused") } else { Ok(()) };
                    let r = switches.enforce(d, verdict, &mut misses);
                    let refused = fails && switch == Switch::On;
                    let missed = fails && switch == Switch::Off;
                    assert_eq!(r.is_err(), refused, "{d} {switch:?} fails={fails}");
                    assert_eq!(misses.contains(d), missed, "{d} {switch:?} fails={fails}");
                    assert_eq!(misses.iter().count(), usize::from(missed));
                }
            }
        }
    }

    #[test]
    fn other_switches_do_not_waive_a_check() {
        let mut switches = Switches::all_on();
        switches.set(Defence::Freshness, Switch::Off);
        let mut misses = DefenceSet::default();
        assert!(
            switches
                .enforce(Defence::ReplayWindow, Err(()), &mut misses)
                .is_err()
        );
        assert!(misses.is_empty());
        switches.set(Defence::Freshness, Switch::On);
        assert_eq!(switches, Switches::all_on());
    }

    #[test]
    fn reasons_name_every_missed_defence() {
        let mut m = DefenceSet::default();
        assert_eq!(m.reason(), "");
        m.insert(Defence::Limits);
        m.insert(Defence::ReplayWindow);
        assert_eq!(m.reason(), "miss:replay_window;miss:limits");
    }

    #[test]
    fn switches_parse_on_and_off_only() {
        let parse = |s: &str| serde_json::from_str::<Switch>(s).ok();
        assert_eq!(parse("\"on\""), Some(Switch::On));
        assert_eq!(parse("\"off\""), Some(Switch::Off));
        assert_eq!(parse("\"OFF\""), None);
        assert_eq!(parse("false"), None);
    }
}
