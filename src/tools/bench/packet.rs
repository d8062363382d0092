//! Ethernet/IPv4/UDP/ARP frame building and parsing for the bench's generators and echoers.
//! Pure byte manipulation with explicit bounds checks; no sockets.

use std::net::Ipv4Addr;

/// Ethernet header length (no VLAN tag).
pub const ETH_HDR_LEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_HDR_LEN: usize = 20;
/// UDP header length.
pub const UDP_HDR_LEN: usize = 8;
/// Bytes before the UDP payload in a frame built here.
pub const UDP_PAYLOAD_OFFSET: usize = ETH_HDR_LEN + IPV4_HDR_LEN + UDP_HDR_LEN;
/// Frame check sequence length: counted in "frame size" figures, not written by software.
pub const FCS_LEN: usize = 4;
/// Minimum Ethernet frame length including FCS.
pub const MIN_FRAME_LEN: usize = 64;
/// UDP payload that makes a minimum-size (64-byte) Ethernet frame.
pub const MIN_FRAME_UDP_PAYLOAD: usize = MIN_FRAME_LEN - FCS_LEN - UDP_PAYLOAD_OFFSET;
/// Largest UDP payload in a 1500-byte IP MTU.
pub const MTU_UDP_PAYLOAD: usize = 1500 - IPV4_HDR_LEN - UDP_HDR_LEN;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// The UDP discard port: target of generated load.
pub const DISCARD_PORT: u16 = 9;
/// The UDP echo port.
pub const ECHO_PORT: u16 = 7;

const ETH_DST: usize = 0;
const ETH_SRC: usize = 6;
const ETH_TYPE: usize = 12;
const IP_VERSION_IHL: usize = ETH_HDR_LEN;
const IP_TOTAL_LEN: usize = ETH_HDR_LEN + 2;
const IP_TTL: usize = ETH_HDR_LEN + 8;
const IP_PROTO: usize = ETH_HDR_LEN + 9;
const IP_CSUM: usize = ETH_HDR_LEN + 10;
const IP_SRC: usize = ETH_HDR_LEN + 12;
const IP_DST: usize = ETH_HDR_LEN + 16;
const UDP_SRC_PORT: usize = ETH_HDR_LEN + IPV4_HDR_LEN;
const UDP_DST_PORT: usize = UDP_SRC_PORT + 2;
const UDP_LEN: usize = UDP_SRC_PORT + 4;
/// Offset of the checksum inside the UDP header.
const UDP_CSUM_IN_HDR: usize = 6;
const IPV4_VERSION_IHL_NO_OPTIONS: u8 = 0x45;
const IPV4_DONT_FRAGMENT: u16 = 0x4000;
const DEFAULT_TTL: u8 = 64;

const ARP_LEN: usize = 28;
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
const ARP_OPER: usize = ETH_HDR_LEN + 6;
const ARP_SHA: usize = ETH_HDR_LEN + 8;
const ARP_SPA: usize = ETH_HDR_LEN + 14;
const ARP_THA: usize = ETH_HDR_LEN + 18;
const ARP_TPA: usize = ETH_HDR_LEN + 24;

/// A MAC address.
pub type Mac = [u8; 6];

/// The addresses of one UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFlow {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// The fields of a received IPv4/UDP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpView {
    pub flow: UdpFlow,
    pub payload_offset: usize,
    pub payload_len: usize,
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = bytes.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Build an Ethernet/IPv4/UDP frame (without FCS) carrying `payload`. The UDP checksum is 0
/// ("not computed", legal for IPv4); the IPv4 header checksum is computed.
pub fn build_udp_frame(flow: &UdpFlow, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; UDP_PAYLOAD_OFFSET + payload.len()];
    frame[ETH_DST..ETH_DST + 6].copy_from_slice(&flow.dst_mac);
    frame[ETH_SRC..ETH_SRC + 6].copy_from_slice(&flow.src_mac);
    put_u16(&mut frame, ETH_TYPE, ETHERTYPE_IPV4);
    frame[IP_VERSION_IHL] = IPV4_VERSION_IHL_NO_OPTIONS;
    let ip_len = (IPV4_HDR_LEN + UDP_HDR_LEN + payload.len()) as u16;
    put_u16(&mut frame, IP_TOTAL_LEN, ip_len);
    put_u16(&mut frame, IP_TOTAL_LEN + 4, IPV4_DONT_FRAGMENT);
    frame[IP_TTL] = DEFAULT_TTL;
    frame[IP_PROTO] = IPPROTO_UDP;
    frame[IP_SRC..IP_SRC + 4].copy_from_slice(&flow.src_ip.octets());
    frame[IP_DST..IP_DST + 4].copy_from_slice(&flow.dst_ip.octets());
    let csum = internet_checksum(&frame[ETH_HDR_LEN..ETH_HDR_LEN + IPV4_HDR_LEN]);
    put_u16(&mut frame, IP_CSUM, csum);
    put_u16(&mut frame, UDP_SRC_PORT, flow.src_port);
    put_u16(&mut frame, UDP_DST_PORT, flow.dst_port);
    put_u16(&mut frame, UDP_LEN, (UDP_HDR_LEN + payload.len()) as u16);
    frame[UDP_PAYLOAD_OFFSET..].copy_from_slice(payload);
    frame
}

