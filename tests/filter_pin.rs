//! Pinned state: `lancet filter` / `lancet stats` / `lancet nic` (the built binary, as a user runs
//! it) change and read the maps of a running backend through bpffs; `nic attach` keeps the program without a process
//! and a later backend reuses it; rules change while traffic flows without losing a kept frame.

mod filter_support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use filter_support::{bed, pin_lock, vm_receive, Frame, QUIET, VM};
use lancet::net::{
    nic, pin, rulemaps::RuleMaps, rules::Rule, steer::attached_program_id, Backend, XdpBackend,
    XdpConfig, XdpMode,
};
use lancet::tools::testbed::Testbed;

/// Run the `lancet` binary with `args` (in the calling thread's network namespace): its stdout,
/// or its stderr when it fails.
fn lancet(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lancet"))
        .args(args)
        .output()
        .expect("run lancet");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8(out.stderr).unwrap())
    }
}

/// `lancet filter SUB IFACE WORDS...`.
fn cli_filter(sub: &str, iface: &str, words: &str) -> Result<String, String> {
    let mut args = vec!["filter", sub, iface];
    args.extend(words.split_whitespace());
    lancet(&args)
}

#[test]
fn cli_changes_the_rules_of_a_running_backend() {
    let _pins = pin_lock();
    let mut b = bed("pc", |c| c.pin = true);
    // The full `<ifname>@<netns inode>` name of this testbed's NIC: other lancet processes on the
    // machine may pin an `lt-nic` of their own namespace, which a bare name would make ambiguous.
    let dir = {
        let _in_host = b.bed.enter_host().unwrap();
        pin::pin_dir_here(Testbed::NIC)
    };
    let iface = dir.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        dir.join("rules").exists(),
        "maps pinned in {}",
        dir.display()
    );
    let out = cli_filter("add", &iface, &format!("udp dport 4789 to vm {VM} prio 10")).unwrap();
    assert!(
        out.starts_with("rule 1: udp dport 4789 to vm web1 prio 10"),
        "{out}"
    );
    // Invalid: a clear error, nothing changed.
    let err = cli_filter("add", &iface, "udp dport 99999 drop").unwrap_err();
    assert!(err.contains("not a port"), "{err}");
    let frame = Frame::udp(b.nic_mac, b.peer_mac);
    for seq in 0..5 {
        b.peer.send(&frame.build(seq)).unwrap();
    }
    assert_eq!(vm_receive(&mut b.backend, 5, filter_support::WAIT).len(), 5);
    let list = cli_filter("list", &iface, "--json").unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(v[0]["hits"], 5);
    assert_eq!(v[0]["action"], "to vm web1");
    assert_eq!(v[0]["prio"], 10);
    let out = lancet(&["stats", &iface, "--json"]).unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["verdicts"]["rule_to_vm"], 5);
    assert_eq!(report["vms"][0]["name"], VM);
    // `lancet stats VM`: the same NIC's report, narrowed to that VM.
    let out = lancet(&["stats", VM, "--json"]).unwrap();
    let by_vm: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(by_vm["ifname"], iface.as_str());
    assert_eq!(by_vm["vms"].as_array().unwrap().len(), 1);
    assert_eq!(by_vm["vms"][0]["name"], VM);
    assert_eq!(by_vm["verdicts"]["rule_to_vm"], 5);
    let err = lancet(&["stats", "no-such-vm", "--json"]).unwrap_err();
    assert!(err.contains("nor a running VM"), "{err}");
    let out = cli_filter("del", &iface, "1").unwrap();
    assert!(out.contains("deleted rule 1"), "{out}");
    b.peer.send(&frame.build(99)).unwrap();
    assert!(vm_receive(&mut b.backend, 1, QUIET).is_empty(), "rule gone");
    drop(b);
    assert!(!dir.exists(), "pins removed on clean exit");
}

