//! The raw AF_XDP baseline on a veth pair: rxdrop counts what a generator sends, echo answers the
//! RTT client (ARP included), txonly frames reach a counter in the peer namespace.

mod support;

use std::net::SocketAddrV4;
use std::time::Duration;

use lancet::net::XdpMode;
use lancet::tools::bench::gen::{run_generator, FrameFilter, GenConfig};
use lancet::tools::bench::netns::{join, spawn_in_netns, VethPairNetns};
use lancet::tools::bench::packet::{
    build_udp_frame, UdpFlow, DISCARD_PORT, ECHO_PORT, MIN_FRAME_UDP_PAYLOAD,
};
use lancet::tools::bench::raw_xsk::{spawn_raw_xsk, RawXskConfig, XskJob, XskLimits, XskWait};
use lancet::tools::bench::rtt::{run_rtt, RttConfig, WaitMode};
use support::bench::counter_at_b;

fn xsk_config(pair: &VethPairNetns, wait: XskWait) -> RawXskConfig {
    RawXskConfig {
        ifname: pair.a.ifname.clone(),
        queue: 0,
        attach: XdpMode::Auto,
        wait,
    }
}

fn limits(max_frames: u64) -> XskLimits {
    XskLimits {
        max_frames,
        max_duration: Duration::from_secs(20),
        idle_timeout: None,
    }
}

#[test]
fn rxdrop_counts_every_generated_frame() {
    let pair = VethPairNetns::create("xrx").unwrap();
    const COUNT: u64 = 3000;
    for wait in [XskWait::Spin, XskWait::Poll] {
        let xsk = spawn_raw_xsk(
            &pair.a.netns,
            xsk_config(&pair, wait),
            None,
            XskJob::RxDrop,
            limits(COUNT),
        )
        .unwrap();
        let cfg = GenConfig {
            ifname: pair.b.ifname.clone(),
            flow: UdpFlow {
                src_mac: pair.b.mac,
                dst_mac: pair.a.mac,
                src_ip: pair.b.ip,
                dst_ip: pair.a.ip,
                src_port: 40000,
                dst_port: DISCARD_PORT,
            },
            payload_len: MIN_FRAME_UDP_PAYLOAD,
            count: COUNT,
            max_duration: Duration::from_secs(10),
            rate_pps: Some(20_000),
            batch: 1,
        };
        let sent = join(spawn_in_netns(&pair.b.netns, "gen", move || run_generator(&cfg)).unwrap())
            .unwrap();
        let got = xsk.finish().unwrap();
        assert_eq!(sent.sent, COUNT);
        assert_eq!(got.frames, COUNT, "{wait:?}: {got:?}");
        assert_eq!(
            got.kernel.rx_ring_full + got.kernel.rx_dropped,
            0,
            "{got:?}"
        );
    }
}

#[test]
fn echo_answers_arp_and_udp_from_the_peer_kernel() {
    let pair = VethPairNetns::create("xec").unwrap();
    let job = XskJob::Echo {
        mac: pair.a.mac,
        ip: pair.a.ip,
    };
    let xsk = spawn_raw_xsk(
        &pair.a.netns,
        xsk_config(&pair, XskWait::Spin),
        None,
        job,
        limits(u64::MAX),
    )
    .unwrap();
    let cfg = RttConfig {
        target: SocketAddrV4::new(pair.a.ip, ECHO_PORT),
        payload_len: MIN_FRAME_UDP_PAYLOAD,
        samples: 500,
        warmup: 10,
        timeout: Duration::from_millis(500),
        max_losses: 20,
        max_duration: Duration::from_secs(20),
        wait: WaitMode::Block,
    };
    let rtt = join(spawn_in_netns(&pair.b.netns, "rtt", move || run_rtt(&cfg)).unwrap()).unwrap();
    let echoed = xsk.stop_and_finish().unwrap();
    // The peer kernel resolved the XSK's address through our ARP reply and accepted the echoes
    // (a wrong UDP checksum would make it drop them all).
    assert!(echoed.arp_replies >= 1, "{echoed:?}");
    assert_eq!(rtt.sent, 500);
    assert!(rtt.received > 0, "{rtt:?}");
    let h = &rtt.histogram;
    assert!(
        h.value_at_quantile(0.5) <= h.value_at_quantile(0.99)
            && h.value_at_quantile(0.99) <= h.max()
    );
    assert!(
        echoed.frames >= rtt.received + echoed.arp_replies,
        "{echoed:?} {rtt:?}"
    );
}

#[test]
fn txonly_frames_reach_the_peer() {
    let pair = VethPairNetns::create("xtx").unwrap();
    const COUNT: u64 = 5000;
    let counter = counter_at_b(
        &pair,
        FrameFilter {
            udp_dst_port: Some(DISCARD_PORT),
            src_ip: Some(pair.a.ip),
            ..FrameFilter::default()
        },
        Some(COUNT),
        Duration::from_secs(2),
    );
    let frame = build_udp_frame(&pair.discard_flow_a_to_b(), &[0u8; MIN_FRAME_UDP_PAYLOAD]);
    let xsk = spawn_raw_xsk(
        &pair.a.netns,
        xsk_config(&pair, XskWait::Spin),
        None,
        XskJob::TxOnly { frame },
        limits(COUNT),
    )
    .unwrap();
    let sent = xsk.finish().unwrap();
    let counted = counter.finish().unwrap();
    assert_eq!(sent.frames, COUNT, "{sent:?}");
    assert!(sent.pps > 0.0);
    // Unpaced: the counter may lose some in its socket, but only there.
    assert_eq!(counted.matched + counted.socket_drops, COUNT, "{counted:?}");
}

fn xdp_state(pair: &VethPairNetns) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", &pair.a.netns, "-d", "link", "show", &pair.a.ifname])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn libxdp_default_program_is_attached_while_open_and_removed_after() {
    let pair = VethPairNetns::create("xat").unwrap();
    for (attach, keyword) in [(XdpMode::Native, "xdp "), (XdpMode::Generic, "xdpgeneric ")] {
        let cfg = RawXskConfig {
            attach,
            ..xsk_config(&pair, XskWait::Poll)
        };
        let xsk =
            spawn_raw_xsk(&pair.a.netns, cfg, None, XskJob::RxDrop, limits(u64::MAX)).unwrap();
        let state = xdp_state(&pair);
        assert!(state.contains(keyword), "{attach:?}: {state}");
        assert!(state.contains("xsk_def_prog"), "{attach:?}: {state}");
        xsk.stop_and_finish().unwrap();
        let state = xdp_state(&pair);
        assert!(
            !state.contains("prog/xdp"),
            "program left behind after {attach:?}: {state}"
        );
    }
}
