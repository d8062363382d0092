//! Anti-spoofing on the transmit path. [`SpoofGuard`] wraps any [`Backend`]: on `tx_commit` it
//! checks the committed frame (its first `len` bytes, never bytes beyond them) and, for a frame
//! the VM may not send, does not commit (the buffer is lent again for the next frame) and counts
//! the drop by reason ([`GuardDrops`], shown in the backend's [`DropStats`]).
//!
//! Default policy ([`GuardPolicy`]; `--allow-spoof` turns every check off):
//! - a frame shorter than an Ethernet header is dropped (`tx_bad_length`), as is a truncated ARP,
//!   IPv4 or IPv6 header;
//! - the source MAC must be the VM's (`tx_spoofed`);
//! - untagged only: 802.1Q / 802.1ad / 0x9100 tagged frames are dropped (`tx_vlan`); with
//!   `--vlan VID` the VM is on that VLAN: only frames with exactly one 802.1Q tag of that VID
//!   pass (untagged ones too are dropped: they would land on the trunk's native VLAN);
//! - no IEEE link-local control frames, destination 01:80:c2:00:00:00..0f (PAUSE, STP, LACP,
//!   LLDP, 802.1X...) (`tx_link_local`);
//! - ARP: the sender hardware address must be the VM's MAC and the sender IPv4 the VM's
//!   (0.0.0.0, an ARP probe, passes) (`tx_arp_sender`);
//! - IPv4 source the VM's (`tx_ipv4_source`); 0.0.0.0 only for DHCP (UDP 68 -> 67);
//! - IPv6 source the VM's (`::` passes: duplicate address detection), and the target of a
//!   neighbour advertisement too (found behind up to [`IPV6_MAX_EXT_HEADERS`] extension headers)
//!   (`tx_ipv6_source`);
//! - which addresses are the VM's is [`AddressBook`]'s policy (configured ones, else learned up to
//!   a cap); a frame refused only because the cap is reached counts as `tx_address_cap`.
//!   Learned and expired addresses are queued for steering ([`SpoofGuard::take_address_events`]).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::RawFd,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    learn::{AddressBook, AddressEvent, Limits, Refusal},
    Backend, BackendStats, DropStats, FrameTx, NetError,
};

/// Ethernet header: destination, source, ethertype.
const ETH_HDR_LEN: usize = 14;
const DST_MAC_OFFSET: usize = 0;
const SRC_MAC_OFFSET: usize = 6;
const ETHERTYPE_OFFSET: usize = 12;
const MAC_LEN: usize = 6;
/// One VLAN tag: TCI (2) + inner ethertype (2).
const VLAN_TAG_LEN: usize = 4;
const VLAN_VID_MASK: u16 = 0x0fff;
const ETHERTYPE_8021Q: u16 = 0x8100;
const ETHERTYPE_8021AD: u16 = 0x88a8;
/// The pre-standard QinQ outer tag some switches still use.
const ETHERTYPE_QINQ_LEGACY: u16 = 0x9100;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IEEE 802.1 link-local group addresses: 01:80:c2:00:00:00..=0f.
const LINK_LOCAL_PREFIX: [u8; 5] = [0x01, 0x80, 0xc2, 0x00, 0x00];
const LINK_LOCAL_LAST_MAX: u8 = 0x0f;
/// ARP for Ethernet/IPv4: htype 1, ptype 0x0800, hlen 6, plen 4, then sha spa tha tpa.
const ARP_ETH_IPV4_LEN: usize = 28;
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_HLEN_PLEN: [u8; 2] = [6, 4];
const ARP_SHA_OFFSET: usize = 8;
const ARP_SPA_OFFSET: usize = 14;
const IPV4_MIN_HDR_LEN: usize = 20;
const IPV4_IHL_MASK: u8 = 0x0f;
const IPV4_PROTO_OFFSET: usize = 9;
const IPV4_SRC_OFFSET: usize = 12;
const IPV4_FRAG_OFFSET_MASK: u16 = 0x1fff;
const IPV4_FLAGS_FRAG_OFFSET: usize = 6;
const PROTO_UDP: u8 = 17;
const UDP_HDR_LEN: usize = 8;
const DHCP_CLIENT_PORT: u16 = 68;
const DHCP_SERVER_PORT: u16 = 67;
const IPV6_HDR_LEN: usize = 40;
const IPV6_NEXT_HEADER_OFFSET: usize = 6;
const IPV6_SRC_OFFSET: usize = 8;
const IPV6_ADDR_LEN: usize = 16;
/// Extension headers walked to find a neighbour advertisement (Hop-by-Hop, Routing, Destination
/// Options; a fragment ends the walk: receivers drop fragmented neighbour discovery, RFC 6980).
pub const IPV6_MAX_EXT_HEADERS: usize = 6;
const IPV6_EXT_HOP_BY_HOP: u8 = 0;
const IPV6_EXT_ROUTING: u8 = 43;
const IPV6_EXT_DEST_OPTS: u8 = 60;
/// Extension header length field: in 8-byte units, not counting the first 8.
const IPV6_EXT_LEN_UNIT: usize = 8;
const PROTO_ICMPV6: u8 = 58;
const ICMPV6_NA_TYPE: u8 = 136;
/// type(1) code(1) checksum(2) flags(4), then the target address.
const ICMPV6_NA_TARGET_OFFSET: usize = 8;