/// Parse an Ethernet/IPv4/UDP frame; `None` for anything else or anything truncated.
pub fn parse_udp(frame: &[u8]) -> Option<UdpView> {
    if frame.len() < UDP_PAYLOAD_OFFSET
        || get_u16(frame, ETH_TYPE) != ETHERTYPE_IPV4
        || frame[IP_VERSION_IHL] >> 4 != 4
        || frame[IP_PROTO] != IPPROTO_UDP
    {
        return None;
    }
    let ihl = usize::from(frame[IP_VERSION_IHL] & 0x0f) * 4;
    let udp_at = ETH_HDR_LEN + ihl;
    if ihl < IPV4_HDR_LEN || frame.len() < udp_at + UDP_HDR_LEN {
        return None;
    }
    let udp_len = usize::from(get_u16(frame, udp_at + 4));
    if udp_len < UDP_HDR_LEN || frame.len() < udp_at + udp_len {
        return None;
    }
    let mut src_mac = [0u8; 6];
    let mut dst_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[ETH_SRC..ETH_SRC + 6]);
    dst_mac.copy_from_slice(&frame[ETH_DST..ETH_DST + 6]);
    let ip = |at: usize| Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3]);
    Some(UdpView {
        flow: UdpFlow {
            src_mac,
            dst_mac,
            src_ip: ip(IP_SRC),
            dst_ip: ip(IP_DST),
            src_port: get_u16(frame, udp_at),
            dst_port: get_u16(frame, udp_at + 2),
        },
        payload_offset: udp_at + UDP_HDR_LEN,
        payload_len: udp_len - UDP_HDR_LEN,
    })
}

/// Turn a received IPv4/UDP frame into its echo in place: swap MACs, IPs and ports and zero the UDP
/// checksum. Zeroing matters: UDP from a peer's kernel over veth arrives CHECKSUM_PARTIAL (the field
/// holds only the pseudo-header sum), so an unchanged echo is dropped by the peer as a bad checksum.
/// The IPv4 header checksum is unchanged by swapping two of its 16-bit-aligned words, and the TTL is
/// left alone. Returns false (frame untouched) if it is not IPv4/UDP.
pub fn udp_echo_in_place(frame: &mut [u8]) -> bool {
    if parse_udp(frame).is_none() {
        return false;
    }
    let udp_at = ETH_HDR_LEN + usize::from(frame[IP_VERSION_IHL] & 0x0f) * 4;
    for i in 0..6 {
        frame.swap(ETH_DST + i, ETH_SRC + i);
    }
    for i in 0..4 {
        frame.swap(IP_SRC + i, IP_DST + i);
    }
    for i in 0..2 {
        frame.swap(udp_at + i, udp_at + 2 + i);
    }
    put_u16(frame, udp_at + UDP_CSUM_IN_HDR, 0);
    true
}

