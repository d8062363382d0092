//! Per-frame cost of the steering program with 0, 1, 100 and 10 000 filter rules, measured in the
//! kernel with BPF_PROG_TEST_RUN (repeat N, the kernel reports the mean time per run).
//!
//! Rule sets: "1 mask" = every rule the same shape (`src A.B.C.D/24 tcp dport P drop`), and
//! "32 masks" = the rules spread over 32 prefix lengths (the most masks a table holds, so the
//! program's worst case). Frames: one that matches no rule (walks every mask, then the MAC
//! steering) and one that matches the best-ranked rule (stops after the first mask).
//! Then the cost of the IPv6 extension header walk: TCP behind 0, 6 and 7 (one more than the
//! program walks) Destination Options headers, with one rule `ip6 tcp dport 22 drop`.
//! Run as root: `cargo bench --bench filter`.

use lancet::net::{rules::Rule, steer::DetachedProgram};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 5;

fn udp_frame(src: [u8; 4], proto: u8, dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&50u16.to_be_bytes());
    f[22] = 64;
    f[23] = proto;
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&[10, 77, 0, 10]);
    f[34..36].copy_from_slice(&1000u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

/// IPv6 TCP to port 22 behind `ext` 8-byte Destination Options headers.
fn ipv6_frame(ext: usize) -> Vec<u8> {
    const NEXTHDR_DEST: u8 = 60;
    const PROTO_TCP: u8 = 6;
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x86, 0xdd];
    let first = if ext > 0 { NEXTHDR_DEST } else { PROTO_TCP };
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, first, 64]);
    f.extend_from_slice(&[0xfd; 32]);
    for i in 0..ext {
        let next = if i + 1 < ext { NEXTHDR_DEST } else { PROTO_TCP };
        f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    f.extend_from_slice(&1000u16.to_be_bytes());
    f.extend_from_slice(&22u16.to_be_bytes());
    f.resize(f.len() + 16, 0);
    f
}

fn rules(n: usize, masks: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let len = if masks == 1 { 24 } else { 1 + (i % masks) };
            let text = format!(
                "src 10.{}.{}.0/{len} tcp dport {} drop prio {}",
                (i / 256) % 256,
                i % 256,
                1000 + i / masks.max(1),
                10 + i % 50
            );
            Rule::parse_str(&text).unwrap()
        })
        .collect()
}

/// Median ns per run over ROUNDS rounds.
fn ns_per_frame(prog: &mut DetachedProgram, frame: &[u8]) -> f64 {
    let mut v: Vec<f64> = (0..ROUNDS)
        .map(|_| prog.test_run(frame, REPEAT).unwrap().1.as_nanos() as f64)
        .collect();
    v.sort_by(f64::total_cmp);
    v[ROUNDS / 2]
}

fn main() {
    let miss = udp_frame([10, 200, 0, 1], 17, 4789);
    println!(
        "steering program per-frame cost (BPF_PROG_TEST_RUN, median of {ROUNDS} x {REPEAT} runs)"
    );
    println!(
        "{:>7} {:>6} {:>8} {:>14} {:>14}",
        "rules", "masks", "entries", "no match ns", "match ns"
    );
    for (n, masks) in [
        (0, 1),
        (1, 1),
        (100, 1),
        (100, 32),
        (10_000, 1),
        (10_000, 32),
    ] {
        let mut prog = match DetachedProgram::load() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("cannot load the program (run as root): {e}");
                return;
            }
        };
        let set = rules(n, masks);
        // The best-ranked rule: prio 10 is rule 0 (ties go to the lower id).
        let hit = udp_frame([10, 0, 0, 7], 6, 1000);
        if n > 0 {
            prog.rules().add_many(set).unwrap();
        }
        let miss_ns = ns_per_frame(&mut prog, &miss);
        let hit_ns = if n > 0 {
            let (action, _) = prog.test_run(&hit, 1).unwrap();
            assert_eq!(action, 1, "XDP_DROP expected for the matching frame");
            format!("{:.1}", ns_per_frame(&mut prog, &hit))
        } else {
            "-".into()
        };
        let used_masks = if n == 0 { 0 } else { masks.min(n) };
        println!(
            "{n:>7} {used_masks:>6} {:>8} {miss_ns:>14.1} {hit_ns:>14}",
            n
        );
    }
    let Ok(mut prog) = DetachedProgram::load() else {
        return;
    };
    prog.rules()
        .add(Rule::parse_str("ip6 tcp dport 22 drop").unwrap())
        .unwrap();
    println!(
        "\n{:>24} {:>8} {:>10}",
        "IPv6 TCP dport 22 behind", "verdict", "ns"
    );
    for ext in [0, 6, 7] {
        let frame = ipv6_frame(ext);
        let (action, _) = prog.test_run(&frame, 1).unwrap();
        let verdict = if action == 1 { "drop" } else { "pass" };
        println!(
            "{:>24} {verdict:>8} {:>10.1}",
            format!("{ext} ext headers"),
            ns_per_frame(&mut prog, &frame)
        );
    }
}
