//! The IP addresses one VM may send from: [`AddressBook`] holds the VM's configured addresses
//! (`--guest-ip`, or the kernel's `ip=` parameter) and those it LEARNED from what the guest itself
//! sent, and decides whether a source address is the VM's. Pure: no clock (every call takes `now`,
//! the time since any fixed start), no I/O; the anti-spoofing guard ([`super::spoof`]) drives it.
//!
//! Policy, per address family (IPv4 and IPv6 are decided separately):
//! - With configured addresses of that family, the VM may use only those: nothing is learned.
//! - Without, an address the VM does not hold yet is learned when the family's cap allows
//!   ([`Limits::max_v4`] / [`Limits::max_v6`]); beyond the cap the frame is refused
//!   ([`Refusal::Cap`]) until an address expires.
//! - A learned address not seen for [`Limits::ttl`] expires (its slot is free again).
//! - Multicast, broadcast and (IPv4) loopback sources are never the VM's; the unspecified
//!   addresses (0.0.0.0 for DHCP and ARP probes, `::` for duplicate address detection) are
//!   decided by the guard, never learned.
//!
//! - An address the steering maps say another live VM owns is refused ([`AddressBook::refuse`],
//!   decided by the caller, who can see the maps): the VM may not use it until it has not tried to
//!   for [`Limits::ttl`] (then it is tried again, in case that VM has gone).
//!
//! Every learned and expired address is queued as an [`AddressEvent`] ([`AddressBook::take_events`]),
//! for whoever registers a VM's addresses elsewhere (the steering maps). The queue holds at most
//! [`MAX_PENDING_EVENTS`] (the oldest go first, counted in [`AddressBook::lost_events`]; a consumer
//! that lost some resynchronises from [`AddressBook::addresses`]), so a VM nobody consumes the
//! events of cannot grow it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

/// How many addresses one VM may learn and how long they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Learned IPv4 addresses held at once.
    pub max_v4: usize,
    /// Learned IPv6 addresses held at once (link-local included).
    pub max_v6: usize,
    /// A learned address not seen for this long expires.
    pub ttl: Duration,
}

/// Default cap on learned IPv4 addresses per VM.
pub const DEFAULT_MAX_V4: usize = 4;
/// Default cap on learned IPv6 addresses per VM.
pub const DEFAULT_MAX_V6: usize = 8;
/// Default lifetime of a learned address without traffic from it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_v4: DEFAULT_MAX_V4,
            max_v6: DEFAULT_MAX_V6,
            ttl: DEFAULT_TTL,
        }
    }
}

/// Events kept until [`AddressBook::take_events`].
pub const MAX_PENDING_EVENTS: usize = 1024;

/// The bounded queue of pending events.
#[derive(Debug, Clone, Default)]
struct EventQueue {
    events: Vec<AddressEvent>,
    lost: u64,
}

impl EventQueue {
    fn push(&mut self, e: AddressEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.remove(0);
            self.lost += 1;
        }
        self.events.push(e);
    }
}

/// Why a source address is not the VM's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not one of the configured addresses, or an address no VM may hold (multicast...).
    NotHeld,
    /// Would be learned, but the VM holds as many as its cap allows.
    Cap,
}

/// A change of the VM's learned addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressEvent {
    /// The VM started using this address.
    Learned(IpAddr),
    /// The VM did not use this address for [`Limits::ttl`].
    Expired(IpAddr),
}

#[derive(Debug, Clone)]
struct Learned<A> {
    /// (address, last seen).
    entries: Vec<(A, Duration)>,
}

impl<A> Default for Learned<A> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<A: Copy + PartialEq + Into<IpAddr>> Learned<A> {
    /// Drop entries older than `ttl`, queueing their events.
    fn expire(&mut self, now: Duration, ttl: Duration, events: &mut EventQueue) {
        self.entries.retain(|&(addr, seen)| {
            let alive = now.saturating_sub(seen) < ttl;
            if !alive {
                events.push(AddressEvent::Expired(addr.into()));
            }
            alive
        });
    }

    fn check(
        &mut self,
        addr: A,
        now: Duration,
        cap: usize,
        events: &mut EventQueue,
    ) -> Result<(), Refusal> {
        if let Some(entry) = self.entries.iter_mut().find(|(a, _)| *a == addr) {
            entry.1 = now;
            return Ok(());
        }
        if self.entries.len() >= cap {
            return Err(Refusal::Cap);
        }
        self.entries.push((addr, now));
        events.push(AddressEvent::Learned(addr.into()));
        Ok(())
    }
}

/// Refused addresses remembered at once (the oldest is forgotten first).
pub const MAX_REFUSED: usize = 64;

/// The configured and learned addresses of one VM.
#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    limits: Limits,
    configured_v4: Vec<Ipv4Addr>,
    configured_v6: Vec<Ipv6Addr>,
    learned_v4: Learned<Ipv4Addr>,
    learned_v6: Learned<Ipv6Addr>,
    /// Addresses another VM owns, with when the VM last tried one.
    refused: Vec<(IpAddr, Duration)>,
    events: EventQueue,
}