/// Why the guard dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header, or a truncated ARP/IP header.
    BadLength,
    /// Source MAC not the VM's.
    SourceMac,
    /// Tagged (or, with `--vlan`, untagged or of another VID).
    Vlan,
    /// To an IEEE 802.1 link-local control address.
    LinkLocal,
    /// ARP claiming a MAC or IPv4 address not the VM's.
    ArpSender,
    /// IPv4 source not the VM's.
    Ipv4Source,
    /// IPv6 source (or neighbour advertisement target) not the VM's.
    Ipv6Source,
    /// A new address beyond the VM's cap.
    AddressCap,
}

/// Frames the guard dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuardDrops {
    /// [`DropReason::BadLength`].
    pub bad_length: u64,
    /// [`DropReason::SourceMac`].
    pub source_mac: u64,
    /// [`DropReason::Vlan`].
    pub vlan: u64,
    /// [`DropReason::LinkLocal`].
    pub link_local: u64,
    /// [`DropReason::ArpSender`].
    pub arp_sender: u64,
    /// [`DropReason::Ipv4Source`].
    pub ipv4_source: u64,
    /// [`DropReason::Ipv6Source`].
    pub ipv6_source: u64,
    /// [`DropReason::AddressCap`].
    pub address_cap: u64,
}

impl GuardDrops {
    fn count(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::BadLength => &mut self.bad_length,
            DropReason::SourceMac => &mut self.source_mac,
            DropReason::Vlan => &mut self.vlan,
            DropReason::LinkLocal => &mut self.link_local,
            DropReason::ArpSender => &mut self.arp_sender,
            DropReason::Ipv4Source => &mut self.ipv4_source,
            DropReason::Ipv6Source => &mut self.ipv6_source,
            DropReason::AddressCap => &mut self.address_cap,
        };
        *c += 1;
    }

    /// Every frame dropped.
    pub fn total(&self) -> u64 {
        self.bad_length
            + self.source_mac
            + self.vlan
            + self.link_local
            + self.arp_sender
            + self.ipv4_source
            + self.ipv6_source
            + self.address_cap
    }

    /// Add these counters into the backend's drop counters.
    fn add_to(&self, d: &mut DropStats) {
        d.tx_bad_length += self.bad_length;
        d.tx_spoofed += self.source_mac;
        d.tx_vlan += self.vlan;
        d.tx_link_local += self.link_local;
        d.tx_arp_sender += self.arp_sender;
        d.tx_ipv4_source += self.ipv4_source;
        d.tx_ipv6_source += self.ipv6_source;
        d.tx_address_cap += self.address_cap;
    }
}