#[test]
fn nic_attach_survives_the_process_and_run_reuses_it() {
    let _pins = pin_lock();
    let bed = Testbed::new(lancet::tools::testbed::TestbedConfig {
        name_prefix: "pa".into(),
        ..Default::default()
    })
    .unwrap();
    let _in_host = bed.enter_host().unwrap();
    let iface = Testbed::NIC.to_string();
    let ifindex = nic::ifindex(&iface).unwrap();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = pin::remove_pins(&self.0);
        }
    }
    let _cleanup = Detach(iface.clone());
    // The child process starts in this thread's network namespace (the testbed's host side).
    lancet(&["nic", "attach", &iface, "--mode", "native"]).unwrap();
    let prog = attached_program_id(ifindex).unwrap();
    assert_ne!(
        prog, 0,
        "program stays attached after the attaching Steering is gone"
    );
    cli_filter("add", &iface, "udp dport 4789 drop").unwrap();
    // A backend (lancet run) reuses the attached program and its rules.
    let mut cfg = XdpConfig::new(&iface, Testbed::VM_MAC);
    cfg.pin = true;
    cfg.vm_name = Some(VM.into());
    cfg.mode = XdpMode::Native;
    let backend = XdpBackend::open(&cfg).unwrap();
    assert_eq!(attached_program_id(ifindex).unwrap(), prog, "same program");
    assert_eq!(backend.steering().rules().list().unwrap().len(), 1);
    let out = lancet(&["nic", "status", &iface, "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["link_pinned"], true);
    assert_eq!(status["rules"], 1);
    assert_eq!(status["vms"][0][0], VM);
    drop(backend);
    assert_eq!(
        attached_program_id(ifindex).unwrap(),
        prog,
        "the VMM leaving keeps the attached program"
    );
    assert_eq!(RuleMaps::open_pinned(&iface).unwrap().vms().len(), 0);
    lancet(&["nic", "detach", &iface]).unwrap();
    // The kernel releases the last link reference asynchronously (deferred work).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while attached_program_id(ifindex).unwrap() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(attached_program_id(ifindex).unwrap(), 0, "detached");
    assert!(!pin::pin_dir_here(&iface).exists());
}

#[test]
fn rules_change_while_traffic_flows_without_losing_kept_frames() {
    const FRAMES: u64 = 3000;
    let _pins = pin_lock();
    let mut b = bed("pt", |c| c.pin = true);
    let iface = filter_support::pinned_nic_name(&b.bed);
    // The kept traffic reaches the VM only through this rule (it is addressed to the host MAC).
    RuleMaps::open_pinned(&iface)
        .unwrap()
        .add(Rule::parse_str(&format!("udp dport 4789 to vm {VM} prio 50")).unwrap())
        .unwrap();
    let frame = Frame::udp(b.nic_mac, b.peer_mac);
    let done = Arc::new(AtomicBool::new(false));
    // Another "process": changes rules through its own handle on the pinned maps.
    let changer = {
        let (iface, done) = (iface.clone(), done.clone());
        std::thread::spawn(move || {
            let maps = RuleMaps::open_pinned(&iface).unwrap();
            let mut changes = 0u32;
            while !done.load(Ordering::Relaxed) {
                let n = changes % 7;
                let ids = maps
                    .add_many(vec![
                        Rule::parse_str(&format!("udp dport {} drop prio 1", 5000 + n)).unwrap(),
                        Rule::parse_str(&format!("src 10.{n}.0.0/16 tcp drop prio 2")).unwrap(),
                        Rule::parse_str(&format!("tcp dport 100-{} pass prio 3", 200 + n)).unwrap(),
                    ])
                    .unwrap();
                for id in ids {
                    maps.delete(id).unwrap();
                }
                changes += 1;
            }
            changes
        })
    };
    let sender = {
        let peer = b
            .bed
            .raw_socket(lancet::tools::testbed::Side::Peer, Testbed::PEER_NIC)
            .unwrap();
        std::thread::spawn(move || {
            for seq in 0..FRAMES {
                peer.send(&frame.build(seq)).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let got = vm_receive(&mut b.backend, FRAMES as usize, Duration::from_secs(20));
    sender.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let changes = changer.join().unwrap();
    let mut seqs = got.clone();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len() as u64,
        FRAMES,
        "every kept frame reached the VM while {changes} rule changes ran"
    );
    assert!(changes >= 2, "rules changed during the traffic ({changes})");
    assert_eq!(b.backend.stats().drops.rx_total(), 0);
}

#[test]
fn pins_of_namespaces_that_no_longer_exist_are_ignored_and_swept() {
    let _pins = pin_lock();
    // Inode 1 is never a network namespace: this stands for the pins of a process killed with -9
    // whose namespace is gone.
    let stale = std::path::Path::new(pin::PIN_ROOT).join("lt-zz@1");
    std::fs::create_dir_all(pin::PIN_ROOT).unwrap();
    std::fs::create_dir(&stale).unwrap();
    assert_ne!(
        pin::pin_dir("lt-zz").unwrap(),
        stale,
        "a dead namespace's pins are not picked"
    );
    // Creating pins for any NIC sweeps what dead namespaces left.
    let bed = Testbed::new(lancet::tools::testbed::TestbedConfig {
        name_prefix: "ps".into(),
        ..Default::default()
    })
    .unwrap();
    let mine = {
        let _in_host = bed.enter_host().unwrap();
        pin::ensure_pin_dir(Testbed::NIC).unwrap()
    };
    assert!(!stale.exists(), "stale pins swept");
    assert!(mine.exists(), "a live namespace's pins are kept");
    pin::remove_dir(&mine).unwrap();
}

/// Maps pinned for the NIC by another lancet build (or left in the directory of a dead namespace
/// whose inode number a new namespace reuses) do not fit this program: with no program attached,
/// nothing uses them, so `lancet run` replaces them instead of failing with EINVAL.
#[test]
fn incompatible_leftover_pins_are_replaced_when_no_program_is_attached() {
    use lancet::net::{pin, XdpBackend, XdpConfig, XdpMode};
    let _pins = pin_lock();
    let bed = Testbed::new(lancet::tools::testbed::TestbedConfig {
        name_prefix: "ip".into(),
        ..Default::default()
    })
    .unwrap();
    let _in_host = bed.enter_host().unwrap();
    let dir = pin::ensure_pin_dir(Testbed::NIC).unwrap();
    // A `vm_macs` of the wrong shape, as an older build would have left.
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let mut wrong =
        libbpf_rs::MapHandle::create(libbpf_rs::MapType::Array, Some("vm_macs"), 4, 4, 1, &opts)
            .unwrap();
    wrong.pin(dir.join("vm_macs")).unwrap();
    drop(wrong);
    let mut cfg = XdpConfig::new(Testbed::NIC, Testbed::VM_MAC);
    cfg.mode = XdpMode::Native;
    cfg.pin = true;
    let backend = XdpBackend::open(&cfg).expect("the leftover pins are replaced");
    drop(backend);
    let _ = pin::remove_dir(&dir);
}
