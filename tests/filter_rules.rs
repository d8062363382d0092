//! Filter rules in the XDP program against a veth testbed: each match field, each action,
//! priorities, hit counters, and invalid rules rejected with nothing changed.

mod filter_support;

use std::net::{IpAddr, Ipv6Addr};

use filter_support::{bed, sock_receive, vm_receive, Frame, QUIET, VM};
use lancet::net::{rules::Rule, Backend};
use lancet::tools::testbed::Testbed;

fn rule(text: &str) -> Rule {
    Rule::parse_str(text).unwrap()
}

/// Send `frame` from the peer and report (reached the VM, reached the host).
fn fate(b: &mut filter_support::Bed, frame: &Frame, seq: u64) -> (bool, bool) {
    b.peer.send(&frame.build(seq)).unwrap();
    let vm = vm_receive(&mut b.backend, 1, QUIET).contains(&seq);
    let host = sock_receive(&b.host, 1, QUIET).contains(&seq);
    (vm, host)
}

#[test]
fn each_match_field_selects_exactly_its_frames() {
    let mut b = bed("fm", |_| {});
    let (vm_mac, peer_mac) = (Testbed::VM_MAC, b.peer_mac);
    let base = Frame::udp(vm_mac, peer_mac);
    let v6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last));
    let mut cases: Vec<(&str, Frame, Frame)> = Vec::new();
    let mut other_src = base.clone();
    other_src.src = [0x02, 0, 0, 0, 0, 0x99];
    cases.push((
        "src mac 02:00:00:00:00:99 drop",
        other_src.clone(),
        base.clone(),
    ));
    cases.push((
        "dst mac 52:54:00:12:34:56 drop",
        base.clone(),
        Frame::udp(b.nic_mac, peer_mac), // to the host: must still reach the host
    ));
    let mut tagged = base.clone();
    tagged.vlan = Some(42);
    let mut tagged_other = base.clone();
    tagged_other.vlan = Some(43);
    cases.push(("vlan 42 drop", tagged, tagged_other));
    let mut raw = base.clone();
    raw.ip = None;
    raw.ethertype = 0x88b5;
    let mut raw_other = raw.clone();
    raw_other.ethertype = 0x88b6;
    cases.push(("ethertype 0x88b5 drop", raw, raw_other));
    let mut from_far = base.clone();
    from_far.ip = Some(("10.99.1.7".parse().unwrap(), IpAddr::V4(Testbed::VM_IP)));
    cases.push(("src 10.99.0.0/16 drop", from_far, base.clone()));
    let mut to_other = base.clone();
    to_other.ip = Some((IpAddr::V4(Testbed::PEER_IP), "10.77.0.200".parse().unwrap()));
    cases.push(("dst 10.77.0.128/25 drop", to_other, base.clone()));
    let mut six = base.clone();
    six.ip = Some((v6(2), v6(10)));
    let mut six_other = six.clone();
    six_other.ip = Some((v6(3), v6(10)));
    cases.push(("src fd00::2 udp drop", six.clone(), six_other.clone()));
    cases.push(("dst fd00::/120 drop", six.clone(), base.clone()));
    let mut icmp = base.clone();
    icmp.proto = 1;
    cases.push(("icmp drop", icmp, base.clone()));
    let mut tcp = base.clone();
    tcp.proto = 6;
    tcp.dport = 8080;
    let mut tcp_out = tcp.clone();
    tcp_out.dport = 8081;
    cases.push(("tcp dport 8000-8080 drop", tcp.clone(), tcp_out));
    let mut sport = base.clone();
    sport.sport = 53;
    cases.push(("udp sport 53 drop", sport, base.clone()));

    let mut seq = 0;
    for (text, hit, miss) in cases {
        let id = b.backend.steering().rules().add(rule(text)).unwrap();
        let drops_before = b.backend.stats().steer.rule_drop;
        seq += 1;
        let (vm, host) = fate(&mut b, &hit, seq);
        assert!(!vm && !host, "{text}: the matching frame must be dropped");
        seq += 1;
        let (vm, host) = fate(&mut b, &miss, seq);
        assert!(vm || host, "{text}: the other frame must get through");
        let listed = b.backend.steering().rules().list().unwrap();
        let entry = listed.iter().find(|r| r.id == id).unwrap();
        assert_eq!(entry.hits, 1, "{text}: one hit counted");
        assert_eq!(
            b.backend.stats().steer.rule_drop,
            drops_before + 1,
            "{text}"
        );
        b.backend.steering().rules().delete(id).unwrap();
    }
    assert!(b.backend.steering().rules().list().unwrap().is_empty());
}

