//! The VM-facing network of `lancet run`: the backend ([`super::open_backend`] for TAP, an
//! [`XdpBackend`] with pinned maps and a registered VM name for AF_XDP), wrapped with
//! anti-spoofing (unless `--allow-spoof`), the optional pcap capture (`--pcap FILE`) and the
//! counters published for `lancet stats`. [`VmNet`] is itself a [`Backend`], so the VMM's I/O
//! thread uses it exactly like the bare backend.

use std::{
    os::fd::RawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    learn::AddressEvent,
    local::{LocalLink, LocalStats},
    names::{IfName, VmName},
    pcap::{Direction, PcapWriter},
    spoof::{GuardPolicy, SpoofGuard},
    stats::StatsPublisher,
    xdp::MirrorStats,
    Backend, BackendKind, BackendSpec, BackendStats, FrameTx, NetError, XdpBackend, XdpConfig,
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

/// What a running VMM publishes for `lancet stats`.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedStats {
    /// "xdp" or "tap".
    pub backend: &'static str,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LearnedAddress {
    pub addr: std::net::IpAddr,
    /// Seconds since the guest last sent from it (it expires at the learning TTL).
    pub idle_s: f64,
}

enum Inner {
    Xdp(Box<SpoofGuard<LocalLink>>),
    Other(Box<SpoofGuard<Box<dyn Backend>>>),
}

/// The backend of one VM with anti-spoofing, capture and stats publishing.
pub struct VmNet {
    inner: Inner,
    /// Counters of address learning (the addresses themselves live in the guard).
    learning: LearningStats,
    pcap: Option<PcapWriter>,
    pcap_flushed: Instant,
    publisher: Option<StatsPublisher>,
}

impl std::fmt::Debug for VmNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmNet").finish_non_exhaustive()
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
        let inner = match spec.kind {
            BackendKind::Xdp => {
                let mut cfg = XdpConfig::new(spec.nic.clone(), spec.vm_mac);
                cfg.vm_ip = spec.vm_ip;
                cfg.mode = spec.xdp_mode;
                cfg.pin = true;
                cfg.vm_name = Some(name.clone());
                cfg.mirror_tap = opts.mirror_tap.clone();
                Inner::Xdp(Box::new(SpoofGuard::with_policy(
                    LocalLink::open(XdpBackend::open(&cfg)?, &spec.nic, spec.vm_mac)?,
                    spec.vm_mac,
                    &policy,
                )))
            }
            BackendKind::Tap => Inner::Other(Box::new(SpoofGuard::with_policy(
                super::open_backend(spec)?,
                spec.vm_mac,
                &policy,
            ))),
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
        Ok(Self {
            inner,
            learning: LearningStats::default(),
            pcap,
            pcap_flushed: Instant::now(),
            publisher,
        })
    }

    fn backend(&self) -> &dyn Backend {
        match &self.inner {
            Inner::Xdp(b) => b.as_ref(),
            Inner::Other(b) => b.as_ref(),
        }
    }

    fn backend_mut(&mut self) -> &mut dyn Backend {
        match &mut self.inner {
            Inner::Xdp(b) => b.as_mut(),
            Inner::Other(b) => b.as_mut(),
        }
    }

    /// The counters `lancet stats` shows for this VM.
    pub fn published(&self) -> PublishedStats {
        PublishedStats {
            backend: self.backend().kind(),
            counters: self.backend().stats(),
            mirror: match &self.inner {
                Inner::Xdp(b) => Some(b.inner().xdp().mirror_stats()),
                Inner::Other(_) => None,
            },
            local: self.local_stats(),
            pcap: self
                .pcap
                .as_ref()
                .map(|p| (p.rx_frames(), p.tx_frames(), p.errors(), p.not_captured())),
            learning: match &self.inner {
                Inner::Xdp(guard) => Some(LearningStats {
                    addresses: guard
                        .learned_addresses()
                        .into_iter()
                        .map(|(addr, idle)| LearnedAddress {
                            addr,
                            idle_s: idle.as_secs_f64(),
                        })
                        .collect(),
                    ..self.learning.clone()
                }),
                Inner::Other(_) => None,
            },
        }
    }

    /// Steer the addresses the guard learned to this VM (ARP / NS for them reach it) and stop
    /// steering expired ones; an address another live VM owns is refused to this guest instead.
    /// (The TAP path needs none of this: the Linux bridge learns by itself.)
    fn apply_learned_addresses(&mut self) {
        let Inner::Xdp(guard) = &mut self.inner else {
            return;
        };
        for event in guard.take_address_events() {
            match event {
                AddressEvent::Learned(ip) => match guard.inner_mut().xdp_mut().steer_address(ip) {
                    Ok(()) => self.learning.steered += 1,
                    Err(NetError::AddressInUse { by, .. }) => {
                        tracing::warn!(%ip, owner = %by, "the guest uses an address another VM owns: refused");
                        guard.refuse_address(ip);
                        self.learning.refused_owned_by_other_vm += 1;
                    }
                    Err(e) => {
                        tracing::warn!(%ip, error = %e, "steering a learned address");
                        self.learning.steering_errors += 1;
                    }
                },
                AddressEvent::Expired(ip) => guard.inner_mut().xdp_mut().unsteer_address(ip),
            }
        }
    }
}

