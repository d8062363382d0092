//! Frame parsing and building for the guest programs: ARP (request, reply), IPv4 + ICMP echo,
//! UDP echo and the blast UDP frame. Every read is bounds checked against the received length.

pub const ETH_HEADER_LEN: usize = 14;
pub const ETH_MIN_FRAME: usize = 60;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ARP_LEN: usize = 28;
const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
const IPV4_MIN_HEADER: usize = 20;
const IP_PROTO_ICMP: u8 = 1;
const IP_PROTO_UDP: u8 = 17;
const IP_FLAG_MF_AND_OFFSET: u16 = 0x3fff;
const IP_FLAG_DF: u16 = 0x4000;
const IP_DEFAULT_TTL: u8 = 64;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const UDP_HEADER_LEN: usize = 8;
/// Destination port of blast frames (discard).
pub const BLAST_DST_PORT: u16 = 9;
/// Source port of blast frames.
pub const BLAST_SRC_PORT: u16 = 40009;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

fn be16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

fn put16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
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

fn ethernet(out: &mut [u8], dst: &[u8; 6], src: &[u8; 6], ethertype: u16) {
    out[0..6].copy_from_slice(dst);
    out[6..12].copy_from_slice(src);
    put16(out, 12, ethertype);
}

/// Zero-pads a frame to the Ethernet minimum and returns its length.
fn pad(out: &mut [u8], len: usize) -> usize {
    if len < ETH_MIN_FRAME {
        out[len..ETH_MIN_FRAME].fill(0);
        ETH_MIN_FRAME
    } else {
        len
    }
}

fn arp(
    out: &mut [u8],
    op: u16,
    eth_dst: &[u8; 6],
    sha: &[u8; 6],
    spa: &[u8; 4],
    tha: &[u8; 6],
    tpa: &[u8; 4],
) -> usize {
    ethernet(out, eth_dst, sha, ETHERTYPE_ARP);
    let a = &mut out[ETH_HEADER_LEN..ETH_HEADER_LEN + ARP_LEN];
    put16(a, 0, ARP_HTYPE_ETHERNET);
    put16(a, 2, ETHERTYPE_IPV4);
    a[4] = 6;
    a[5] = 4;
    put16(a, 6, op);
    a[8..14].copy_from_slice(sha);
    a[14..18].copy_from_slice(spa);
    a[18..24].copy_from_slice(tha);
    a[24..28].copy_from_slice(tpa);
    pad(out, ETH_HEADER_LEN + ARP_LEN)
}

/// Builds a broadcast ARP request for `target`; returns the frame length.
pub fn arp_request(out: &mut [u8], mac: &[u8; 6], ip: &[u8; 4], target: &[u8; 4]) -> usize {
    arp(
        out,
        ARP_OP_REQUEST,
        &BROADCAST_MAC,
        mac,
        ip,
        &[0; 6],
        target,
    )
}

/// The fields of a validated Ethernet/IPv4 ARP packet that the programs use.
struct ArpPacket {
    op: u16,
    sender_mac: [u8; 6],
    sender_ip: [u8; 4],
    target_ip: [u8; 4],
}

fn parse_arp(frame: &[u8]) -> Option<ArpPacket> {
    if frame.len() < ETH_HEADER_LEN + ARP_LEN || be16(frame, 12) != ETHERTYPE_ARP {
        return None;
    }
    let a = &frame[ETH_HEADER_LEN..ETH_HEADER_LEN + ARP_LEN];
    if be16(a, 0) != ARP_HTYPE_ETHERNET || be16(a, 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
        return None;
    }
    let mut sha = [0u8; 6];
    let mut spa = [0u8; 4];
    let mut tpa = [0u8; 4];
    sha.copy_from_slice(&a[8..14]);
    spa.copy_from_slice(&a[14..18]);
    tpa.copy_from_slice(&a[24..28]);
    Some(ArpPacket {
        op: be16(a, 6),
        sender_mac: sha,
        sender_ip: spa,
        target_ip: tpa,
    })
}

/// If `frame` is an ARP reply from `peer` addressed to `ip`, returns the peer's MAC.
pub fn arp_reply_from(frame: &[u8], ip: &[u8; 4], peer: &[u8; 4]) -> Option<[u8; 6]> {
    let arp = parse_arp(frame)?;
    (arp.op == ARP_OP_REPLY && arp.sender_ip == *peer && arp.target_ip == *ip)
        .then_some(arp.sender_mac)
}

