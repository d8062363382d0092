//! The steering program's flow key on frames that used to slip past rules: IPv6 extension header
//! chains (a Hop-by-Hop or Destination Options header before TCP, a chain longer than the
//! program walks, a non-first fragment) and QinQ double tags. Run in the kernel with
//! BPF_PROG_TEST_RUN on the detached program (needs root).

use lancet::net::{rules::Rule, steer::DetachedProgram};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv6 frame with these extension headers (kind, bytes) in front of a transport header with
/// destination port `dport`.
fn ipv6(ext: &[(u8, Vec<u8>)], transport: u8, dport: u16) -> Vec<u8> {
    let mut f = eth(0x86dd);
    let first = ext.first().map_or(transport, |e| e.0);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, first, 64]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10]);
    for (i, (_, body)) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(transport, |e| e.0);
        let mut h = body.clone();
        h[0] = next;
        f.extend_from_slice(&h);
    }
    f.extend_from_slice(&1234u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0; 16]);
    f
}

/// An 8-byte option header (Hop-by-Hop, Routing, Destination Options: length 0 = 8 bytes).
fn opts(kind: u8) -> (u8, Vec<u8>) {
    (kind, vec![0, 0, 1, 4, 0, 0, 0, 0])
}

/// An AH header of 16 bytes (length field 2: (2 + 2) * 4).
fn auth() -> (u8, Vec<u8>) {
    let mut h = vec![0u8; 16];
    h[1] = 2;
    (NEXTHDR_AUTH, h)
}

fn fragment(offset_units: u16) -> (u8, Vec<u8>) {
    let mut h = vec![0u8; 8];
    h[2..4].copy_from_slice(&(offset_units << 3).to_be_bytes());
    (NEXTHDR_FRAGMENT, h)
}

fn verdict(prog: &mut DetachedProgram, rules: &[&str], frame: &[u8]) -> u32 {
    prog.rules().clear().unwrap();
    for r in rules {
        prog.rules().add(Rule::parse_str(r).unwrap()).unwrap();
    }
    prog.test_run(frame, 1).unwrap().0
}

fn program() -> DetachedProgram {
    DetachedProgram::load().expect("loading the steering program (run as root)")
}

#[test]
fn extension_headers_do_not_hide_the_tcp_port() {
    let mut p = program();
    let ssh = ["ip6 tcp dport 22 drop"];
    for (name, chain) in [
        ("none", vec![]),
        ("hop-by-hop", vec![opts(NEXTHDR_HOP)]),
        ("destination options", vec![opts(NEXTHDR_DEST)]),
        ("hbh + routing + ah + dst", {
            vec![opts(NEXTHDR_HOP), opts(43), auth(), opts(NEXTHDR_DEST)]
        }),
        ("first fragment", vec![fragment(0)]),
        ("six headers", vec![opts(NEXTHDR_DEST); 6]),
    ] {
        let frame = ipv6(&chain, PROTO_TCP, 22);
        assert_eq!(verdict(&mut p, &ssh, &frame), XDP_DROP, "{name}: dropped");
        let other = ipv6(&chain, PROTO_TCP, 23);
        assert_eq!(verdict(&mut p, &ssh, &other), XDP_PASS, "{name}: port 23");
    }
}

#[test]
fn an_unparsed_chain_has_no_transport_but_is_still_ipv6() {
    let mut p = program();
    let seven = ipv6(&vec![opts(NEXTHDR_DEST); 7], PROTO_TCP, 22);
    assert_eq!(
        verdict(&mut p, &["ip6 tcp dport 22 drop"], &seven),
        XDP_PASS
    );
    assert_eq!(verdict(&mut p, &["tcp drop"], &seven), XDP_PASS);
    assert_eq!(verdict(&mut p, &["ip6 drop"], &seven), XDP_DROP);
    // Truncated in the middle of the chain.
    let mut cut = ipv6(&[opts(NEXTHDR_HOP)], PROTO_TCP, 22);
    cut.truncate(14 + 40 + 4);
    assert_eq!(verdict(&mut p, &["ip6 tcp drop"], &cut), XDP_PASS);
    assert_eq!(verdict(&mut p, &["ip6 drop"], &cut), XDP_DROP);
    // A later fragment: the protocol is known, the ports are not.
    let later = ipv6(&[fragment(100)], PROTO_TCP, 22);
    assert_eq!(verdict(&mut p, &["tcp dport 22 drop"], &later), XDP_PASS);
    assert_eq!(verdict(&mut p, &["ip6 tcp drop"], &later), XDP_DROP);
}

#[test]
fn qinq_frames_are_parsed_under_the_outer_vid() {
    let mut p = program();
    for outer in [0x88a8u16, 0x8100] {
        let mut f = eth(outer);
        f.extend_from_slice(&100u16.to_be_bytes());
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&42u16.to_be_bytes());
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 36, 0, 0, 0, 0, 64, PROTO_UDP, 0, 0];
        ip.extend_from_slice(&[10, 99, 0, 1, 10, 77, 0, 10]);
        ip.extend_from_slice(&1234u16.to_be_bytes());
        ip.extend_from_slice(&4789u16.to_be_bytes());
        ip.extend_from_slice(&[0; 12]);
        f.extend_from_slice(&ip);
        let rule = ["vlan 100 udp dport 4789 drop"];
        assert_eq!(verdict(&mut p, &rule, &f), XDP_DROP, "outer {outer:#x}");
        assert_eq!(verdict(&mut p, &["src 10.99.0.0/16 drop"], &f), XDP_DROP);
        assert_eq!(verdict(&mut p, &["vlan 42 drop"], &f), XDP_PASS);
    }
}
