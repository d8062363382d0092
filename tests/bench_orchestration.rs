//! The round loop with a stand-in VM path built from the kernel stack (UDP echo socket, AF_PACKET
//! sink and blaster, kernel TCP sink and source) that reports one "exit" per echoed datagram:
//! checks the PathRunner plumbing, the accounting of rates, drops, exits per packet and TCP
//! transfers, and the report it produces.

use std::net::SocketAddrV4;
use std::time::Duration;

use lancet::tools::bench::gen::{
    run_generator, spawn_counter, CountConfig, CounterHandle, FrameFilter, GenConfig,
};
use lancet::tools::bench::netns::{spawn_in_netns, VethPairNetns};
use lancet::tools::bench::packet::{UdpFlow, DISCARD_PORT, UDP_PAYLOAD_OFFSET};
use lancet::tools::bench::report::{check_report, PathResult};
use lancet::tools::bench::rtt::KernelUdpEcho;
use lancet::tools::bench::tcp::{spawn_receiver, spawn_sender, Transfer};
use lancet::tools::bench::{
    run_rounds, BenchArgs, BenchError, BenchPlan, Endpoint, GuestMode, PathRunner, PathStats, Role,
    RunningPath,
};

const ECHO_PORT: u16 = 7;
/// Bytes per stand-in TCP transfer.
const TCP_BYTES: u64 = 1 << 20;

struct KernelStandIn {
    pair: VethPairNetns,
}

enum Job {
    Echo(KernelUdpEcho),
    Sink(CounterHandle),
    Blast(std::thread::JoinHandle<Result<lancet::tools::bench::gen::GenOutcome, BenchError>>),
    Tcp(std::thread::JoinHandle<Result<Transfer, BenchError>>),
}

struct Running {
    endpoint: Endpoint,
    job: Job,
}

impl RunningPath for Running {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn finish(self: Box<Self>) -> Result<PathStats, BenchError> {
        let mut stats = PathStats::default();
        match self.job {
            Job::Echo(echo) => {
                let echoed = echo.stop()?;
                stats.kvm_exits.insert("stand_in_echoed".into(), echoed);
            }
            Job::Sink(counter) => {
                let counted = counter.stop_and_finish()?;
                stats.frames_received = Some(counted.matched);
                stats.receive_window = Some(counted.active);
            }
            Job::Blast(thread) => {
                let sent = lancet::tools::bench::netns::join(thread)?;
                stats.frames_sent = Some(sent.sent);
            }
            Job::Tcp(thread) => {
                lancet::tools::bench::netns::join(thread)?;
            }
        }
        Ok(stats)
    }
}

impl PathRunner for KernelStandIn {
    fn name(&self) -> &'static str {
        "tap"
    }

    fn unavailable(&mut self, mode: GuestMode) -> Option<String> {
        (mode == GuestMode::Irq).then(|| "stand-in has no irq mode".to_string())
    }

    fn prepare(&mut self, _mode: GuestMode) -> Result<Endpoint, BenchError> {
        Ok(Endpoint {
            peer_netns: self.pair.b.netns.clone(),
            peer_ifname: self.pair.b.ifname.clone(),
            peer_mac: self.pair.b.mac,
            peer_ip: self.pair.b.ip,
            dut_mac: self.pair.a.mac,
            dut_ip: self.pair.a.ip,
            echo_port: ECHO_PORT,
        })
    }

    fn start(&mut self, mode: GuestMode, role: &Role) -> Result<Box<dyn RunningPath>, BenchError> {
        let endpoint = self.prepare(mode)?;
        let a = &self.pair.a;
        let job = match role {
            Role::Echo => Job::Echo(KernelUdpEcho::spawn(&a.netns, ECHO_PORT, false, None)?),
            Role::Sink { max_frames } => Job::Sink(spawn_counter(
                &a.netns,
                &a.ifname,
                None,
                CountConfig {
                    filter: FrameFilter {
                        udp_dst_port: Some(DISCARD_PORT),
                        ..FrameFilter::default()
                    },
                    expected: Some(*max_frames),
                    max_duration: Duration::from_secs(30),
                    idle_timeout: Duration::from_secs(30),
                    max_active: None,
                },
            )?),
            Role::Blast { count, frame_len } => {
                let cfg = GenConfig {
                    ifname: a.ifname.clone(),
                    flow: UdpFlow {
                        src_mac: a.mac,
                        dst_mac: endpoint.peer_mac,
                        src_ip: a.ip,
                        dst_ip: endpoint.peer_ip,
                        src_port: 40001,
                        dst_port: DISCARD_PORT,
                    },
                    payload_len: frame_len - UDP_PAYLOAD_OFFSET,
                    count: (*count).min(20_000),
                    max_duration: Duration::from_secs(5),
                    rate_pps: Some(50_000),
                    batch: 1,
                };
                Job::Blast(spawn_in_netns(&a.netns, "stand-in-blast", move || {
                    run_generator(&cfg)
                })?)
            }
            Role::TcpSink { port } => Job::Tcp(spawn_receiver(
                &a.netns,
                SocketAddrV4::new(a.ip, *port),
                Duration::from_secs(30),
                None,
                || {},
            )?),
            Role::TcpSource { peer, bytes } => {
                Job::Tcp(spawn_sender(&a.netns, *peer, *bytes, None)?)
            }
        };
        Ok(Box::new(Running { endpoint, job }))
    }
}

