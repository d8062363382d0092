//! The AF_PACKET generator and counter across a veth pair between two namespaces.

mod support;

use std::time::Duration;

use lancet::tools::bench::gen::{run_generator, FrameFilter, GenConfig};
use lancet::tools::bench::netns::{join, spawn_in_netns, VethPairNetns};
use lancet::tools::bench::packet::{UdpFlow, DISCARD_PORT, MIN_FRAME_UDP_PAYLOAD};
use support::bench::counter_at_b;

#[test]
fn paced_generator_frames_all_arrive_at_the_counter() {
    let pair = VethPairNetns::create("gen").unwrap();
    const COUNT: u64 = 2000;
    let counter = counter_at_b(
        &pair,
        FrameFilter {
            udp_dst_port: Some(DISCARD_PORT),
            dst_mac: Some(pair.b.mac),
            src_ip: Some(pair.a.ip),
        },
        Some(COUNT),
        Duration::from_secs(3),
    );
    let cfg = GenConfig {
        ifname: pair.a.ifname.clone(),
        flow: pair.discard_flow_a_to_b(),
        payload_len: MIN_FRAME_UDP_PAYLOAD,
        count: COUNT,
        max_duration: Duration::from_secs(15),
        rate_pps: Some(20_000),
        batch: 32,
    };
    let sent =
        join(spawn_in_netns(&pair.a.netns, "gen", move || run_generator(&cfg)).unwrap()).unwrap();
    let counted = counter.finish().unwrap();
    assert_eq!(sent.sent, COUNT, "{sent:?}");
    assert_eq!(
        counted.matched, sent.sent,
        "sent {sent:?} counted {counted:?}"
    );
    assert!(sent.offered_pps > 0.0);
    assert_eq!(counted.socket_drops, 0);
}

#[test]
fn unpaced_generator_is_bounded_by_count_and_reports_a_rate() {
    let pair = VethPairNetns::create("gfa").unwrap();
    let counter = counter_at_b(
        &pair,
        FrameFilter {
            udp_dst_port: Some(DISCARD_PORT),
            ..FrameFilter::default()
        },
        None,
        Duration::from_millis(500),
    );
    let cfg = GenConfig {
        ifname: pair.a.ifname.clone(),
        flow: pair.discard_flow_a_to_b(),
        payload_len: MIN_FRAME_UDP_PAYLOAD,
        count: 50_000,
        max_duration: Duration::from_secs(10),
        rate_pps: None,
        batch: 64,
    };
    let sent =
        join(spawn_in_netns(&pair.a.netns, "gen", move || run_generator(&cfg)).unwrap()).unwrap();
    let counted = counter.finish().unwrap();
    assert!(sent.sent <= 50_000);
    assert!(sent.offered_pps > 0.0);
    // Fast traffic may be dropped at the receiver, but never more arrive than were sent, and
    // every frame is either counted or shows up in a drop counter.
    assert!(counted.matched <= sent.sent);
    assert!(counted.matched > 0);
    eprintln!("generator: {sent:?}\ncounter: {counted:?}");
}

#[test]
fn generator_rejects_an_unknown_interface() {
    let cfg = GenConfig {
        ifname: "lt-nonexist0".into(),
        flow: UdpFlow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: "10.0.0.1".parse().unwrap(),
            dst_ip: "10.0.0.2".parse().unwrap(),
            src_port: 1,
            dst_port: DISCARD_PORT,
        },
        payload_len: MIN_FRAME_UDP_PAYLOAD,
        count: 1,
        max_duration: Duration::from_secs(1),
        rate_pps: None,
        batch: 1,
    };
    let err = run_generator(&cfg).unwrap_err();
    assert!(err.to_string().contains("lt-nonexist0"), "{err}");
}
