//! The CPS application's security core on arbitrary inputs: reading and ack
//! codecs, sealed frames (round trip, tampering, wrong keys, key agreement),
//! the restart-proof nonce counter and the anti-replay window against a
//! reference model.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::Path;

use p256::SecretKey;
use p256::elliptic_curve::Generate;
use proptest::prelude::*;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use testbed::cps::counter::{NonceCounter, RESERVE};
use testbed::cps::reading::{Ack, Reading, SensorKind};
use testbed::cps::seal::{
    Frame, FrameError, FrameKind, HEADER_LEN, MAX_FRAME, SessionKeys, decrypt_unauthenticated,
    open, seal_ack, seal_reading,
};
use testbed::cps::window::{Replay, ReplayWindow, WIDTH};

fn kind() -> impl Strategy<Value = SensorKind> {
    proptest::sample::select(SensorKind::ALL.to_vec())
}

fn reading() -> impl Strategy<Value = Reading> {
    use proptest::num::f64::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    (
        any::<u32>(),
        kind(),
        any::<u64>(),
        any::<u64>(),
        NORMAL | SUBNORMAL | ZERO | POSITIVE | NEGATIVE,
    )
        .prop_map(|(sensor_id, kind, counter, timestamp_us, value)| Reading {
            sensor_id,
            kind,
            counter,
            timestamp_us,
            value,
        })
}

fn ack() -> impl Strategy<Value = Ack> {
    (any::<u64>(), any::<u64>()).prop_map(|(counter, received_us)| Ack {
        counter,
        received_us,
    })
}

fn keys() -> impl Strategy<Value = SessionKeys> {
    any::<([u8; 32], [u8; 32])>().prop_map(|(s2c, c2s)| SessionKeys::from_bytes(s2c, c2s))
}

/// Opens and decodes a reading frame, or says why not.
fn open_reading(keys: &SessionKeys, bytes: &[u8]) -> Result<Reading, String> {
    let frame = Frame::parse(bytes).map_err(|e| e.to_string())?;
    let plain = open(keys, &frame).map_err(|e| e.to_string())?;
    Reading::decode(&plain).map_err(|e| e.to_string())
}

/// Opens and decodes an ack frame, or says why not.
fn open_ack(keys: &SessionKeys, bytes: &[u8]) -> Result<Ack, String> {
    let frame = Frame::parse(bytes).map_err(|e| e.to_string())?;
    let plain = open(keys, &frame).map_err(|e| e.to_string())?;
    Ack::decode(&plain).map_err(|e| e.to_string())
}

