//! The small vocabulary the chip model and the host side share, and nothing else: the transmit half of
//! a backend as the model sees it ([`FrameTx`]), the largest Ethernet frame, and MAC addresses
//! ([`MacAddr`]: parsed and printed in one place). The model, `net` and `vmm` all import it; it imports
//! nothing from them.

use std::fmt;
use std::str::FromStr;

/// Largest frame the chip sends or receives, FCS included (1514 + 4).
pub const MAX_FRAME_LEN: usize = 1518;

/// The transmit half of a backend, as the model sees it. The model assembles a frame straight into
/// the buffer the backend lends it (one copy: guest memory to backend buffer).
pub trait FrameTx {
    /// Carrier: `false` makes the model report LCAR (loss of carrier) on transmitted frames.
    fn link_up(&self) -> bool {
        true
    }
    /// A buffer of at least [`MAX_FRAME_LEN`] bytes for the next frame, or `None` when the backend
    /// cannot take a frame now (the descriptor then stays owned by the chip and is retried later).
    fn tx_buffer(&mut self) -> Option<&mut [u8]>;
    /// Send the first `len` bytes of the buffer returned by the last `tx_buffer` call.
    fn tx_commit(&mut self, len: usize);
    /// End of a batch: push what was committed to the wire (one kick per batch).
    fn tx_flush(&mut self) {}
}

/// Bytes in a MAC address.
pub const MAC_LEN: usize = 6;
/// The I/G bit of the first octet: set for group (multicast and broadcast) addresses.
const MAC_GROUP_BIT: u8 = 0x01;

/// An Ethernet MAC address. Parsed from `aa:bb:cc:dd:ee:ff` (or `-` separated), printed lower case
/// with colons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; MAC_LEN]);

impl MacAddr {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; MAC_LEN]);

    /// The address's octets.
    pub fn octets(self) -> [u8; MAC_LEN] {
        self.0
    }

    /// A group (multicast or broadcast) address: not usable as a NIC's own address.
    pub fn is_group(self) -> bool {
        self.0[0] & MAC_GROUP_BIT != 0
    }
}

impl From<[u8; MAC_LEN]> for MacAddr {
    fn from(octets: [u8; MAC_LEN]) -> Self {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; MAC_LEN] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A text that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (six hex octets, e.g. 52:54:00:12:34:56)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || MacParseError(text.to_string());
        let mut octets = [0u8; MAC_LEN];
        let mut parts = text.trim().split([':', '-']);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            None => Ok(MacAddr(octets)),
            Some(_) => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.octets(), [0x52, 0x54, 0x00, 0xab, 0xcd, 0x0f]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>(), Ok(mac));
        assert!(!mac.is_group());
        assert!(MacAddr::BROADCAST.is_group());
    }

    #[test]
    fn refuses_what_is_not_six_octets() {
        for text in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "52:54:00:ab:cd:100",
            "52:54:00:ab::0f",
            "52:54:00:ab:cd:zz",
        ] {
            assert!(text.parse::<MacAddr>().is_err(), "{text:?} was accepted");
        }
    }
}
