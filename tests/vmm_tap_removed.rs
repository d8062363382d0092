//! A TAP device deleted under a running VM: the I/O thread must not spin on the fd's endless
//! EPOLLERR (no wake-up at all once the loss is handled, and next to no CPU). It drops the fd from its poll set, takes the NIC's link down (the guest sees no
//! carrier, TX comes back with LCAR) and counts the loss in `backend_lost`. Needs root (it builds a
//! testbed of `lt-*` network namespaces, removed on drop).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lancet::lance::{IrqLine, Lance};
use lancet::net::{TapBackend, TapConfig};
use lancet::tools::testbed::{Side, Testbed, TestbedConfig};
use lancet::vmm::io_thread::{run_io_thread, IoTuning};
use lancet::vmm::nic::NetShared;
use lancet::vmm::stats::ExitStats;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Name of the I/O thread under test (to find its TID in /proc/self/task).
const IO_THREAD_NAME: &str = "lt-io-tapgone";
// Lance WIO registers and BCR4 (link LED) bits.
const RAP: u64 = 0x12;
const BDP: u64 = 0x16;
const BCR_LED0: u16 = 4;
const LED_OUT: u16 = 0x8000;
/// CPU share above which the I/O thread counts as spinning (a spin uses ~100% of a core; an idle
/// thread in epoll ~0%).
const SPIN_SHARE: f64 = 0.3;

struct NoIrq;
impl IrqLine for NoIrq {
    fn set_level(&mut self, _: bool) {}
}

fn link_led(net: &NetShared, mem: &GuestMemoryMmap) -> bool {
    let mut state = net.lock();
    state.nic.write_reg(mem, RAP, &BCR_LED0.to_le_bytes());
    let mut value = [0u8; 2];
    state.nic.read_reg(mem, BDP, &mut value);
    u16::from_le_bytes(value) & LED_OUT != 0
}

/// The TID of this process's thread `name` (it names itself once running: wait for it).
fn thread_id(name: &str) -> String {
    let start = Instant::now();
    loop {
        let found = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .find(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
            });
        if let Some(task) = found {
            return task.file_name().to_string_lossy().into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no thread named {name}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// User + system CPU time of thread `tid` of this process, in clock ticks.
fn cpu_ticks(tid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command (which may contain spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_deleted_tap_takes_the_link_down_without_spinning_the_io_thread() {
    let bed = Testbed::new(TestbedConfig {
        name_prefix: "tg".into(),
        with_bridge: true,
        ..Default::default()
    })
    .unwrap();
    let tap = {
        let _in_host = bed.enter_host().unwrap();
        TapBackend::open(&TapConfig::new(Testbed::TAP, Some(Testbed::BRIDGE))).unwrap()
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mut lance = Lance::new(Testbed::VM_MAC, NoIrq);
    lance.set_link(true);
    let net = Arc::new(NetShared::new(Box::new(lance), Some(Box::new(tap)), true).unwrap());
    assert!(link_led(&net, &mem), "link up before");
    let stats = Arc::new(ExitStats::default());
    let stop = EventFd::new(EFD_NONBLOCK).unwrap();
    let thread = {
        let (net, mem, stats) = (Arc::clone(&net), mem.clone(), Arc::clone(&stats));
        let stop = stop.try_clone().unwrap();
        std::thread::Builder::new()
            .name(IO_THREAD_NAME.into())
            .spawn(move || run_io_thread(net, mem, stop, stats, IoTuning::default()))
            .unwrap()
    };
    let tid = thread_id(IO_THREAD_NAME);

    let out = bed
        .run_in(Side::Host, &["ip", "link", "del", Testbed::TAP])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let start = Instant::now();
    while stats.backend_lost.load(Ordering::Relaxed) == 0
        && start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Over one second after the removal the thread must sleep, not spin on EPOLLERR.
    let (before, wakeups_before) = (cpu_ticks(&tid), stats.io_wakeups.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs(1));
    let used = (cpu_ticks(&tid) - before) as f64 / clock_ticks_per_second();
    let wakeups = stats.io_wakeups.load(Ordering::Relaxed) - wakeups_before;
    let lost = stats.backend_lost.load(Ordering::Relaxed);
    let led = link_led(&net, &mem);
    stop.write(1).unwrap();
    let result = thread.join().unwrap();
    assert_eq!(wakeups, 0, "the I/O thread kept waking up on the dead fd");
    assert!(
        used < SPIN_SHARE,
        "the I/O thread used {used:.2} s of CPU in 1 s after the TAP was deleted"
    );
    assert_eq!(lost, 1, "backend loss counted once");
    assert!(!led, "the guest sees the link down");
    result.unwrap();
}
