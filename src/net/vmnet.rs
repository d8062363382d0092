//! The VM-facing network of `lancet run`: the backend ([`super::open_backend`] for TAP, a
//! [`LocalLink`] over an [`XdpBackend`] with pinned maps and a registered VM name for AF_XDP), with
//! anti-spoofing (unless `--allow-spoof`: [`SpoofGuard`]) and [`VmLayer`] on top: the optional pcap
//! capture (`--pcap FILE`), steering of the addresses the guest is learned to use, and the counters
//! published for `lancet stats`. [`VmNet`] is itself a [`Backend`] (layers compose through
//! [`Layered`]), so the VMM's I/O thread uses it exactly like the bare backend.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    layer::{Layer, Layered},
    learn::AddressEvent,
    local::{LocalLink, LocalStats},
    names::{IfName, VmName},
    pcap::{Direction, PcapWriter},
    spoof::{GuardPolicy, SpoofGuard},
    stats::StatsPublisher,
    xdp::MirrorStats,
    Backend, BackendKind, BackendSpec, BackendStats, NetError, XdpBackend, XdpConfig,
};

/// What `lancet run` adds to a [`BackendSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmNetOptions {
    /// The VM's name for rules and stats (`to vm NAME`); default `vm`.
    pub vm_name: Option<String>,
    /// `--allow-spoof`: let the VM send any frame (no anti-spoofing checks).
    pub allow_spoof: bool,
    /// `--vlan VID`: the VM sends frames tagged with this VID (None: untagged only).
    pub vlan: Option<u16>,
    /// The VM's configured addresses (`--guest-ip`, the kernel's `ip=`): its only source
    /// addresses of their family. Empty: the addresses it uses are learned (see [`super::learn`]).
    pub addresses: Vec<std::net::IpAddr>,
    /// `--pcap FILE`.
    pub pcap: Option<PathBuf>,
    /// `--pcap-max-mb`: the capture stops at this file size (None: [`super::pcap::DEFAULT_MAX_BYTES`]).
    pub pcap_max_bytes: Option<u64>,
    /// A TAP device for the host copies of mirrored frames (AF_XDP only).
    pub mirror_tap: Option<String>,
}

/// How often `reap` writes the capture buffer out (so `tcpdump -r` sees a running capture).
const PCAP_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Default VM name.
pub const DEFAULT_VM_NAME: &str = "vm";

/// What a running VMM publishes for `lancet stats` (and `lancet stats` reads back).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishedStats {
    /// "xdp" or "tap".
    pub backend: String,
    /// The backend's counters (drops by reason include the XSK ring statistics).
    pub counters: BackendStats,
    /// Mirror counters (AF_XDP).
    pub mirror: Option<MirrorStats>,
    /// Local bridge counters: host, other VMs, broadcast/multicast copies (AF_XDP).
    pub local: Option<LocalStats>,
    /// Frames captured (rx, tx), capture write errors, frames not captured (capture stopped at
    /// its size cap or a write error).
    pub pcap: Option<(u64, u64, u64, u64)>,
    /// Addresses learned from what the guest sent, steered to it (AF_XDP).
    pub learning: Option<LearningStats>,
}

/// The guest's learned addresses as steering sees them (`lancet stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LearningStats {
    /// Each learned address and the seconds since the guest last used it.
    pub addresses: Vec<LearnedAddress>,
    /// Addresses learned and steered to this VM (ARP / neighbour solicitation) since start.
    pub steered: u64,
    /// Addresses the guest used that another live VM owns: refused, never stolen.
    pub refused_owned_by_other_vm: u64,
    /// Learned addresses whose steering entry could not be written (other errors).
    pub steering_errors: u64,
}

/// One learned address and its age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedAddress {
    pub addr: std::net::IpAddr,
    /// Seconds since the guest last sent from it (it expires at the learning TTL).
    pub idle_s: f64,
}

/// The backend of one VM with anti-spoofing, capture, learned-address steering and stats
/// publishing.
pub type VmNet = Layered<SpoofGuard<Box<dyn Backend>>, VmLayer>;

/// What `lancet run` puts on the guarded backend (see the module docs).
pub struct VmLayer {
    /// Counters of address learning (the addresses themselves live in the guard); `None`: the
    /// backend needs no steering of learned addresses (TAP: the Linux bridge learns).
    learning: Option<LearningStats>,
    pcap: Option<PcapWriter>,
    pcap_flushed: Instant,
    publisher: Option<StatsPublisher>,
}

impl std::fmt::Debug for VmLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmLayer").finish_non_exhaustive()
    }
}

