//! Frames per second through one pipeline direction, no sockets: the
//! engine's own per-frame cost (1M frames of 64 bytes, buffers recycled).
//! Usage: `cargo bench --bench pipeline`.

use testbed::emulation::Distribution;
use testbed::emulation::pipeline::{DirectionParams, LossModel, Pipeline};

const MS: u64 = 1_000_000;

fn main() {
    let mix = DirectionParams {
        delay_ns: 5 * MS,
        jitter_ns: 2 * MS,
        delay_correlation: 25.0,
        distribution: Distribution::Paretonormal,
        loss: LossModel::Random {
            percent: 5.0,
            correlation: 25.0,
        },
        duplicate: 3.0,
        duplicate_correlation: 10.0,
        corrupt: 3.0,
        reorder: 10.0,
        reorder_gap: 3,
        limit: 1_000_000,
        seed: 1,
        ..DirectionParams::default()
    };
    let cases = [
        ("clean", DirectionParams::default()),
        (
            "delay 20ms",
            DirectionParams {
                delay_ns: 20 * MS,
                limit: 1_000_000,
                ..DirectionParams::default()
            },
        ),
        (
            "netem mix (delay 5ms +- 2ms paretonormal, loss 5%, duplicate 3%, corrupt 3%, reorder 10% gap 3)",
            mix,
        ),
    ];
    println!("| pipeline | frames pushed | released | M frames/s |");
    println!("|---|---|---|---|");
    for (name, params) in cases {
        let mut p = Pipeline::new(params).expect("valid parameters");
        let n: u64 = 1_000_000;
        let frame = [0x42u8; 64];
        let mut released = Vec::with_capacity(1024);
        let mut count = 0u64;
        let start = std::time::Instant::now();
        for i in 0..n {
            let now = i * 100; // 10 Mpps offered, in emulated time
            let mut buf = p.take_buffer();
            buf.extend_from_slice(&frame);
            p.push(now, buf);
            released.extend(p.pop_due(now));
            for r in released.drain(..) {
                count += 1;
                p.recycle(r.frame.data);
            }
        }
        while let Some(at) = p.next_release() {
            released.extend(p.pop_due(at));
            for r in released.drain(..) {
                count += 1;
                p.recycle(r.frame.data);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!("| {name} | {n} | {count} | {:.2} |", n as f64 / secs / 1e6);
    }
}
