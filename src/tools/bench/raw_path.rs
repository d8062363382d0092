//! The `raw_xsk` path runner: a raw AF_XDP socket on one end of a veth pair (no VM), the bench's
//! client, generator and counter on the other. Guest mode `poll` = spinning on the rings,
//! `irq` = sleeping in poll(2).

use std::time::Duration;

use super::netns::VethPairNetns;
use super::packet::{build_udp_frame, UdpFlow, DISCARD_PORT, UDP_PAYLOAD_OFFSET};
use super::raw_xsk::{spawn_raw_xsk, RawXskConfig, RawXskHandle, XskJob, XskLimits, XskWait};
use super::report::{DropCount, Pinning};
use super::{BenchError, Endpoint, GuestMode, PathRunner, PathStats, Phase, Role, RunningPath};

/// Upper bound on one raw socket job; the bench stops it long before.
const JOB_TIME_LIMIT: Duration = Duration::from_secs(600);
/// Source port of the frames the raw socket blasts.
const BLAST_SRC_PORT: u16 = 40009;

/// Runs the raw socket on a private veth pair in two `lt-b*` namespaces, created on first use.
pub struct RawXskRunner {
    cpu: Option<usize>,
    testbed: Option<VethPairNetns>,
}

impl RawXskRunner {
    pub fn new(cpu: Option<usize>) -> Self {
        RawXskRunner { cpu, testbed: None }
    }

    fn testbed(&mut self) -> Result<&VethPairNetns, BenchError> {
        if self.testbed.is_none() {
            self.testbed = Some(VethPairNetns::create("raw")?);
        }
        self.testbed
            .as_ref()
            .ok_or_else(|| BenchError::Setup("raw_xsk testbed missing".into()))
    }
}

impl PathRunner for RawXskRunner {
    fn name(&self) -> &'static str {
        "raw_xsk"
    }

    fn reports_exits(&self) -> Result<(), String> {
        Err("no VM on this path".into())
    }

    fn phase_unavailable(&self, phase: Phase) -> Option<String> {
        (phase == Phase::Tcp).then(|| "a raw AF_XDP socket has no TCP stack".into())
    }

    fn pinning(&self) -> Vec<Pinning> {
        vec![Pinning {
            thread: "raw_xsk socket".into(),
            cpu: self.cpu,
        }]
    }

    fn prepare(&mut self, _mode: GuestMode) -> Result<Endpoint, BenchError> {
        Ok(self.testbed()?.endpoint_at_a())
    }

    fn start(&mut self, mode: GuestMode, role: &Role) -> Result<Box<dyn RunningPath>, BenchError> {
        let endpoint = self.prepare(mode)?;
        let tb = self.testbed()?;
        let (netns, ifname) = (tb.a.netns.clone(), tb.a.ifname.clone());
        let config = RawXskConfig {
            ifname,
            queue: 0,
            attach: crate::net::XdpMode::Auto,
            wait: match mode {
                GuestMode::Poll => XskWait::Spin,
                GuestMode::Irq => XskWait::Poll,
            },
        };
        let limits = |max_frames| XskLimits {
            max_frames,
            max_duration: JOB_TIME_LIMIT,
            idle_timeout: None,
        };
        let (job, limits) = match role {
            Role::Echo => (
                XskJob::Echo {
                    mac: endpoint.dut_mac,
                    ip: endpoint.dut_ip,
                },
                limits(u64::MAX),
            ),
            Role::Sink { max_frames } => (XskJob::RxDrop, limits(*max_frames)),
            Role::Blast { count, frame_len } => {
                let flow = UdpFlow {
                    src_mac: endpoint.dut_mac,
                    dst_mac: endpoint.peer_mac,
                    src_ip: endpoint.dut_ip,
                    dst_ip: endpoint.peer_ip,
                    src_port: BLAST_SRC_PORT,
                    dst_port: DISCARD_PORT,
                };
                let payload = frame_len.saturating_sub(UDP_PAYLOAD_OFFSET);
                (
                    XskJob::TxOnly {
                        frame: build_udp_frame(&flow, &vec![0u8; payload]),
                    },
                    limits(*count),
                )
            }
            Role::TcpSink { .. } | Role::TcpSource { .. } => {
                return Err(BenchError::Path {
                    path: "raw_xsk".into(),
                    reason: "a raw AF_XDP socket has no TCP stack".into(),
                })
            }
        };
        let handle = spawn_raw_xsk(&netns, config, self.cpu, job, limits)?;
        Ok(Box::new(RunningRawXsk {
            handle: Some(handle),
            endpoint,
            role: role.clone(),
        }))
    }
}

struct RunningRawXsk {
    handle: Option<RawXskHandle>,
    endpoint: Endpoint,
    role: Role,
}

impl RunningPath for RunningRawXsk {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn io_cpu(&self) -> Result<std::time::Duration, BenchError> {
        let handle = self
            .handle
            .as_ref()
            .ok_or_else(|| BenchError::Setup("raw_xsk job already finished".into()))?;
        super::cpu::thread_cpu(std::process::id(), handle.tid)
    }

    fn finish(mut self: Box<Self>) -> Result<PathStats, BenchError> {
        let handle = self
            .handle
            .take()
            .ok_or_else(|| BenchError::Setup("raw_xsk job already finished".into()))?;
        // A blast stops by itself at its count; anything still running is stopped now.
        let out = handle.stop_and_finish()?;
        let mut drops = Vec::new();
        let mut add = |what: &str, frames: u64| {
            if frames > 0 {
                drops.push(DropCount {
                    counted_at: format!("raw_xsk: {what}"),
                    frames,
                });
            }
        };
        // A frame dropped for lack of a fill-ring buffer is counted in both rx_dropped and
        // rx_fill_ring_empty_descs: report it once.
        let rx_dropped_label = if out.kernel.fill_ring_empty > 0 {
            "XDP_STATISTICS rx_dropped (fill ring ran empty)"
        } else {
            "XDP_STATISTICS rx_dropped"
        };
        add(rx_dropped_label, out.kernel.rx_dropped);
        add("XDP_STATISTICS rx_ring_full", out.kernel.rx_ring_full);
        add(
            "XDP_STATISTICS rx_invalid_descs",
            out.kernel.rx_invalid_descs,
        );
        add(
            "XDP_STATISTICS tx_invalid_descs",
            out.kernel.tx_invalid_descs,
        );
        add("TX ring full (not sent)", out.tx_ring_full);
        add("received but not echoed (not UDP/ARP)", out.ignored);
        let mut stats = PathStats {
            drops,
            ..PathStats::default()
        };
        match self.role {
            Role::Sink { .. } => {
                stats.frames_received = Some(out.frames);
                stats.receive_window = Some(out.active);
            }
            Role::Blast { .. } => stats.frames_sent = Some(out.frames),
            _ => {}
        }
        Ok(stats)
    }
}

impl Drop for RunningRawXsk {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = handle.stop_and_finish();
        }
    }
}
