//! The RTT client against a kernel UDP echo server across a veth pair between two namespaces.

use std::net::SocketAddrV4;
use std::time::Duration;

use lancet::tools::bench::netns::{join, spawn_in_netns, VethPairNetns};
use lancet::tools::bench::packet::{MIN_FRAME_UDP_PAYLOAD, MTU_UDP_PAYLOAD};
use lancet::tools::bench::rtt::{run_rtt, KernelUdpEcho, RttConfig, WaitMode};

const ECHO_PORT: u16 = 7007;

fn config(target: SocketAddrV4, payload_len: usize, wait: WaitMode) -> RttConfig {
    RttConfig {
        target,
        payload_len,
        samples: 300,
        warmup: 20,
        timeout: Duration::from_millis(200),
        max_losses: 50,
        max_duration: Duration::from_secs(20),
        wait,
    }
}

#[test]
fn rtt_client_measures_kernel_echo_both_sizes() {
    let pair = VethPairNetns::create("rtt").unwrap();
    let echo = KernelUdpEcho::spawn(&pair.a.netns, ECHO_PORT, false, None).unwrap();
    let target = SocketAddrV4::new(pair.a.ip, ECHO_PORT);
    for (payload, wait) in [
        (MIN_FRAME_UDP_PAYLOAD, WaitMode::Spin),
        (MTU_UDP_PAYLOAD, WaitMode::Block),
    ] {
        let cfg = config(target, payload, wait);
        let out = join(spawn_in_netns(&pair.b.netns, "rtt-client", move || run_rtt(&cfg)).unwrap())
            .unwrap();
        let h = &out.histogram;
        assert!(out.received > 0, "no replies: {out:?}");
        assert_eq!(h.len(), out.received);
        assert_eq!(out.sent, out.received + out.lost);
        assert_eq!(out.sent, 300, "{out:?}");
        assert!(h.value_at_quantile(0.5) <= h.value_at_quantile(0.99));
        assert!(h.value_at_quantile(0.99) <= h.max());
        assert!(h.min() >= 1);
    }
    assert!(echo.stop().unwrap() >= 600);
}

#[test]
fn rtt_client_counts_losses_when_nobody_answers() {
    let pair = VethPairNetns::create("rtl").unwrap();
    // No server: the kernel answers with ICMP port unreachable, which must not count as a reply.
    let mut cfg = config(
        SocketAddrV4::new(pair.a.ip, ECHO_PORT),
        MIN_FRAME_UDP_PAYLOAD,
        WaitMode::Block,
    );
    cfg.samples = 5;
    cfg.warmup = 1;
    cfg.timeout = Duration::from_millis(30);
    cfg.max_losses = 3;
    let out =
        join(spawn_in_netns(&pair.b.netns, "rtt-client", move || run_rtt(&cfg)).unwrap()).unwrap();
    assert_eq!(out.received, 0);
    assert_eq!(out.histogram.len(), 0);
    assert_eq!(out.warmup_lost, 1);
    // Bounded: it gives up once more than max_losses requests were lost.
    assert_eq!(out.lost, 3);
    assert!(out.stopped_early.is_some());
}