#[test]
fn rounds_over_a_stand_in_path_fill_every_metric() {
    let args = BenchArgs {
        quick: true,
        rounds: Some(2),
        samples: Some(200),
        rate_seconds: Some(0.3),
        tcp_bytes: Some(TCP_BYTES),
        ..BenchArgs::default()
    };
    let plan = BenchPlan::from_args(&args).unwrap();
    let mut runners: Vec<Box<dyn PathRunner>> = vec![Box::new(KernelStandIn {
        pair: VethPairNetns::create("orc").unwrap(),
    })];
    let (mut report, hists) = run_rounds(&plan, &mut runners).unwrap();
    report.compute_ratios();
    check_report(&report).unwrap();
    assert_eq!(
        report.get("tap", "irq"),
        Some(&PathResult::Unavailable {
            unavailable: "stand-in has no irq mode".into()
        })
    );
    let Some(PathResult::Measured(m)) = report.get("tap", "poll") else {
        panic!("tap/poll not measured: {:?}", report.get("tap", "poll"));
    };
    let rtt = m.rtt_us.unwrap();
    assert_eq!(
        rtt.samples + rtt.lost,
        400,
        "two rounds of 200 samples: {rtt:?}"
    );
    assert!(m.rtt_us_large.unwrap().samples > 0);
    assert!(
        m.rx_offered_pps.unwrap() > 0.0 && m.rx_pps.unwrap() > 0.0,
        "{m:?}"
    );
    assert!(m.tx_pps.unwrap() > 0.0, "{m:?}");
    // One stand-in "exit" per echoed datagram: with nothing lost that is exactly one per packet.
    if rtt.lost == 0 && m.rtt_us_large.unwrap().lost == 0 {
        assert_eq!(m.exits_per_packet, Some(1.0), "{m:?}");
    }
    assert_eq!(
        m.exits_by_reason.keys().collect::<Vec<_>>(),
        ["stand_in_echoed"]
    );
    // The tcp phase: a kernel TCP sink and source stand in for the guest's, two rounds each way.
    for (dir, t) in [
        ("to_guest", &m.tcp.to_guest),
        ("from_guest", &m.tcp.from_guest),
    ] {
        let t = t
            .as_ref()
            .unwrap_or_else(|| panic!("tcp.{dir} missing: {m:?}"));
        assert_eq!((t.bytes, t.transfers), (2 * TCP_BYTES, 2), "{dir}: {t:?}");
        assert!(t.mbps > 0.0 && t.mbps.is_finite(), "{dir}: {t:?}");
        // The stand-in reports no host CPU: null, with the reason.
        assert_eq!(t.host_cpu_ms_per_mb, None, "{dir}: {t:?}");
        assert!(
            m.unavailable_metrics[&format!("tcp.{dir}.host_cpu_ms_per_mb")]
                .contains("does not report its host CPU"),
            "{m:?}"
        );
    }
    assert!(m.io_cpu_ns_per_frame.rx.is_none() && m.io_cpu_ns_per_frame.tx.is_none());
    assert!(m.unavailable_metrics["io_cpu_ns_per_frame.rx"].contains("I/O thread"));
    assert_eq!(hists["tap_poll_64B"].len(), rtt.samples);

    assert!(hists.contains_key("reference_kernel_udp_echo_64B"));
}

struct NeverStarts {
    starts: std::rc::Rc<std::cell::Cell<u32>>,
}

impl PathRunner for NeverStarts {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn prepare(&mut self, _mode: GuestMode) -> Result<Endpoint, BenchError> {
        Err(BenchError::Setup("no topology".into()))
    }

    fn start(
        &mut self,
        _mode: GuestMode,
        _role: &Role,
    ) -> Result<Box<dyn RunningPath>, BenchError> {
        self.starts.set(self.starts.get() + 1);
        Err(BenchError::Path {
            path: "xdp".into(),
            reason: "guest never became ready".into(),
        })
    }
}

#[test]
fn a_path_that_never_starts_is_tried_once_per_mode_and_reported_unavailable() {
    let args = BenchArgs {
        quick: true,
        rounds: Some(3),
        samples: Some(10),
        ..BenchArgs::default()
    };
    let plan = BenchPlan::from_args(&args).unwrap();
    let starts = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut runners: Vec<Box<dyn PathRunner>> = vec![Box::new(NeverStarts {
        starts: starts.clone(),
    })];
    let (mut report, _) = run_rounds(&plan, &mut runners).unwrap();
    report.compute_ratios();
    check_report(&report).unwrap();
    assert_eq!(
        starts.get(),
        2,
        "one failed echo start per mode, then skipped"
    );
    for mode in ["irq", "poll"] {
        let Some(PathResult::Unavailable { unavailable }) = report.get("xdp", mode) else {
            panic!("{:?}", report.get("xdp", mode));
        };
        assert!(
            unavailable.contains("guest never became ready"),
            "{unavailable}"
        );
    }
}