/// What the echo program answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Echoed {
    Arp,
    Icmp,
    Udp,
}

/// Builds the echo program's answer to `frame` in `out` (ARP request for `ip`, ICMP echo request
/// to `ip`, UDP to `ip`:`port`). Returns the reply length and kind, or None to ignore the frame.
pub fn echo_reply(
    frame: &[u8],
    out: &mut [u8],
    mac: &[u8; 6],
    ip: &[u8; 4],
    port: u16,
) -> Option<(usize, Echoed)> {
    if frame.len() < ETH_HEADER_LEN || out.len() < frame.len().max(ETH_MIN_FRAME) {
        return None;
    }
    match be16(frame, 12) {
        ETHERTYPE_ARP => {
            let request = parse_arp(frame)?;
            if request.op != ARP_OP_REQUEST || request.target_ip != *ip {
                return None;
            }
            let (sha, spa) = (request.sender_mac, request.sender_ip);
            Some((
                arp(out, ARP_OP_REPLY, &sha, mac, ip, &sha, &spa),
                Echoed::Arp,
            ))
        }
        ETHERTYPE_IPV4 => ipv4_echo(frame, out, mac, ip, port),
        _ => None,
    }
}

fn ipv4_echo(
    frame: &[u8],
    out: &mut [u8],
    mac: &[u8; 6],
    ip: &[u8; 4],
    port: u16,
) -> Option<(usize, Echoed)> {
    let packet = &frame[ETH_HEADER_LEN..];
    if packet.len() < IPV4_MIN_HEADER || packet[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(packet[0] & 0xf) * 4;
    let total_len = usize::from(be16(packet, 2));
    if header_len < IPV4_MIN_HEADER || total_len < header_len || total_len > packet.len() {
        return None;
    }
    if packet[16..20] != ip[..] || be16(packet, 6) & IP_FLAG_MF_AND_OFFSET != 0 {
        return None;
    }
    let payload = &packet[header_len..total_len];
    let kind = match packet[9] {
        IP_PROTO_ICMP
            if payload.len() >= 8 && payload[0] == ICMP_ECHO_REQUEST && payload[1] == 0 =>
        {
            Echoed::Icmp
        }
        IP_PROTO_UDP if payload.len() >= UDP_HEADER_LEN && be16(payload, 2) == port => Echoed::Udp,
        _ => return None,
    };
    let len = ETH_HEADER_LEN + total_len;
    out[..len].copy_from_slice(&frame[..len]);
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(mac);
    let reply = &mut out[ETH_HEADER_LEN..len];
    reply.copy_within(12..16, 16);
    reply[12..16].copy_from_slice(ip);
    reply[8] = IP_DEFAULT_TTL;
    put16(reply, 10, 0);
    let ip_sum = checksum(&reply[..header_len]);
    put16(reply, 10, ip_sum);
    let body = &mut reply[header_len..];
    match kind {
        Echoed::Icmp => {
            body[0] = ICMP_ECHO_REPLY;
            put16(body, 2, 0);
            let sum = checksum(body);
            put16(body, 2, sum);
        }
        _ => {
            let source_port = be16(body, 0);
            put16(body, 0, port);
            put16(body, 2, source_port);
            // The peer's UDP checksum may be only a partial (offloaded) sum: send none.
            put16(body, 6, 0);
        }
    }
    Some((pad(out, len), kind))
}

/// Writes a 20-byte IPv4 header (DF, TTL 64, checksum) into `header`.
fn ipv4_header(header: &mut [u8], total_len: usize, proto: u8, src: &[u8; 4], dst: &[u8; 4]) {
    header.fill(0);
    header[0] = 0x45;
    put16(header, 2, total_len as u16);
    put16(header, 6, IP_FLAG_DF);
    header[8] = IP_DEFAULT_TTL;
    header[9] = proto;
    header[12..16].copy_from_slice(src);
    header[16..20].copy_from_slice(dst);
    let sum = checksum(header);
    put16(header, 10, sum);
}

/// Builds an ICMP echo request `id`/`seq` from `flow.src_*` to `flow.dst_*` with `payload_len`
/// pattern bytes; returns the frame length.
pub fn icmp_echo_request(
    out: &mut [u8],
    flow: &UdpFlow,
    id: u16,
    seq: u16,
    payload_len: usize,
) -> usize {
    let icmp_len = 8 + payload_len;
    let total_len = IPV4_MIN_HEADER + icmp_len;
    let len = ETH_HEADER_LEN + total_len;
    ethernet(out, &flow.dst_mac, &flow.src_mac, ETHERTYPE_IPV4);
    ipv4_header(
        &mut out[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_MIN_HEADER],
        total_len,
        IP_PROTO_ICMP,
        &flow.src_ip,
        &flow.dst_ip,
    );
    let icmp = &mut out[ETH_HEADER_LEN + IPV4_MIN_HEADER..len];
    icmp[0] = ICMP_ECHO_REQUEST;
    icmp[1] = 0;
    put16(icmp, 2, 0);
    put16(icmp, 4, id);
    put16(icmp, 6, seq);
    for (i, byte) in icmp[8..].iter_mut().enumerate() {
        *byte = i as u8;
    }
    let sum = checksum(icmp);
    put16(icmp, 2, sum);
    pad(out, len)
}

/// If `frame` is an ICMP echo reply from `peer` to `ip` with identifier `id`, returns its sequence
/// number.
pub fn icmp_echo_reply_from(frame: &[u8], ip: &[u8; 4], peer: &[u8; 4], id: u16) -> Option<u16> {
    if frame.len() < ETH_HEADER_LEN + IPV4_MIN_HEADER || be16(frame, 12) != ETHERTYPE_IPV4 {
        return None;
    }
    let packet = &frame[ETH_HEADER_LEN..];
    let header_len = usize::from(packet[0] & 0xf) * 4;
    let total_len = usize::from(be16(packet, 2));
    if packet[0] >> 4 != 4
        || header_len < IPV4_MIN_HEADER
        || total_len < header_len + 8
        || total_len > packet.len()
        || packet[9] != IP_PROTO_ICMP
        || packet[12..16] != peer[..]
        || packet[16..20] != ip[..]
    {
        return None;
    }
    let icmp = &packet[header_len..total_len];
    (icmp[0] == ICMP_ECHO_REPLY && icmp[1] == 0 && be16(icmp, 4) == id && checksum(icmp) == 0)
        .then(|| be16(icmp, 6))
}

/// Addresses of a blast frame.
pub struct UdpFlow {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
}

/// Builds a UDP frame of exactly `size` bytes (>= 42) from `flow`, port 40009 -> 9, zero
/// payload; returns `size`.
pub fn blast_frame(out: &mut [u8], flow: &UdpFlow, size: usize) -> usize {
    let ip_len = size - ETH_HEADER_LEN;
    out[..size].fill(0);
    ethernet(out, &flow.dst_mac, &flow.src_mac, ETHERTYPE_IPV4);
    let packet = &mut out[ETH_HEADER_LEN..size];
    ipv4_header(
        &mut packet[..IPV4_MIN_HEADER],
        ip_len,
        IP_PROTO_UDP,
        &flow.src_ip,
        &flow.dst_ip,
    );
    let udp = &mut packet[IPV4_MIN_HEADER..];
    put16(udp, 0, BLAST_SRC_PORT);
    put16(udp, 2, BLAST_DST_PORT);
    put16(udp, 4, (ip_len - IPV4_MIN_HEADER) as u16);
    size
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const IP: [u8; 4] = [10, 77, 0, 2];
    const PEER: [u8; 4] = [10, 77, 0, 1];

    fn udp_to_guest(port: u16, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0u8; 42 + payload.len()];
        let flow = UdpFlow {
            src_mac: PEER_MAC,
            dst_mac: MAC,
            src_ip: PEER,
            dst_ip: IP,
        };
        blast_frame(&mut frame, &flow, 42 + payload.len());
        put16(&mut frame, 34, 5555);
        put16(&mut frame, 36, port);
        put16(&mut frame, 40, 0x1234);
        frame[42..].copy_from_slice(payload);
        frame
    }

    #[test]
    fn checksum_of_a_known_header() {
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
    }

    #[test]
    fn udp_echo_swaps_everything() {
        let frame = udp_to_guest(7, b"hello");
        let mut out = [0u8; 1600];
        let (len, kind) = echo_reply(&frame, &mut out, &MAC, &IP, 7).unwrap();
        assert_eq!(kind, Echoed::Udp);
        assert_eq!(len, 60);
        assert_eq!(&out[0..6], &PEER_MAC);
        assert_eq!(&out[6..12], &MAC);
        assert_eq!(&out[26..30], &IP);
        assert_eq!(&out[30..34], &PEER);
        assert_eq!(be16(&out, 34), 7);
        assert_eq!(be16(&out, 36), 5555);
        assert_eq!(be16(&out, 40), 0);
        assert_eq!(&out[42..47], b"hello");
        assert_eq!(checksum(&out[14..34]), 0);
        assert!(echo_reply(&frame, &mut out, &MAC, &IP, 8).is_none());
        assert!(echo_reply(&frame, &mut out, &MAC, &PEER, 7).is_none());
    }

    #[test]
    fn icmp_echo_reply_has_valid_checksum() {
        let mut frame = udp_to_guest(7, &[0xab; 40]);
        frame[23] = IP_PROTO_ICMP;
        frame[34] = ICMP_ECHO_REQUEST;
        frame[35] = 0;
        let mut out = [0u8; 1600];
        let (len, kind) = echo_reply(&frame, &mut out, &MAC, &IP, 7).unwrap();
        assert_eq!((len, kind), (frame.len(), Echoed::Icmp));
        assert_eq!(out[34], ICMP_ECHO_REPLY);
        assert_eq!(checksum(&out[34..len]), 0);
    }

    #[test]
    fn arp_request_and_reply_round_trip() {
        let mut request = [0u8; 64];
        let len = arp_request(&mut request, &PEER_MAC, &PEER, &IP);
        let mut reply = [0u8; 64];
        let (reply_len, kind) = echo_reply(&request[..len], &mut reply, &MAC, &IP, 7).unwrap();
        assert_eq!(kind, Echoed::Arp);
        assert_eq!(arp_reply_from(&reply[..reply_len], &PEER, &IP), Some(MAC));
        assert_eq!(&reply[0..6], &PEER_MAC);
        let other = arp_request(&mut request, &PEER_MAC, &PEER, &[10, 77, 0, 3]);
        assert!(echo_reply(&request[..other], &mut reply, &MAC, &IP, 7).is_none());
    }

    #[test]
    fn icmp_echo_request_is_answered_and_the_reply_recognised() {
        let flow = UdpFlow {
            src_mac: PEER_MAC,
            dst_mac: MAC,
            src_ip: PEER,
            dst_ip: IP,
        };
        let mut request = [0u8; 128];
        let len = icmp_echo_request(&mut request, &flow, 0x4c54, 7, 32);
        assert_eq!(len, 14 + 20 + 8 + 32);
        assert_eq!(checksum(&request[14..34]), 0);
        let mut reply = [0u8; 128];
        let (reply_len, kind) = echo_reply(&request[..len], &mut reply, &MAC, &IP, 7).unwrap();
        assert_eq!(kind, Echoed::Icmp);
        let reply = &reply[..reply_len];
        assert_eq!(icmp_echo_reply_from(reply, &PEER, &IP, 0x4c54), Some(7));
        assert_eq!(icmp_echo_reply_from(reply, &PEER, &IP, 0x4c55), None);
        assert_eq!(icmp_echo_reply_from(reply, &PEER, &PEER, 0x4c54), None);
        assert_eq!(
            icmp_echo_reply_from(&request[..len], &IP, &PEER, 0x4c54),
            None
        );
        for cut in 0..reply.len() {
            let _ = icmp_echo_reply_from(&reply[..cut], &PEER, &IP, 0x4c54);
        }
    }

    #[test]
    fn truncated_and_lying_frames_are_ignored() {
        let frame = udp_to_guest(7, b"x");
        let mut out = [0u8; 1600];
        for cut in 0..frame.len() - 1 {
            assert!(
                echo_reply(&frame[..cut], &mut out, &MAC, &IP, 7).is_none(),
                "cut {cut}"
            );
        }
        let mut lying = frame.clone();
        put16(&mut lying, 16, 1400);
        assert!(echo_reply(&lying, &mut out, &MAC, &IP, 7).is_none());
    }
}