/// An IPv4 address no VM may send from (besides 0.0.0.0, which the caller decides).
fn never_v4(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
}

/// An IPv6 address no VM may send from (besides `::`, which the caller decides).
fn never_v6(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_multicast() || a.is_loopback()
}

impl AddressBook {
    /// A book with these configured addresses (none: everything is learned) and limits.
    pub fn new(configured: &[IpAddr], limits: Limits) -> Self {
        let mut book = Self {
            limits,
            ..Self::default()
        };
        for addr in configured {
            match addr {
                IpAddr::V4(a) => book.configured_v4.push(*a),
                IpAddr::V6(a) => book.configured_v6.push(*a),
            }
        }
        book
    }

    /// Whether `addr` was refused (another VM owns it) and the refusal is still fresh; a use
    /// refreshes it.
    fn refused_now(&mut self, addr: IpAddr, now: Duration) -> bool {
        let ttl = self.limits.ttl;
        self.refused
            .retain(|&(_, seen)| now.saturating_sub(seen) < ttl);
        match self.refused.iter_mut().find(|(a, _)| *a == addr) {
            Some(entry) => {
                entry.1 = now;
                true
            }
            None => false,
        }
    }

    /// The VM may not use `addr` (another live VM owns it): forget it as learned (no Expired
    /// event: it was never steered) and refuse it until unused for the TTL.
    pub fn refuse(&mut self, addr: IpAddr, now: Duration) {
        match addr {
            IpAddr::V4(a) => self.learned_v4.entries.retain(|(l, _)| *l != a),
            IpAddr::V6(a) => self.learned_v6.entries.retain(|(l, _)| *l != a),
        }
        if !self.refused.iter().any(|(a, _)| *a == addr) {
            if self.refused.len() >= MAX_REFUSED {
                self.refused.remove(0);
            }
            self.refused.push((addr, now));
        }
    }

    /// Learned addresses with the time since the VM last used each (configured ones never age).
    pub fn learned_with_age(&self, now: Duration) -> Vec<(IpAddr, Duration)> {
        let v4 = self
            .learned_v4
            .entries
            .iter()
            .map(|&(a, t)| (IpAddr::V4(a), t));
        let v6 = self
            .learned_v6
            .entries
            .iter()
            .map(|&(a, t)| (IpAddr::V6(a), t));
        v4.chain(v6)
            .map(|(a, seen)| (a, now.saturating_sub(seen)))
            .collect()
    }

    /// May the VM send from IPv4 `addr` at `now`? Learns it when the policy allows.
    pub fn check_v4(&mut self, addr: Ipv4Addr, now: Duration) -> Result<(), Refusal> {
        if never_v4(addr) || self.refused_now(IpAddr::V4(addr), now) {
            return Err(Refusal::NotHeld);
        }
        if !self.configured_v4.is_empty() {
            return if self.configured_v4.contains(&addr) {
                Ok(())
            } else {
                Err(Refusal::NotHeld)
            };
        }
        let (ttl, cap) = (self.limits.ttl, self.limits.max_v4);
        self.learned_v4.expire(now, ttl, &mut self.events);
        self.learned_v4.check(addr, now, cap, &mut self.events)
    }

    /// May the VM send from (or advertise) IPv6 `addr` at `now`? Learns it when the policy allows.
    pub fn check_v6(&mut self, addr: Ipv6Addr, now: Duration) -> Result<(), Refusal> {
        if never_v6(addr) || self.refused_now(IpAddr::V6(addr), now) {
            return Err(Refusal::NotHeld);
        }
        if !self.configured_v6.is_empty() {
            return if self.configured_v6.contains(&addr) {
                Ok(())
            } else {
                Err(Refusal::NotHeld)
            };
        }
        let (ttl, cap) = (self.limits.ttl, self.limits.max_v6);
        self.learned_v6.expire(now, ttl, &mut self.events);
        self.learned_v6.check(addr, now, cap, &mut self.events)
    }

    /// Expire learned addresses not seen for the TTL (also done on every check).
    pub fn expire(&mut self, now: Duration) {
        let ttl = self.limits.ttl;
        self.learned_v4.expire(now, ttl, &mut self.events);
        self.learned_v6.expire(now, ttl, &mut self.events);
    }

