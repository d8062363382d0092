//! `lancet demo` (what `make run` shows): builds a demo topology in network namespaces, boots the
//! test guest in `lancet run` bridged over AF_XDP, and shows it answering the peer (ping, UDP echo).
//!
//! It is a thin script over the bench's parts: [`VmmRunner`] starts `lancet run` on a fresh
//! veth pair in two `lt-*` namespaces (removed on drop, also on error), [`run_rtt`] is the echo
//! client. Everything it prints comes from the running VM and the peer's own tools.

use crate::net::netlink::Netns;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use crate::frame::MacAddr;
use crate::net::BackendKind;
use crate::tools::bench::netns::{join, spawn_in_netns};
use crate::tools::bench::qemu_path::default_guest_image;
use crate::tools::bench::report::RttSummary;
use crate::tools::bench::rtt::{run_rtt, RttConfig, WaitMode};
use crate::tools::bench::vmm_path::{VmmRunner, VmmSettings};
use crate::tools::bench::{BenchError, PathRunner, Role};
use crate::tools::guest_cmdline::{GuestMode, PollKick};

/// What `lancet demo` runs.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Backend the VM is bridged over.
    #[arg(long, value_enum, default_value = "xdp")]
    pub backend: BackendKind,
    /// Guest driver mode: `poll` (ring 3 polls the descriptor rings) or `irq` (interrupt-driven).
    #[arg(long, value_enum, default_value = "poll")]
    pub mode: GuestMode,
    /// UDP echo requests sent after the pings (64-byte frames).
    #[arg(long, default_value_t = 2000)]
    pub echoes: u64,
    /// Poll mode: when the guest writes TDMD (always, lazy: only if the I/O thread's TX ring poll
    /// has not sent the frame within ~20 us, never).
    #[arg(long, value_enum, default_value = "lazy")]
    pub kick: PollKick,
    /// The test guest image (default: $LANCET_GUEST_ELF, else the one `make guest` built).
    #[arg(long)]
    pub guest_elf: Option<PathBuf>,
    /// How long the guest may take to boot.
    #[arg(long, default_value_t = 60)]
    pub boot_timeout_secs: u64,
}

/// Pings sent from the peer namespace.
const PINGS: &str = "5";
/// Warm-up echoes (ARP, caches) not counted.
const ECHO_WARMUP: u64 = 50;

/// Run the demo; prints as it goes. An error names the step that failed.
pub fn run_demo(args: &DemoArgs) -> Result<(), BenchError> {
    let lancet = std::env::current_exe()
        .map_err(|e| BenchError::Setup(format!("cannot find the lancet executable: {e}")))?;
    let guest_image = args.guest_elf.clone().unwrap_or_else(default_guest_image);
    let backend = args.backend;
    let backend_name = match backend {
        BackendKind::Xdp => "AF_XDP",
        BackendKind::Tap => "TAP",
    };
    let mode = args.mode;
    let mut runner = VmmRunner::new(
        backend,
        VmmSettings {
            lancet,
            guest_image,
            boot_timeout: Duration::from_secs(args.boot_timeout_secs),
            pin_vcpu: None,
            pin_io: None,
            poll_kick: args.kick,
            busy_poll_us: None,
        },
    );
    if let Some(reason) = runner.unavailable(mode) {
        return Err(BenchError::Setup(reason));
    }

    println!("== lancet demo: the test guest bridged over {backend_name} ({mode:?} mode)");
    let running = runner.start(mode, &Role::Echo)?;
    let ep = running.endpoint().clone();
    println!(
        "VM is up: guest {} ({}) behind the host NIC; peer namespace {} ({} on {})",
        ep.dut_ip,
        MacAddr(ep.dut_mac),
        ep.peer_netns,
        ep.peer_ip,
        ep.peer_ifname
    );

    println!("\n== ping from the peer namespace");
    let ping = Netns::named(&ep.peer_netns)
        .and_then(|ns| ns.command("ping"))
        .map_err(|e| BenchError::Setup(e.to_string()))?
        .args(["-c", PINGS, "-i", "0.2", "-W", "2"])
        .arg(ep.dut_ip.to_string())
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run ping (install iputils-ping): {e}")))?;
    print!("{}", String::from_utf8_lossy(&ping.stdout));

    println!(
        "\n== {} UDP echoes (64-byte frames) from the peer namespace",
        args.echoes
    );
    let config = RttConfig {
        target: SocketAddrV4::new(ep.dut_ip, ep.echo_port),
        payload_len: 18,
        samples: args.echoes,
        warmup: ECHO_WARMUP,
        timeout: Duration::from_millis(500),
        max_losses: 20,
        max_duration: Duration::from_secs(30),
        wait: WaitMode::Block,
    };
    let outcome = join(spawn_in_netns(&ep.peer_netns, "demo-rtt", move || {
        run_rtt(&config)
    })?)?;
    let m = RttSummary::from_histogram(&outcome.histogram, outcome.lost);
    println!(
        "answered {}/{} | RTT us: p50 {} p90 {} p99 {} max {} mean {:.1}",
        outcome.received, outcome.sent, m.p50, m.p90, m.p99, m.max, m.mean
    );

    let stats = running.finish()?;
    println!("\n== VM counters at exit (lancet run --stats-json)");
    for (reason, count) in &stats.kvm_exits {
        println!("kvm exits {reason}: {count}");
    }
    if stats.drops.is_empty() {
        println!("drops: none");
    }
    for d in &stats.drops {
        println!("drops at {}: {}", d.counted_at, d.frames);
    }
    if !ping.status.success() || outcome.received == 0 {
        return Err(BenchError::Setup(
            "the guest did not answer the peer: see the lines above".into(),
        ));
    }
    println!("\n== done: the topology is removed");
    Ok(())
}