/// What the guard lets a VM send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuardPolicy {
    /// `--allow-spoof`: no checks at all.
    pub allow_spoof: bool,
    /// `--vlan VID`: the VM's frames carry this 802.1Q VID (None: untagged only).
    pub vlan: Option<u16>,
    /// The VM's configured addresses (`--guest-ip`, the kernel's `ip=`); empty: learned.
    pub addresses: Vec<IpAddr>,
    /// Caps and lifetime of learned addresses.
    pub limits: Limits,
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    frame
        .get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn ipv4_at(frame: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = frame.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn ipv6_at(frame: &[u8], at: usize) -> Option<Ipv6Addr> {
    let b: [u8; IPV6_ADDR_LEN] = frame.get(at..at + IPV6_ADDR_LEN)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// The per-frame checks of one VM: its MAC, VLAN and addresses. Pure (time passed in).
#[derive(Debug, Clone)]
pub struct FrameChecker {
    mac: [u8; 6],
    vlan: Option<u16>,
    book: AddressBook,
}

impl FrameChecker {
    /// Checks for a VM with MAC `mac` under `policy` (`allow_spoof` is the guard's business).
    pub fn new(mac: [u8; 6], policy: &GuardPolicy) -> Self {
        Self {
            mac,
            vlan: policy.vlan,
            book: AddressBook::new(&policy.addresses, policy.limits),
        }
    }

    /// The VM's addresses.
    pub fn book(&self) -> &AddressBook {
        &self.book
    }

    /// The VM's addresses, mutable (events, expiry).
    pub fn book_mut(&mut self) -> &mut AddressBook {
        &mut self.book
    }

    /// May the VM send `frame` (exactly the committed bytes) at `now`?
    pub fn check(&mut self, frame: &[u8], now: Duration) -> Result<(), DropReason> {
        if frame.len() < ETH_HDR_LEN {
            return Err(DropReason::BadLength);
        }
        if frame[SRC_MAC_OFFSET..SRC_MAC_OFFSET + MAC_LEN] != self.mac {
            return Err(DropReason::SourceMac);
        }
        let dst = &frame[DST_MAC_OFFSET..DST_MAC_OFFSET + MAC_LEN];
        if dst[..LINK_LOCAL_PREFIX.len()] == LINK_LOCAL_PREFIX
            && dst[MAC_LEN - 1] <= LINK_LOCAL_LAST_MAX
        {
            return Err(DropReason::LinkLocal);
        }
        let is_tag = |t: u16| {
            matches!(
                t,
                ETHERTYPE_8021Q | ETHERTYPE_8021AD | ETHERTYPE_QINQ_LEGACY
            )
        };
        let mut ethertype = be16(frame, ETHERTYPE_OFFSET).ok_or(DropReason::BadLength)?;
        let mut l3 = ETH_HDR_LEN;
        match self.vlan {
            None if is_tag(ethertype) => return Err(DropReason::Vlan),
            None => {}
            Some(vid) => {
                if ethertype != ETHERTYPE_8021Q {
                    return Err(DropReason::Vlan);
                }
                let tci = be16(frame, l3).ok_or(DropReason::BadLength)?;
                ethertype = be16(frame, l3 + 2).ok_or(DropReason::BadLength)?;
                if tci & VLAN_VID_MASK != vid || is_tag(ethertype) {
                    return Err(DropReason::Vlan);
                }
                l3 += VLAN_TAG_LEN;
            }
        }
        let l3 = &frame[l3..];
        match ethertype {
            ETHERTYPE_ARP => self.check_arp(l3, now),
            ETHERTYPE_IPV4 => self.check_ipv4(l3, now),
            ETHERTYPE_IPV6 => self.check_ipv6(l3, now),
            _ => Ok(()),
        }
    }

    fn refused(r: Refusal, not_held: DropReason) -> DropReason {
        match r {
            Refusal::NotHeld => not_held,
            Refusal::Cap => DropReason::AddressCap,
        }
    }

    fn check_arp(&mut self, arp: &[u8], now: Duration) -> Result<(), DropReason> {
        let (Some(htype), Some(ptype)) = (be16(arp, 0), be16(arp, 2)) else {
            return Err(DropReason::BadLength);
        };
        if htype != ARP_HTYPE_ETHERNET || ptype != ETHERTYPE_IPV4 {
            return Ok(()); // claims no IPv4 address
        }
        if arp.len() < ARP_ETH_IPV4_LEN {
            return Err(DropReason::BadLength);
        }
        if arp[4..6] != ARP_HLEN_PLEN {
            return Ok(());
        }
        if arp[ARP_SHA_OFFSET..ARP_SHA_OFFSET + MAC_LEN] != self.mac {
            return Err(DropReason::ArpSender);
        }
        let spa = ipv4_at(arp, ARP_SPA_OFFSET).ok_or(DropReason::BadLength)?;
        if spa.is_unspecified() {
            return Ok(()); // ARP probe (RFC 5227)
        }
        self.book
            .check_v4(spa, now)
            .map_err(|r| Self::refused(r, DropReason::ArpSender))
    }

    fn check_ipv4(&mut self, ip: &[u8], now: Duration) -> Result<(), DropReason> {
        if ip.len() < IPV4_MIN_HDR_LEN {
            return Err(DropReason::BadLength);
        }
        let src = ipv4_at(ip, IPV4_SRC_OFFSET).ok_or(DropReason::BadLength)?;
        if src.is_unspecified() {
            return if Self::is_dhcp_client(ip) {
                Ok(())
            } else {
                Err(DropReason::Ipv4Source)
            };
        }
        self.book
            .check_v4(src, now)
            .map_err(|r| Self::refused(r, DropReason::Ipv4Source))
    }

    /// UDP 68 -> 67 in the first fragment: what a DHCP client sends before it has an address.
    fn is_dhcp_client(ip: &[u8]) -> bool {
        let ihl = usize::from(ip[0] & IPV4_IHL_MASK) * 4;
        let first =
            be16(ip, IPV4_FLAGS_FRAG_OFFSET).is_some_and(|f| f & IPV4_FRAG_OFFSET_MASK == 0);
        ihl >= IPV4_MIN_HDR_LEN
            && first
            && ip[IPV4_PROTO_OFFSET] == PROTO_UDP
            && ip.len() >= ihl + UDP_HDR_LEN
            && be16(ip, ihl) == Some(DHCP_CLIENT_PORT)
            && be16(ip, ihl + 2) == Some(DHCP_SERVER_PORT)
    }

    fn check_ipv6(&mut self, ip: &[u8], now: Duration) -> Result<(), DropReason> {
        if ip.len() < IPV6_HDR_LEN {
            return Err(DropReason::BadLength);
        }
        let src = ipv6_at(ip, IPV6_SRC_OFFSET).ok_or(DropReason::BadLength)?;
        if !src.is_unspecified() {
            self.book
                .check_v6(src, now)
                .map_err(|r| Self::refused(r, DropReason::Ipv6Source))?;
        }
        if let Some(target) = Self::na_target(ip) {
            self.book
                .check_v6(target, now)
                .map_err(|r| Self::refused(r, DropReason::Ipv6Source))?;
        }
        Ok(())
    }

    /// The target of a neighbour advertisement, behind up to [`IPV6_MAX_EXT_HEADERS`] extension
    /// headers.
    fn na_target(ip: &[u8]) -> Option<Ipv6Addr> {
        let mut next = ip[IPV6_NEXT_HEADER_OFFSET];
        let mut at = IPV6_HDR_LEN;
        for _ in 0..IPV6_MAX_EXT_HEADERS {
            if !matches!(
                next,
                IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_DEST_OPTS
            ) {
                break;
            }
            let hdr = ip.get(at..at + 2)?;
            next = hdr[0];
            at += (usize::from(hdr[1]) + 1) * IPV6_EXT_LEN_UNIT;
        }
        if next != PROTO_ICMPV6 || *ip.get(at)? != ICMPV6_NA_TYPE {
            return None;
        }
        ipv6_at(ip, at + ICMPV6_NA_TARGET_OFFSET)
    }
}

/// A [`Backend`] that drops the frames a VM may not send ([`FrameChecker`]).
#[derive(Debug)]
pub struct SpoofGuard<B> {
    inner: B,
    allow: bool,
    checker: FrameChecker,
    start: Instant,
    drops: GuardDrops,
}

impl<B: Backend> SpoofGuard<B> {
    /// Guard `inner` for a VM whose MAC is `mac` with the default policy (untagged, learned
    /// addresses); `allow_spoof` lets every frame through.
    pub fn new(inner: B, mac: [u8; 6], allow_spoof: bool) -> Self {
        Self::with_policy(
            inner,
            mac,
            &GuardPolicy {
                allow_spoof,
                ..GuardPolicy::default()
            },
        )
    }

    /// Guard `inner` for a VM whose MAC is `mac` under `policy`.
    pub fn with_policy(inner: B, mac: [u8; 6], policy: &GuardPolicy) -> Self {
        Self {
            inner,
            allow: policy.allow_spoof,
            checker: FrameChecker::new(mac, policy),
            start: Instant::now(),
            drops: GuardDrops::default(),
        }
    }

    /// Frames dropped for a foreign source MAC.
    pub fn spoofed(&self) -> u64 {
        self.drops.source_mac
    }

    /// Frames dropped, by reason.
    pub fn drops(&self) -> GuardDrops {
        self.drops
    }

    /// The VM's addresses as the guard knows them.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.checker.book().addresses()
    }

    /// Addresses learned or expired since the last call (for steering registration).
    pub fn take_address_events(&mut self) -> Vec<AddressEvent> {
        let now = self.start.elapsed();
        let book = self.checker.book_mut();
        book.expire(now);
        book.take_events()
    }

    /// Refuse `addr` from now on (another live VM owns it): frames from it are dropped and
    /// counted as foreign sources until the VM leaves it alone for the learning TTL.
    pub fn refuse_address(&mut self, addr: IpAddr) {
        let now = self.start.elapsed();
        self.checker.book_mut().refuse(addr, now);
    }

    /// The learned addresses and how long since the VM last used each.
    pub fn learned_addresses(&self) -> Vec<(IpAddr, Duration)> {
        self.checker.book().learned_with_age(self.start.elapsed())
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, mutable.
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Unwrap the backend.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Backend> FrameTx for SpoofGuard<B> {
    fn link_up(&self) -> bool {
        self.inner.link_up()
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        self.inner.tx_buffer()
    }

    fn tx_commit(&mut self, len: usize) {
        if !self.allow {
            let now = self.start.elapsed();
            // The backends lend the same buffer again until it is committed. Only the committed
            // bytes are checked; a length beyond the buffer is the backend's to count (oversize).
            let Self { inner, checker, .. } = self;
            let verdict = inner
                .tx_buffer()
                .and_then(|buf| buf.get(..len))
                .map(|frame| checker.check(frame, now));
            if let Some(Err(reason)) = verdict {
                self.drops.count(reason);
                return;
            }
        }
        self.inner.tx_commit(len);
    }

    fn tx_flush(&mut self) {
        self.inner.tx_flush();
    }
}

impl<B: Backend> Backend for SpoofGuard<B> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn poll_fd(&self) -> RawFd {
        self.inner.poll_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        self.inner.recv_batch(max, deliver)
    }

    fn reap(&mut self) {
        self.inner.reap();
    }

    fn rx_pending(&mut self) -> Option<bool> {
        self.inner.rx_pending()
    }

    fn stats(&self) -> BackendStats {
        let mut s = self.inner.stats();
        self.drops.add_to(&mut s.drops);
        s
    }
}

/// A boxed backend (what [`super::open_backend`] returns) is a backend, so it can be guarded.
impl FrameTx for Box<dyn Backend> {
    fn link_up(&self) -> bool {
        (**self).link_up()
    }

    fn tx_buffer(&mut self) -> Option<&mut [u8]> {
        (**self).tx_buffer()
    }

    fn tx_commit(&mut self, len: usize) {
        (**self).tx_commit(len)
    }

    fn tx_flush(&mut self) {
        (**self).tx_flush()
    }
}

impl Backend for Box<dyn Backend> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn poll_fd(&self) -> RawFd {
        (**self).poll_fd()
    }

    fn recv_batch(
        &mut self,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, NetError> {
        (**self).recv_batch(max, deliver)
    }

    fn reap(&mut self) {
        (**self).reap()
    }

    fn rx_pending(&mut self) -> Option<bool> {
        (**self).rx_pending()
    }

    fn stats(&self) -> BackendStats {
        (**self).stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn ipv6_frame(src: Ipv6Addr, ext: &[(u8, usize)], last: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let first = ext.first().map_or(last, |e| e.0);
        let mut ip = vec![0x60, 0, 0, 0, 0, 0, first, 255];
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        for (i, &(_, units)) in ext.iter().enumerate() {
            let next = ext.get(i + 1).map_or(last, |e| e.0);
            let mut h = vec![0u8; (units + 1) * IPV6_EXT_LEN_UNIT];
            h[0] = next;
            h[1] = units as u8;
            ip.extend_from_slice(&h);
        }
        ip.extend_from_slice(l4);
        f.extend_from_slice(&ip);
        f
    }

    fn na(target: Ipv6Addr) -> Vec<u8> {
        let mut m = vec![ICMPV6_NA_TYPE, 0, 0, 0, 0x20, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m
    }

    fn checker(configured: &[&str]) -> FrameChecker {
        let addresses = configured.iter().map(|a| a.parse().unwrap()).collect();
        FrameChecker::new(
            MAC,
            &GuardPolicy {
                addresses,
                ..GuardPolicy::default()
            },
        )
    }

    #[test]
    fn ipv6_source_and_na_target_must_be_the_vms() {
        let own: Ipv6Addr = "fd00::10".parse().unwrap();
        let router: Ipv6Addr = "fd00::1".parse().unwrap();
        let mut c = checker(&["fd00::10"]);
        let t = Duration::ZERO;
        assert_eq!(c.check(&ipv6_frame(own, &[], 17, &[0; 8]), t), Ok(()));
        assert_eq!(
            c.check(&ipv6_frame(router, &[], 17, &[0; 8]), t),
            Err(DropReason::Ipv6Source)
        );
        // Own source, advertising the router's address: hidden behind Destination Options.
        let hidden = ipv6_frame(own, &[(IPV6_EXT_DEST_OPTS, 0)], PROTO_ICMPV6, &na(router));
        assert_eq!(c.check(&hidden, t), Err(DropReason::Ipv6Source));
        assert_eq!(
            c.check(&ipv6_frame(own, &[], PROTO_ICMPV6, &na(own)), t),
            Ok(())
        );
        // Duplicate address detection sends from `::`.
        assert_eq!(
            c.check(&ipv6_frame(Ipv6Addr::UNSPECIFIED, &[], 17, &[0; 8]), t),
            Ok(())
        );
        // A truncated header.
        let short = ipv6_frame(own, &[], 17, &[]);
        assert_eq!(
            c.check(&short[..ETH_HDR_LEN + 20], t),
            Err(DropReason::BadLength)
        );
    }

    #[test]
    fn learned_ipv6_addresses_are_capped() {
        let mut c = checker(&[]);
        for i in 0..crate::net::learn::DEFAULT_MAX_V6 as u16 {
            let a = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100 + i);
            assert_eq!(
                c.check(&ipv6_frame(a, &[], 17, &[0; 8]), Duration::ZERO),
                Ok(())
            );
        }
        let extra = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x999);
        assert_eq!(
            c.check(&ipv6_frame(extra, &[], 17, &[0; 8]), Duration::ZERO),
            Err(DropReason::AddressCap)
        );
    }
}