impl VmNet {
    /// Open the backend `spec` describes with `opts` (in the NIC's network namespace).
    pub fn open(spec: &BackendSpec, opts: &VmNetOptions) -> Result<Self, NetError> {
        // Both names become paths (/run/lancet/<nic>/<vm>.json) and map keys: checked first.
        IfName::new(&spec.nic)?;
        let name = VmName::new(opts.vm_name.as_deref().unwrap_or(DEFAULT_VM_NAME))?.to_string();
        let policy = GuardPolicy {
            allow_spoof: opts.allow_spoof,
            vlan: opts.vlan,
            addresses: opts.addresses.clone(),
            ..GuardPolicy::default()
        };
        let backend: Box<dyn Backend> = match spec.kind {
            BackendKind::Xdp => {
                let mut cfg = XdpConfig::new(spec.nic.clone(), spec.vm_mac);
                cfg.vm_ip = spec.vm_ip;
                cfg.mode = spec.xdp_mode;
                cfg.pin = true;
                cfg.vm_name = Some(name.clone());
                cfg.mirror_tap = opts.mirror_tap.clone();
                Box::new(LocalLink::open(
                    XdpBackend::open(&cfg)?,
                    &spec.nic,
                    spec.vm_mac,
                )?)
            }
            BackendKind::Tap => super::open_backend(spec)?,
        };
        let pcap = match &opts.pcap {
            Some(path) => Some(
                PcapWriter::create_capped(
                    path,
                    opts.pcap_max_bytes
                        .unwrap_or(super::pcap::DEFAULT_MAX_BYTES),
                )
                .map_err(|e| {
                    NetError::io(format!("creating the capture file {}", path.display()), e)
                })?,
            ),
            None => None,
        };
        let publisher = StatsPublisher::new(&super::stats::key_here(&spec.nic), &name).ok();
        let layer = VmLayer {
            learning: (spec.kind == BackendKind::Xdp).then(LearningStats::default),
            pcap,
            pcap_flushed: Instant::now(),
            publisher,
        };
        Ok(Layered::wrap(
            SpoofGuard::with_policy(backend, spec.vm_mac, &policy),
            layer,
        ))
    }

    /// The counters `lancet stats` shows for this VM.
    pub fn published(&self) -> PublishedStats {
        self.layer().published(self.inner())
    }
}

impl VmLayer {
    /// The counters `lancet stats` shows for the VM whose guarded backend is `guard`.
    fn published(&self, guard: &SpoofGuard<Box<dyn Backend>>) -> PublishedStats {
        PublishedStats {
            backend: guard.kind().to_string(),
            counters: guard.stats(),
            mirror: guard.mirror_stats(),
            local: guard.local_stats(),
            pcap: self
                .pcap
                .as_ref()
                .map(|p| (p.rx_frames(), p.tx_frames(), p.errors(), p.not_captured())),
            learning: self.learning.as_ref().map(|learning| LearningStats {
                addresses: guard
                    .learned_addresses()
                    .into_iter()
                    .map(|(addr, idle)| LearnedAddress {
                        addr,
                        idle_s: idle.as_secs_f64(),
                    })
                    .collect(),
                ..learning.clone()
            }),
        }
    }

    /// Steer the addresses the guard learned to this VM (ARP / NS for them reach it) and stop
    /// steering expired ones; an address another live VM owns is refused to this guest instead.
    /// (The TAP path needs none of this: the Linux bridge learns by itself.)
    fn apply_learned_addresses(&mut self, guard: &mut SpoofGuard<Box<dyn Backend>>) {
        let Some(learning) = self.learning.as_mut() else {
            return;
        };
        for event in guard.take_address_events() {
            match event {
                AddressEvent::Learned(ip) => match guard.inner_mut().steer_address(ip) {
                    Ok(()) => learning.steered += 1,
                    Err(NetError::AddressInUse { by, .. }) => {
                        tracing::warn!(%ip, owner = %by, "the guest uses an address another VM owns: refused");
                        guard.refuse_address(ip);
                        learning.refused_owned_by_other_vm += 1;
                    }
                    Err(e) => {
                        tracing::warn!(%ip, error = %e, "steering a learned address");
                        learning.steering_errors += 1;
                    }
                },
                AddressEvent::Expired(ip) => guard.inner_mut().unsteer_address(ip),
            }
        }
    }
}

impl Layer<SpoofGuard<Box<dyn Backend>>> for VmLayer {
    fn inspects_tx(&self) -> bool {
        self.pcap.is_some()
    }

    /// The capture records what the guest sent, also frames anti-spoofing then drops.
    fn on_tx(&mut self, frame: &[u8]) -> bool {
        if let Some(pcap) = self.pcap.as_mut() {
            pcap.record(Direction::Tx, frame);
        }
        true
    }

    fn inspects_rx(&self) -> bool {
        self.pcap.is_some()
    }

    fn on_rx(&mut self, frame: &[u8]) {
        if let Some(pcap) = self.pcap.as_mut() {
            pcap.record(Direction::Rx, frame);
        }
    }

    fn after_reap(&mut self, guard: &mut SpoofGuard<Box<dyn Backend>>) {
        self.apply_learned_addresses(guard);
        if self.pcap_flushed.elapsed() >= PCAP_FLUSH_INTERVAL {
            self.pcap_flushed = Instant::now();
            if let Some(p) = self.pcap.as_mut() {
                p.flush();
            }
        }
        // Collecting the counters costs syscalls (XDP_STATISTICS, per-CPU maps, the tap's
        // /proc/net/dev): only when a publication is due, not on every reap.
        if self.publisher.as_ref().is_some_and(StatsPublisher::due) {
            let stats = self.published(guard);
            if let Some(p) = self.publisher.as_mut() {
                p.publish(&stats);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_stats_read_back_as_written() {
        let mut stats = PublishedStats {
            backend: "xdp".into(),
            mirror: Some(MirrorStats {
                frames: 1,
                ..MirrorStats::default()
            }),
            local: Some(LocalStats {
                rx_local: 2,
                ..LocalStats::default()
            }),
            pcap: Some((3, 4, 0, 5)),
            learning: Some(LearningStats {
                addresses: vec![LearnedAddress {
                    addr: "10.0.0.9".parse().unwrap(),
                    idle_s: 1.5,
                }],
                steered: 1,
                ..LearningStats::default()
            }),
            ..PublishedStats::default()
        };
        stats.counters.drops.tx_spoofed = 6;
        stats.counters.steer.to_vm = 7;
        let text = serde_json::to_vec_pretty(&stats).unwrap();
        let back: PublishedStats = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, stats);
    }
}
