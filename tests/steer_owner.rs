//! Steering registrations are owned (issue 11, items 6 and 7): a VM's MAC and addresses go into
//! the shared maps only where no running VM has them, an open that fails leaves nothing behind,
//! what a dead VM left is swept (its IP entries included), and "dead" is decided by the VM's owner
//! lock, not by `kill(pid, 0)` (which a pid in another pid namespace, or a reused pid, fools).

mod filter_support;

use std::{net::Ipv4Addr, path::PathBuf};

use filter_support::{arp_targets, bed, pin_lock, pinned_nic_name, vm_receive, Frame, QUIET, WAIT};
use lancet::net::{
    owner::OWNER_ROOT,
    pin,
    port::PORT_QUEUE,
    rulemaps::{RuleMaps, VmName},
    NetError, XdpBackend, XdpConfig, XdpMode,
};
use lancet::tools::testbed::Testbed;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

const MAC_B: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];

fn config_b(edit: impl FnOnce(&mut XdpConfig)) -> XdpConfig {
    let mut cfg = XdpConfig::new(Testbed::NIC, MAC_B);
    cfg.vm_ip = Some(Ipv4Addr::new(10, 77, 0, 11));
    cfg.mode = XdpMode::Native;
    cfg.vm_name = Some("b".into());
    cfg.pin = true;
    edit(&mut cfg);
    cfg
}

fn open_in(bed: &Testbed, cfg: &XdpConfig) -> Result<XdpBackend, NetError> {
    let _in_host = bed.enter_host().unwrap();
    XdpBackend::open(cfg)
}

/// A pinned map of the testbed NIC.
fn pinned_map(bed: &Testbed, name: &str) -> MapHandle {
    let dir = {
        let _in_host = bed.enter_host().unwrap();
        pin::pin_dir_here(Testbed::NIC)
    };
    MapHandle::from_pinned_path(dir.join(name)).unwrap()
}

fn mac_key(mac: [u8; 6]) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..6].copy_from_slice(&mac);
    k
}

fn has(map: &MapHandle, key: &[u8]) -> bool {
    map.lookup(key, MapFlags::ANY).unwrap().is_some()
}

#[test]
fn a_second_vm_with_the_same_ip_is_refused_and_the_first_still_answers_arp() {
    let _pins = pin_lock();
    let mut a = bed("sa", |c| c.pin = true);
    let err = open_in(&a.bed, &config_b(|c| c.vm_ip = Some(Testbed::VM_IP)))
        .expect_err("a second VM with the first VM's address is refused");
    let text = err.to_string();
    assert!(matches!(err, NetError::AddressInUse { .. }), "{text}");
    assert!(
        text.contains(&Testbed::VM_IP.to_string()) && text.contains("web1"),
        "the error names the address and the VM holding it: {text}"
    );
    // The first VM's ARP entry is intact.
    a.peer_asks_arp(Testbed::VM_IP);
    assert_eq!(arp_targets(&mut a.backend, QUIET), vec![Testbed::VM_IP]);
    // The same MAC as a running VM: refused too, naming it.
    let err = open_in(&a.bed, &config_b(|c| c.vm_mac = Testbed::VM_MAC)).unwrap_err();
    assert!(
        matches!(err, NetError::MacInUse { .. }) && err.to_string().contains("web1"),
        "{err}"
    );
    let macs = pinned_map(&a.bed, "vm_macs");
    assert!(has(&macs, &mac_key(Testbed::VM_MAC)), "A's MAC entry kept");
}

/// Next to a running VM A, open B edited by `edit`: the open fails with an error that names
/// `cause` (lower case), and leaves none of B's entries, A's kept; B's MAC can be used again.
fn failed_open_leaves_nothing(prefix: &str, edit: impl FnOnce(&mut XdpConfig), cause: &str) {
    let _pins = pin_lock();
    let a = bed(prefix, |c| c.pin = true);
    let err = open_in(&a.bed, &config_b(edit))
        .expect_err("the open fails")
        .to_string();
    assert!(
        err.to_lowercase().contains(cause),
        "fails at {cause}: {err}"
    );
    let macs = pinned_map(&a.bed, "vm_macs");
    let ipv4 = pinned_map(&a.bed, "vm_ipv4");
    assert!(
        !has(&macs, &mac_key(MAC_B)),
        "the failed VM's MAC entry is gone"
    );
    assert!(!has(&ipv4, &[10, 77, 0, 11]), "its IPv4 entry is gone");
    assert!(has(&macs, &mac_key(Testbed::VM_MAC)), "A's MAC entry kept");
    assert!(has(&ipv4, &Testbed::VM_IP.octets()), "A's IPv4 entry kept");
    // The MAC is free again.
    let b = open_in(&a.bed, &config_b(|_| {})).expect("the MAC can be used again");
    drop(b);
}

#[test]
fn an_open_that_fails_after_registering_leaves_no_entry() {
    // Opening the mirror TAP fails (lt-nic exists and is no TAP device): after the MAC, the IPs
    // and the socket were registered.
    failed_open_leaves_nothing("sf", |c| c.mirror_tap = Some(Testbed::NIC.into()), "tap");
}

#[test]
fn an_open_that_fails_at_its_last_step_the_name_leaves_nothing() {
    // B asks for A's name: refused when the name is registered, the last step of the open, after
    // the MAC, the IPs, the socket and the NIC's unicast filter.
    failed_open_leaves_nothing(
        "sn",
        |c| c.vm_name = Some(filter_support::VM.into()),
        "already used",
    );
}

/// An owner file of a VM that died: nobody holds its lock.
struct DeadOwner(PathBuf);