/// If `frame` is an ARP request for `ip`, rewrite it in place into the reply from `mac` and return
/// true; otherwise leave it alone and return false.
pub fn arp_reply_in_place(frame: &mut [u8], mac: &Mac, ip: Ipv4Addr) -> bool {
    if frame.len() < ETH_HDR_LEN + ARP_LEN
        || get_u16(frame, ETH_TYPE) != ETHERTYPE_ARP
        || get_u16(frame, ETH_HDR_LEN) != ARP_HTYPE_ETHERNET
        || get_u16(frame, ETH_HDR_LEN + 2) != ETHERTYPE_IPV4
        || get_u16(frame, ARP_OPER) != ARP_OP_REQUEST
        || frame[ARP_TPA..ARP_TPA + 4] != ip.octets()
    {
        return false;
    }
    let mut requester_mac = [0u8; 6];
    requester_mac.copy_from_slice(&frame[ARP_SHA..ARP_SHA + 6]);
    let mut requester_ip = [0u8; 4];
    requester_ip.copy_from_slice(&frame[ARP_SPA..ARP_SPA + 4]);
    frame[ETH_DST..ETH_DST + 6].copy_from_slice(&requester_mac);
    frame[ETH_SRC..ETH_SRC + 6].copy_from_slice(mac);
    put_u16(frame, ARP_OPER, ARP_OP_REPLY);
    frame[ARP_THA..ARP_THA + 6].copy_from_slice(&requester_mac);
    frame[ARP_TPA..ARP_TPA + 4].copy_from_slice(&requester_ip);
    frame[ARP_SHA..ARP_SHA + 6].copy_from_slice(mac);
    frame[ARP_SPA..ARP_SPA + 4].copy_from_slice(&ip.octets());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> UdpFlow {
        UdpFlow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 1, 0, 1),
            dst_ip: Ipv4Addr::new(10, 1, 0, 2),
            src_port: 4000,
            dst_port: ECHO_PORT,
        }
    }

    #[test]
    fn minimum_frame_is_60_bytes_without_fcs() {
        let frame = build_udp_frame(&flow(), &[0u8; MIN_FRAME_UDP_PAYLOAD]);
        assert_eq!(frame.len() + FCS_LEN, MIN_FRAME_LEN);
        assert_eq!(internet_checksum(&frame[ETH_HDR_LEN..UDP_SRC_PORT]), 0);
    }

    #[test]
    fn build_then_parse_round_trips() {
        let frame = build_udp_frame(&flow(), b"hello");
        let view = parse_udp(&frame).unwrap();
        assert_eq!(view.flow, flow());
        assert_eq!(&frame[view.payload_offset..][..view.payload_len], b"hello");
        assert!(parse_udp(&frame[..frame.len() - 1]).is_none());
    }

    #[test]
    fn echo_swaps_and_zeroes_checksum() {
        let mut frame = build_udp_frame(&flow(), b"abc");
        frame[UDP_SRC_PORT + UDP_CSUM_IN_HDR] = 0x12;
        assert!(udp_echo_in_place(&mut frame));
        let view = parse_udp(&frame).unwrap();
        assert_eq!(view.flow.src_mac, flow().dst_mac);
        assert_eq!(view.flow.dst_ip, flow().src_ip);
        assert_eq!(view.flow.dst_port, flow().src_port);
        assert_eq!(get_u16(&frame, UDP_SRC_PORT + UDP_CSUM_IN_HDR), 0);
        assert_eq!(internet_checksum(&frame[ETH_HDR_LEN..UDP_SRC_PORT]), 0);
    }

    #[test]
    fn arp_request_becomes_reply() {
        let mut req = vec![0u8; ETH_HDR_LEN + ARP_LEN];
        req[..6].copy_from_slice(&[0xff; 6]);
        req[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        put_u16(&mut req, ETH_TYPE, ETHERTYPE_ARP);
        put_u16(&mut req, ETH_HDR_LEN, ARP_HTYPE_ETHERNET);
        put_u16(&mut req, ETH_HDR_LEN + 2, ETHERTYPE_IPV4);
        req[ETH_HDR_LEN + 4] = 6;
        req[ETH_HDR_LEN + 5] = 4;
        put_u16(&mut req, ARP_OPER, ARP_OP_REQUEST);
        req[ARP_SHA..ARP_SHA + 6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        req[ARP_SPA..ARP_SPA + 4].copy_from_slice(&[10, 1, 0, 1]);
        req[ARP_TPA..ARP_TPA + 4].copy_from_slice(&[10, 1, 0, 2]);
        let me = [2, 0, 0, 0, 0, 2];
        assert!(!arp_reply_in_place(
            &mut req.clone(),
            &me,
            Ipv4Addr::new(10, 1, 0, 9)
        ));
        assert!(arp_reply_in_place(
            &mut req,
            &me,
            Ipv4Addr::new(10, 1, 0, 2)
        ));
        assert_eq!(&req[..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(get_u16(&req, ARP_OPER), ARP_OP_REPLY);
        assert_eq!(&req[ARP_SPA..ARP_SPA + 4], &[10, 1, 0, 2]);
        assert_eq!(&req[ARP_TPA..ARP_TPA + 4], &[10, 1, 0, 1]);
    }
}
