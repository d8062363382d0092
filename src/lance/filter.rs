//! Receive address filter: station address (PADR), logical address filter (LADRF multicast hash),
//! broadcast and promiscuous acceptance, as CSR15 and the init block program them; plus the
//! Ethernet CRC-32 used by the hash and by loopback FCS generation.

use super::regs::{MODE_DRCVBC, MODE_DRCVPA, MODE_PROM, RMD_BAM, RMD_LAFM, RMD_PAM};

/// Why a frame was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// PROM is set: every frame is accepted, no match bit is reported.
    Promiscuous,
    /// Destination equals PADR (PAM).
    Physical,
    /// Broadcast destination (BAM).
    Broadcast,
    /// Multicast destination whose hash bit is set in LADRF (LAFM).
    Logical,
}

impl Accept {
    /// The RMD1 match bit reported for this acceptance.
    pub fn status_bits(self) -> u16 {
        match self {
            Accept::Promiscuous => 0,
            Accept::Physical => RMD_PAM,
            Accept::Broadcast => RMD_BAM,
            Accept::Logical => RMD_LAFM,
        }
    }
}

const BROADCAST: [u8; 6] = [0xff; 6];

/// Decide whether a frame with destination `dst` is accepted, given CSR15 `mode`, the station
/// address and the 64-bit logical address filter (CSR8 is bits 0-15).
pub fn classify(dst: &[u8; 6], mode: u16, padr: &[u8; 6], ladrf: u64) -> Option<Accept> {
    if mode & MODE_PROM != 0 {
        return Some(Accept::Promiscuous);
    }
    if mode & MODE_DRCVPA == 0 && dst == padr {
        return Some(Accept::Physical);
    }
    if *dst == BROADCAST && mode & MODE_DRCVBC == 0 {
        return Some(Accept::Broadcast);
    }
    if dst[0] & 1 != 0 && ladrf != 0 && ladrf & (1u64 << multicast_hash_bit(dst)) != 0 {
        return Some(Accept::Logical);
    }
    None
}

/// Index (0..64) of the LADRF bit for a multicast address: the top 6 bits of the little-endian
/// Ethernet CRC-32 of the address (what Linux computes with `ether_crc_le(6, addr) >> 26`).
pub fn multicast_hash_bit(addr: &[u8; 6]) -> u32 {
    ether_crc_le(addr) >> 26
}

/// Little-endian Ethernet CRC-32 without final inversion (Linux `ether_crc_le`).
pub fn ether_crc_le(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize];
    }
    crc
}

/// The Ethernet frame check sequence of `data` (IEEE CRC-32, inverted), as appended on the wire.
pub fn frame_check_sequence(data: &[u8]) -> [u8; 4] {
    (!ether_crc_le(data)).to_le_bytes()
}

const CRC_POLY_REFLECTED: u32 = 0xedb8_8320;

const CRC_TABLE: [u32; 256] = build_crc_table();

const fn build_crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC_POLY_REFLECTED
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_ieee_check_value() {
        // The standard CRC-32 check value of "123456789".
        assert_eq!(!ether_crc_le(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn hash_of_ipv4_all_hosts_group() {
        // The all-hosts group is accepted exactly when its hash bit is set in LADRF.
        let bit = multicast_hash_bit(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]);
        assert!(bit < 64);
        let ladrf = 1u64 << bit;
        let dst = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
        assert_eq!(classify(&dst, 0, &[2; 6], ladrf), Some(Accept::Logical));
        assert_eq!(classify(&dst, 0, &[2; 6], 0), None);
    }

    #[test]
    fn broadcast_and_physical_respect_disable_bits() {
        let padr = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        assert_eq!(classify(&padr, 0, &padr, 0), Some(Accept::Physical));
        assert_eq!(classify(&padr, MODE_DRCVPA, &padr, 0), None);
        assert_eq!(classify(&BROADCAST, 0, &padr, 0), Some(Accept::Broadcast));
        assert_eq!(classify(&BROADCAST, MODE_DRCVBC, &padr, 0), None);
        assert_eq!(
            classify(&[0x52, 0, 0, 0, 0, 1], MODE_PROM, &padr, 0),
            Some(Accept::Promiscuous)
        );
    }
}