#[test]
fn actions_to_vm_pass_and_drop() {
    let mut b = bed("fa", |_| {});
    let rules = b.backend.steering().rules();
    // A frame for the host's own MAC goes to the VM by rule.
    let to_host_mac = Frame::udp(b.nic_mac, b.peer_mac);
    rules
        .add(rule(&format!("udp dport 4789 to vm {VM}")))
        .unwrap();
    assert_eq!(fate(&mut b, &to_host_mac, 1), (true, false), "to vm");
    assert_eq!(b.backend.stats().steer.rule_to_vm, 1);
    // A frame for the VM's MAC goes to the host by rule.
    let rules = b.backend.steering().rules();
    let mut ssh = Frame::udp(Testbed::VM_MAC, b.peer_mac);
    ssh.proto = 6;
    ssh.dport = 22;
    rules.add(rule("tcp dport 22 pass")).unwrap();
    assert_eq!(fate(&mut b, &ssh, 2), (false, true), "pass");
    assert_eq!(b.backend.stats().steer.rule_pass, 1);
    // Drop: neither.
    let rules = b.backend.steering().rules();
    let mut other = ssh.clone();
    other.dport = 23;
    rules.add(rule("tcp dport 23 drop")).unwrap();
    assert_eq!(fate(&mut b, &other, 3), (false, false), "drop");
    assert_eq!(b.backend.stats().steer.rule_drop, 1);
    // Without rules the MAC steering decides again.
    let rules = b.backend.steering().rules();
    assert_eq!(rules.clear().unwrap(), 3);
    assert_eq!(
        fate(&mut b, &to_host_mac, 4),
        (false, true),
        "default: host"
    );
    assert_eq!(fate(&mut b, &other, 5), (true, false), "default: VM");
}

#[test]
fn to_vm_of_a_vm_that_is_not_running_drops_and_counts() {
    let mut b = bed("fn", |_| {});
    b.backend
        .steering()
        .rules()
        .add(rule("udp dport 4789 to vm ghost"))
        .unwrap();
    let before = b.backend.stats().steer.drop_no_socket;
    let frame = Frame::udp(b.nic_mac, b.peer_mac);
    assert_eq!(fate(&mut b, &frame, 1), (false, false));
    assert_eq!(b.backend.stats().steer.drop_no_socket, before + 1);
}

#[test]
fn lower_priority_number_wins_whatever_the_order() {
    let mut b = bed("fp", |_| {});
    let f4789 = Frame::udp(Testbed::VM_MAC, b.peer_mac);
    let mut f5000 = f4789.clone();
    f5000.dport = 5000;
    let rules = b.backend.steering().rules();
    let broad = rules.add(rule("udp drop prio 20")).unwrap();
    let narrow = rules.add(rule("udp dport 4789 pass prio 10")).unwrap();
    assert_eq!(fate(&mut b, &f4789, 1), (false, true), "prio 10 pass wins");
    assert_eq!(fate(&mut b, &f5000, 2), (false, false), "prio 20 drop");
    // Swap: the broad drop now wins for both.
    let rules = b.backend.steering().rules();
    rules.delete(broad).unwrap();
    rules.add(rule("udp drop prio 5")).unwrap();
    assert_eq!(fate(&mut b, &f4789, 3), (false, false), "prio 5 drop wins");
    let listed = b.backend.steering().rules().list().unwrap();
    assert_eq!(listed.iter().find(|r| r.id == narrow).unwrap().hits, 1);
    // Equal priority: the older rule (lower id) wins.
    let rules = b.backend.steering().rules();
    rules.clear().unwrap();
    rules.add(rule("udp dport 4789 pass prio 7")).unwrap();
    rules.add(rule("src 10.77.0.0/24 drop prio 7")).unwrap();
    assert_eq!(
        fate(&mut b, &f4789, 4),
        (false, true),
        "older rule wins a tie"
    );
}

#[test]
fn invalid_rules_are_rejected_and_change_nothing() {
    let b = bed("fi", |_| {});
    let rules = b.backend.steering().rules();
    rules.add(rule("udp dport 4789 drop")).unwrap();
    let before = rules.list().unwrap();
    for text in [
        "udp dport 4789",
        "dport 80 drop",
        "src 10.0.0.0/40 drop",
        "vlan 5000 drop",
        "mirror drop",
    ] {
        assert!(Rule::parse_str(text).is_err(), "{text} must not parse");
    }
    // Valid rules that together need more masks than the program walks: refused as a whole.
    let too_many: Vec<Rule> = (1..=32u8)
        .map(|len| rule(&format!("src 10.0.0.0/{len} drop")))
        .collect();
    let err = rules.add_many(too_many).unwrap_err();
    assert!(err.to_string().contains("masks"), "{err}");
    let err = rules.delete(999).unwrap_err();
    assert!(err.to_string().contains("no rule with id 999"), "{err}");
    assert_eq!(rules.list().unwrap(), before, "nothing changed");
}