impl FrameTx for VmNet {
    fn link_up(&self) -> bool {
        self.backend().link_up()
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.backend_mut().tx_buffer()
    }

    fn tx_commit(&mut self, len: usize) {
        if self.pcap.is_some() {
            // The backends lend the same buffer again until it is committed.
            let frame = self
                .backend_mut()
                .tx_buffer()
                .and_then(|b| b.get(..len))
                .map(<[u8]>::to_vec);
            if let (Some(frame), Some(pcap)) = (frame, self.pcap.as_mut()) {
                pcap.record(Direction::Tx, &frame);
            }
        }
        self.backend_mut().tx_commit(len);
    }

    fn tx_flush(&mut self) {
        self.backend_mut().tx_flush();
    }
}

impl Backend for VmNet {
    fn kind(&self) -> &'static str {
        self.backend().kind()
    }

    fn poll_fd(&self) -> RawFd {
        self.backend().poll_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        let Self { inner, pcap, .. } = self;
        let backend: &mut dyn Backend = match inner {
            Inner::Xdp(b) => b.as_mut(),
            Inner::Other(b) => b.as_mut(),
        };
        match pcap.as_mut() {
            Some(pcap) => backend.recv_batch(max, &mut |frame| {
                pcap.record(Direction::Rx, frame);
                deliver(frame);
            }),
            None => backend.recv_batch(max, deliver),
        }
    }

    fn reap(&mut self) {
        self.backend_mut().reap();
        self.apply_learned_addresses();
        if self.pcap_flushed.elapsed() >= PCAP_FLUSH_INTERVAL {
            self.pcap_flushed = Instant::now();
            if let Some(p) = self.pcap.as_mut() {
                p.flush();
            }
        }
        // Collecting the counters costs syscalls (XDP_STATISTICS, per-CPU maps, the tap's
        // /proc/net/dev): only when a publication is due, not on every reap.
        if self.publisher.as_ref().is_some_and(StatsPublisher::due) {
            let stats = self.published();
            if let Some(p) = self.publisher.as_mut() {
                p.publish(&stats);
            }
        }
    }

    fn stats(&self) -> BackendStats {
        self.backend().stats()
    }

    fn rx_pending(&mut self) -> Option<bool> {
        self.backend_mut().rx_pending()
    }

    fn local_stats(&self) -> Option<LocalStats> {
        match &self.inner {
            Inner::Xdp(b) => Some(b.inner().counters()),
            Inner::Other(_) => None,
        }
    }
}

impl Drop for VmNet {
    fn drop(&mut self) {
        if let Some(p) = self.pcap.as_mut() {
            p.flush();
        }
    }
}