impl DeadOwner {
    fn write(token: u32, key: &str, slot: u32, queue: u32, mac: [u8; 6]) -> Self {
        std::fs::create_dir_all(OWNER_ROOT).unwrap();
        let path = PathBuf::from(OWNER_ROOT).join(token.to_string());
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, format!("{key} {slot} {queue} {hex}\n")).unwrap();
        Self(path)
    }
}

impl Drop for DeadOwner {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_dead_vms_entries_are_swept_ip_addresses_included() {
    let _pins = pin_lock();
    let a = bed("sd", |c| c.pin = true);
    let key = pinned_nic_name(&a.bed);
    // What a VM killed with -9 leaves: its owner file (unlocked), name, MAC and IP entries.
    // The token is above pid_max: no process has it, so the old kill(pid, 0) test also says dead.
    const TOKEN: u32 = 9_999_001;
    const SLOT: u32 = 7;
    let dead_mac = [0x52, 0x54, 0x00, 0xde, 0xad, 0x01];
    let dead_ip = Ipv4Addr::new(10, 77, 0, 99);
    let dead_ip6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99];
    let _owner = DeadOwner::write(TOKEN, &key, SLOT, PORT_QUEUE, dead_mac);
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&SLOT.to_ne_bytes());
    value[4..].copy_from_slice(&PORT_QUEUE.to_ne_bytes());
    let (macs, ipv4, ipv6) = (
        pinned_map(&a.bed, "vm_macs"),
        pinned_map(&a.bed, "vm_ipv4"),
        pinned_map(&a.bed, "vm_ipv6"),
    );
    macs.update(&mac_key(dead_mac), &value, MapFlags::ANY)
        .unwrap();
    ipv4.update(&dead_ip.octets(), &value, MapFlags::ANY)
        .unwrap();
    ipv6.update(&dead_ip6, &value, MapFlags::ANY).unwrap();
    RuleMaps::open_pinned(&key)
        .unwrap()
        .register_vm(&VmName {
            name: "dead".into(),
            slot: SLOT,
            queue: PORT_QUEUE,
            pid: TOKEN,
            mac: dead_mac,
        })
        .unwrap();
    // The next VM on the NIC sweeps.
    let b = open_in(&a.bed, &config_b(|_| {})).unwrap();
    assert!(
        !has(&ipv4, &dead_ip.octets()),
        "the dead VM's IPv4 entry is swept"
    );
    assert!(!has(&ipv6, &dead_ip6), "the dead VM's IPv6 entry is swept");
    assert!(!has(&macs, &mac_key(dead_mac)), "its MAC entry is swept");
    let names = RuleMaps::open_pinned(&key).unwrap().vms();
    assert!(!names.iter().any(|v| v.name == "dead"), "its name is swept");
    assert!(!_owner.0.exists(), "its owner file is removed");
    assert!(
        has(&ipv4, &Testbed::VM_IP.octets()),
        "the live VM's entry kept"
    );
    drop(b);
}

#[test]
fn liveness_is_the_owner_lock_not_a_pid_that_happens_to_exist() {
    let _pins = pin_lock();
    let a = bed("sl", |c| c.pin = true);
    let key = pinned_nic_name(&a.bed);
    let maps = RuleMaps::open_pinned(&key).unwrap();
    // A registration whose `pid` is a running process (pid 1, or a pid reused, or the pid of a
    // process in another pid namespace) but whose VM is gone: stale.
    maps.register_vm(&VmName {
        name: "b".into(),
        slot: 9,
        queue: PORT_QUEUE,
        pid: 1,
        mac: [0x52, 0x54, 0x00, 0xde, 0xad, 0x02],
    })
    .unwrap();
    let stale = maps.vms().into_iter().find(|v| v.name == "b").unwrap();
    assert!(
        stale.is_stale(),
        "pid 1 runs, but no VM holds that owner lock"
    );
    // So a new VM can take the name.
    let b = open_in(&a.bed, &config_b(|_| {})).expect("the stale name is taken over");
    let live = maps.vms().into_iter().find(|v| v.name == "b").unwrap();
    assert!(!live.is_stale(), "the new VM's registration is live");
    // While it runs, the name is refused to anyone else, even from this same process.
    let err = open_in(
        &a.bed,
        &config_b(|c| {
            c.vm_mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x58];
            c.vm_ip = None;
        }),
    )
    .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");
    // A name longer than the map key is refused, not truncated.
    let err = maps
        .register_vm(&VmName {
            name: "sixteen-bytes-xx".into(),
            slot: 9,
            queue: PORT_QUEUE,
            pid: 1,
            mac: [0x52, 0x54, 0x00, 0xde, 0xad, 0x03],
        })
        .unwrap_err();
    assert!(err.to_string().contains("not a valid VM name"), "{err}");
    drop(b);
}

#[test]
fn a_second_vm_never_takes_the_queue_of_a_running_unnamed_vm() {
    let _pins = pin_lock();
    // A has no VM name, so no `vm_names` entry: its queue is known by its owner record only.
    let mut a = bed("sq", |c| {
        c.pin = true;
        c.vm_name = None;
    });
    let b = open_in(&a.bed, &config_b(|_| {})).expect("the second VM gets a veth port");
    assert!(b.port().is_some(), "B did not bind A's queue");
    // A's socket is still in its XSKMAP slot: A receives.
    let to_a = Frame::udp(Testbed::VM_MAC, a.peer_mac);
    a.peer.send(&to_a.build(7)).unwrap();
    assert_eq!(vm_receive(&mut a.backend, 1, WAIT), vec![7]);
    drop(b);
    // B leaving removed only its own entries.
    a.peer.send(&to_a.build(8)).unwrap();
    assert_eq!(vm_receive(&mut a.backend, 1, WAIT), vec![8]);
}