proptest! {
    #[test]
    fn readings_and_acks_encode_and_decode(r in reading(), a in ack()) {
        prop_assert_eq!(Reading::decode(&r.encode()), Ok(r));
        prop_assert_eq!(Ack::decode(&a.encode()), Ok(a));
    }

    #[test]
    fn decoding_any_bytes_never_panics_and_re_encodes(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
        fix in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if fix && bytes.len() >= 2 {
            // Often enough a valid version and kind to reach the later checks.
            bytes[0] = 1;
            bytes[1] %= 7;
        }
        if let Ok(r) = Reading::decode(&bytes) {
            prop_assert_eq!(&r.encode()[..], &bytes[..]);
        }
        if let Ok(a) = Ack::decode(&bytes) {
            prop_assert_eq!(&a.encode()[..], &bytes[..]);
        }
    }

    #[test]
    fn sealed_readings_and_acks_open(keys in keys(), r in reading(), a in ack()) {
        let bytes = seal_reading(&keys, &r);
        prop_assert_eq!(bytes.len(), HEADER_LEN + Reading::LEN + 16);
        let frame = Frame::parse(&bytes).unwrap();
        prop_assert_eq!(frame.kind, FrameKind::Reading);
        prop_assert_eq!(frame.sender_id(), r.sensor_id);
        prop_assert_eq!(frame.counter(), r.counter);
        prop_assert_eq!(open_reading(&keys, &bytes), Ok(r));

        let bytes = seal_ack(&keys, &a);
        prop_assert_eq!(Frame::parse(&bytes).unwrap().kind, FrameKind::Ack);
        prop_assert_eq!(open_ack(&keys, &bytes), Ok(a));
    }

    #[test]
    fn any_bit_flip_is_rejected(
        keys in keys(),
        r in reading(),
        a in ack(),
        is_ack in any::<bool>(),
        bit in any::<proptest::sample::Index>(),
    ) {
        let mut bytes = if is_ack { seal_ack(&keys, &a) } else { seal_reading(&keys, &r) };
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(frame) = Frame::parse(&bytes) {
            prop_assert!(open(&keys, &frame).is_err(), "bit {} flipped and accepted", bit);
        }
    }

    #[test]
    fn unauthenticated_decryption_is_aes_gcms_keystream(
        keys in keys(),
        r in reading(),
        bit in any::<proptest::sample::Index>(),
    ) {
        let bytes = seal_reading(&keys, &r);
        let frame = Frame::parse(&bytes).unwrap();
        let plain = open(&keys, &frame).unwrap();
        prop_assert_eq!(&decrypt_unauthenticated(&keys, &frame), &plain);

        // One flipped ciphertext bit: the tag fails, the same plaintext bit flips.
        let bit = bit.index(Reading::LEN * 8);
        let mut bad = bytes.clone();
        bad[HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
        let frame = Frame::parse(&bad).unwrap();
        prop_assert!(open(&keys, &frame).is_err());
        let mut expected = plain.clone();
        expected[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(decrypt_unauthenticated(&keys, &frame), expected);
    }

    #[test]
    fn other_keys_do_not_open(
        keys in keys(),
        other in keys(),
        r in reading(),
        a in ack(),
    ) {
        prop_assert!(open_reading(&other, &seal_reading(&keys, &r)).is_err());
        prop_assert!(open_ack(&other, &seal_ack(&keys, &a)).is_err());
    }

    #[test]
    fn sensor_and_controller_derive_the_same_keys(
        seed in any::<u64>(),
        sensor_cert in proptest::collection::vec(any::<u8>(), 0..300),
        controller_cert in proptest::collection::vec(any::<u8>(), 0..300),
        sensor_id in any::<u32>(),
        r in reading(),
        a in ack(),
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sensor = SecretKey::generate_from_rng(&mut rng);
        let controller = SecretKey::generate_from_rng(&mut rng);
        let at_sensor = SessionKeys::derive(
            &sensor, &controller.public_key(), &sensor_cert, &controller_cert, sensor_id,
        );
        let at_controller = SessionKeys::derive(
            &controller, &sensor.public_key(), &sensor_cert, &controller_cert, sensor_id,
        );
        let r = Reading { sensor_id, ..r };
        prop_assert_eq!(open_reading(&at_controller, &seal_reading(&at_sensor, &r)), Ok(r));
        prop_assert_eq!(open_ack(&at_sensor, &seal_ack(&at_controller, &a)), Ok(a));

        // Another sensor id, or other certificates, give other keys.
        let other_id = SessionKeys::derive(
            &controller, &sensor.public_key(), &sensor_cert, &controller_cert,
            sensor_id.wrapping_add(1),
        );
        prop_assert!(open_reading(&other_id, &seal_reading(&at_sensor, &r)).is_err());
        let mut cert = controller_cert.clone();
        cert.push(0);
        let other_cert = SessionKeys::derive(
            &controller, &sensor.public_key(), &sensor_cert, &cert, sensor_id,
        );
        prop_assert!(open_reading(&other_cert, &seal_reading(&at_sensor, &r)).is_err());
    }

    #[test]
    fn frame_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(frame) = Frame::parse(&bytes) {
            prop_assert!(bytes.len() <= MAX_FRAME);
            prop_assert_eq!(frame.ciphertext.len() + HEADER_LEN, bytes.len());
            prop_assert!(open(&SessionKeys::from_bytes([0; 32], [0; 32]), &frame).is_err());
        }
    }
}

#[test]
fn frame_errors_name_what_was_expected() {
    let keys = SessionKeys::from_bytes([1; 32], [2; 32]);
    let good = seal_ack(
        &keys,
        &Ack {
            counter: 1,
            received_us: 2,
        },
    );
    let with = |i: usize, b: u8| {
        let mut f = good.clone();
        f[i] = b;
        f
    };
    let cases: [(Vec<u8>, FrameError, &str); 6] = [
        (
            vec![0; 300],
            FrameError::Oversize { len: 300, max: 256 },
            "frame is 300 bytes, expected at most 256",
        ),
        (
            good[..5].to_vec(),
            FrameError::Short { len: 5 },
            "frame is 5 bytes, expected at least 16",
        ),
        (
            with(0, b'X'),
            FrameError::BadMagic,
            "frame does not start with \"TB\"",
        ),
        (
            with(2, 9),
            FrameError::Version(9),
            "frame version is 9, expected 1",
        ),
        (
            with(3, 0),
            FrameError::Kind(0),
            "frame kind is 0, expected 1 (reading) or 2 (ack)",
        ),
        (
            good[..HEADER_LEN + 15].to_vec(),
            FrameError::NoTag { len: 15 },
            "frame has 15 bytes after the header, expected at least 16",
        ),
    ];
    for (bytes, error, text) in cases {
        let got = Frame::parse(&bytes).unwrap_err();
        assert_eq!(got, error);
        assert_eq!(got.to_string(), text);
    }
}

#[test]
fn ack_nonces_differ() {
    let keys = SessionKeys::from_bytes([1; 32], [2; 32]);
    let a = Ack {
        counter: 1,
        received_us: 2,
    };
    let nonces: HashSet<[u8; 12]> = (0..100)
        .map(|_| Frame::parse(&seal_ack(&keys, &a)).unwrap().nonce)
        .collect();
    assert_eq!(nonces.len(), 100);
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap()
}

fn mark(path: &Path) -> u64 {
    u64::from_be_bytes(std::fs::read(path).unwrap().try_into().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn nonce_counter_never_repeats_across_restarts(
        takes in proptest::collection::vec(0usize..2500, 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counter");
        let mut last: Option<u64> = None;
        for n in takes {
            // Each round is a process that is killed after `n` values: all it
            // leaves behind is the file.
            let mut counter = NonceCounter::open(open_rw(&path)).unwrap();
            for _ in 0..n {
                let peek = counter.peek();
                let v = counter.next().unwrap();
                prop_assert_eq!(v, peek);
                prop_assert!(last.is_none_or(|l| v > l), "{} after {:?}", v, last);
                prop_assert!(v < mark(&path), "{} handed out beyond the mark", v);
                last = Some(v);
            }
        }
    }
}

#[test]
fn nonce_counter_reserves_before_handing_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter");
    let mut counter = NonceCounter::open(open_rw(&path)).unwrap();
    assert_eq!(mark(&path), RESERVE);
    for want in 0..RESERVE {
        assert_eq!(counter.next().unwrap(), want);
    }
    assert_eq!(mark(&path), RESERVE);
    assert_eq!(counter.next().unwrap(), RESERVE);
    assert_eq!(mark(&path), 2 * RESERVE);
    drop(counter);
    let mut counter = NonceCounter::open(open_rw(&path)).unwrap();
    assert_eq!(counter.next().unwrap(), 2 * RESERVE);
    assert_eq!(mark(&path), 3 * RESERVE);
}

#[test]
fn nonce_counter_stops_at_the_top_and_rejects_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counter");
    std::fs::write(&path, (u64::MAX - 2).to_be_bytes()).unwrap();
    let mut counter = NonceCounter::open(open_rw(&path)).unwrap();
    assert_eq!(counter.next().unwrap(), u64::MAX - 2);
    assert_eq!(counter.next().unwrap(), u64::MAX - 1);
    assert!(counter.next().is_err());
    assert!(counter.next().is_err());
    drop(counter);
    assert!(NonceCounter::open(open_rw(&path)).is_err());

    std::fs::write(&path, [0; 5]).unwrap();
    let err = NonceCounter::open(open_rw(&path)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert_eq!(
        err.to_string(),
        "nonce counter file is 5 bytes, expected 0 or 8"
    );
}

/// What the window must answer, from every counter accepted so far.
fn expected_check(accepted: &HashSet<u64>, highest: Option<u64>, c: u64) -> Result<(), Replay> {
    match highest {
        None => Ok(()),
        Some(h) if c > h => Ok(()),
        Some(h) if c < h.saturating_sub(WIDTH - 1) => Err(Replay::TooOld),
        Some(_) if accepted.contains(&c) => Err(Replay::Duplicate),
        Some(_) => Ok(()),
    }
}

/// A step from the highest counter so far: up by `.0`, or down by `.0`; the
/// counter is accepted if the window allows it, or regardless when `.2`.
fn steps(up: u64) -> impl Strategy<Value = Vec<(u64, bool, bool)>> {
    proptest::collection::vec(
        prop_oneof![
            (0..=up, Just(true), any::<bool>()),
            (0u64..300, Just(false), any::<bool>()),
        ],
        1..300,
    )
}

/// Runs `steps` through a window and the reference model, checking every
/// answer; returns (accepted, low after the first accept, low at the end,
/// every missed counter yielded, total of `Missed::total`).
fn drive(start: u64, steps: Vec<(u64, bool, bool)>) -> (HashSet<u64>, u64, u64, Vec<u64>, u64) {
    let mut w = ReplayWindow::default();
    let mut accepted = HashSet::new();
    let mut first_low = None;
    let mut yielded = Vec::new();
    let mut total = 0u64;
    for (d, up, force) in steps {
        let base = w.highest().unwrap_or(start);
        let c = if up {
            base.saturating_add(d)
        } else {
            base.saturating_sub(d)
        };
        let want = expected_check(&accepted, w.highest(), c);
        assert_eq!(
            w.check(c),
            want,
            "check({c}) with highest {:?}",
            w.highest()
        );
        if want.is_err() && !force {
            continue;
        }
        let before = w;
        let missed = w.accept(c);
        if want.is_err() {
            assert_eq!(w, before, "a rejected accept changed the window");
            assert_eq!(missed.total(), 0);
            continue;
        }
        total += missed.total();
        let listed = missed.len() as u64;
        let skipped = missed.skipped_beyond();
        assert_eq!(missed.total(), listed + skipped);
        yielded.extend(missed);
        accepted.insert(c);
        assert_eq!(w.highest(), accepted.iter().max().copied());
        first_low.get_or_insert(c.saturating_sub(WIDTH - 1));
    }
    let first_low = first_low.unwrap_or(0);
    let final_low = w.highest().map_or(0, |h| h.saturating_sub(WIDTH - 1));
    (accepted, first_low, final_low, yielded, total)
}

proptest! {
    #[test]
    fn replay_window_matches_reference_with_small_jumps(
        start in prop_oneof![0u64..300, Just(u64::MAX - 40_000)],
        steps in steps(WIDTH),
    ) {
        let (accepted, first_low, final_low, yielded, total) = drive(start, steps);
        // Every counter from the first window's low edge up to the current
        // one has been inside the window (no jump skips past it) and has left
        // it: exactly the never-accepted ones are reported, each once.
        let want: Vec<u64> = (first_low..final_low).filter(|c| !accepted.contains(c)).collect();
        let mut got = yielded;
        got.sort_unstable();
        prop_assert_eq!(total, got.len() as u64);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn replay_window_counts_misses_over_any_jump(
        start in prop_oneof![0u64..300, Just(u64::MAX - (1 << 62))],
        steps in steps(1 << 60),
    ) {
        let (accepted, first_low, final_low, yielded, total) = drive(start, steps);
        let accepted_below = accepted.iter().filter(|&&c| (first_low..final_low).contains(&c)).count();
        prop_assert_eq!(total, final_low - first_low - accepted_below as u64);
        let unique: HashSet<u64> = yielded.iter().copied().collect();
        prop_assert_eq!(unique.len(), yielded.len());
        for c in yielded {
            prop_assert!((first_low..final_low).contains(&c) && !accepted.contains(&c));
        }
    }
}

#[test]
fn replay_window_basics() {
    let mut w = ReplayWindow::default();
    assert_eq!(w.highest(), None);
    assert_eq!(w.check(5), Ok(()));
    assert_eq!(w.accept(5).total(), 0);
    assert_eq!(w.check(5), Err(Replay::Duplicate));
    assert_eq!(w.check(0), Ok(()));
    let missed = w.accept(200);
    // The window covered 0..=5: 0..=4 left it unseen; 6..=72 were skipped
    // without ever entering it.
    assert_eq!(missed.skipped_beyond(), 67);
    assert_eq!(missed.collect::<Vec<_>>(), (0..5).collect::<Vec<_>>());
    assert_eq!(w.check(72), Err(Replay::TooOld));
    assert_eq!(w.check(73), Ok(()));
    let missed = w.accept(200 + (1 << 60));
    assert_eq!(missed.len(), 127);
    assert_eq!(missed.skipped_beyond(), (1 << 60) - 128);
    assert_eq!(w.check(200), Err(Replay::TooOld));
}