    /// The addresses the VM holds now: configured, then learned (as of the last check/expire).
    pub fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.configured_v4.iter().copied().map(IpAddr::V4);
        let v6 = self.configured_v6.iter().copied().map(IpAddr::V6);
        let l4 = self.learned_v4.entries.iter().map(|(a, _)| IpAddr::V4(*a));
        let l6 = self.learned_v6.entries.iter().map(|(a, _)| IpAddr::V6(*a));
        v4.chain(v6).chain(l4).chain(l6).collect()
    }

    /// The learned/expired events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<AddressEvent> {
        std::mem::take(&mut self.events.events)
    }

    /// Events dropped from a full queue (not taken in time).
    pub fn lost_events(&self) -> u64 {
        self.events.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn v4(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, last)
    }

    #[test]
    fn an_address_another_vm_owns_is_refused_until_left_alone_for_the_ttl() {
        let limits = Limits {
            ttl: S(60),
            ..Limits::default()
        };
        let mut book = AddressBook::new(&[], limits);
        assert_eq!(book.check_v4(v4(10), S(0)), Ok(()));
        book.refuse(IpAddr::V4(v4(10)), S(1));
        assert!(book.addresses().is_empty());
        // Tried again and again: stays refused (each try refreshes the refusal).
        assert_eq!(book.check_v4(v4(10), S(30)), Err(Refusal::NotHeld));
        assert_eq!(book.check_v4(v4(10), S(80)), Err(Refusal::NotHeld));
        // Left alone for the TTL: learned again (the caller checks the owner once more).
        assert_eq!(book.check_v4(v4(10), S(141)), Ok(()));
        assert_eq!(
            book.take_events(),
            vec![
                AddressEvent::Learned(IpAddr::V4(v4(10))),
                AddressEvent::Learned(IpAddr::V4(v4(10)))
            ]
        );
        assert_eq!(
            book.learned_with_age(S(151)),
            vec![(IpAddr::V4(v4(10)), S(10))]
        );
    }

    #[test]
    fn learns_up_to_the_cap_then_refuses() {
        let mut book = AddressBook::new(&[], Limits::default());
        for i in 0..DEFAULT_MAX_V4 as u8 {
            assert_eq!(book.check_v4(v4(10 + i), S(1)), Ok(()));
        }
        assert_eq!(book.check_v4(v4(99), S(1)), Err(Refusal::Cap));
        // A held address still passes.
        assert_eq!(book.check_v4(v4(10), S(2)), Ok(()));
        let events = book.take_events();
        assert_eq!(events.len(), DEFAULT_MAX_V4);
        assert_eq!(events[0], AddressEvent::Learned(IpAddr::V4(v4(10))));
        assert!(book.take_events().is_empty());
    }

    #[test]
    fn addresses_age_out_and_free_their_slot() {
        let limits = Limits {
            max_v4: 1,
            max_v6: 1,
            ttl: S(60),
        };
        let mut book = AddressBook::new(&[], limits);
        assert_eq!(book.check_v4(v4(10), S(0)), Ok(()));
        // Seen again at 50 s: lives until 110 s.
        assert_eq!(book.check_v4(v4(10), S(50)), Ok(()));
        assert_eq!(book.check_v4(v4(11), S(100)), Err(Refusal::Cap));
        assert_eq!(book.check_v4(v4(11), S(110)), Ok(()));
        assert_eq!(
            book.take_events(),
            vec![
                AddressEvent::Learned(IpAddr::V4(v4(10))),
                AddressEvent::Expired(IpAddr::V4(v4(10))),
                AddressEvent::Learned(IpAddr::V4(v4(11))),
            ]
        );
        let a: Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(book.check_v6(a, S(0)), Ok(()));
        book.expire(S(61));
        assert_eq!(book.addresses(), vec![IpAddr::V4(v4(11))]);
    }

    #[test]
    fn configured_addresses_are_the_only_ones_of_their_family() {
        let mut book = AddressBook::new(&[IpAddr::V4(v4(10))], Limits::default());
        assert_eq!(book.check_v4(v4(10), S(0)), Ok(()));
        assert_eq!(book.check_v4(v4(1), S(0)), Err(Refusal::NotHeld));
        // IPv6 is not configured: learned.
        assert_eq!(book.check_v6("fd00::10".parse().unwrap(), S(0)), Ok(()));
        assert_eq!(book.take_events().len(), 1);
    }

    #[test]
    fn unconsumed_events_stay_bounded() {
        let limits = Limits {
            max_v4: 1,
            max_v6: 1,
            ttl: S(1),
        };
        let mut book = AddressBook::new(&[], limits);
        let rounds = MAX_PENDING_EVENTS as u64;
        for t in 0..rounds {
            let a = Ipv4Addr::from(0x0a00_0000 + t as u32 + 1);
            assert_eq!(book.check_v4(a, S(t)), Ok(()));
        }
        // One learned per round, one expired per round after the first.
        assert_eq!(
            book.lost_events(),
            2 * rounds - 1 - MAX_PENDING_EVENTS as u64
        );
        assert_eq!(book.take_events().len(), MAX_PENDING_EVENTS);
    }

    #[test]
    fn multicast_broadcast_and_unspecified_are_never_held() {
        let mut book = AddressBook::new(&[], Limits::default());
        for a in [
            Ipv4Addr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::LOCALHOST,
        ] {
            assert_eq!(book.check_v4(a, S(0)), Err(Refusal::NotHeld), "{a}");
        }
        for a in ["::", "ff02::1", "::1"] {
            let a: Ipv6Addr = a.parse().unwrap();
            assert_eq!(book.check_v6(a, S(0)), Err(Refusal::NotHeld), "{a}");
        }
        assert!(book.addresses().is_empty());
    }
}
