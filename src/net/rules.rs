//! Filter rules: the syntax (`udp dport 4789 to vm web1 prio 10`), the parser, the canonical text,
//! and the compiler that turns a rule into masked flow-key entries for the XDP program's
//! tuple-space search (bpf/steer.bpf.c). Pure: no maps, no syscalls (see [`super::rulemaps`]).
//!
//! Grammar (words in any order, each field at most once, exactly one action):
//!
//! ```text
//! MATCH  := dst mac MAC | src mac MAC | vlan VID | ethertype (0xHHHH | arp | ipv4 | ipv6)
//!         | arp | ip | ipv4 | ip6 | ipv6
//!         | src PREFIX | dst PREFIX              (IPv4 or IPv6, `/len` optional)
//!         | proto (N | tcp | udp | icmp | icmp6) | tcp | udp | icmp | icmp6
//!         | sport PORTS | dport PORTS | src port PORTS | dst port PORTS   (PORTS := P | P-Q)
//! ACTION := to vm NAME | to host | pass | drop | mirror [to] vm NAME
//! PRIO   := prio N        (0..=65535, default 100; lower wins, then the older rule)
//! ```
//!
//! Port ranges are expanded into prefix-aligned blocks (8000-8080 = 8000/10 + 8064/12 + 8080/16
//! as bit prefixes of the 16-bit port), each block one hash entry under its own mask.
//!
//! What the program reads from a frame (its flow key): `vlan` is the OUTER VID (the tag on this
//! link; of a QinQ frame, 0x88a8 or 0x8100 then 0x8100, the service tag), and the ethertype, IP
//! and ports are those after both tags (a third tag is not parsed: ethertype 0x8100, no IP).
//! IPv6 `proto` is the transport after up to 6 extension headers (Hop-by-Hop, Routing, Fragment,
//! Destination Options, AH), ports only in a first fragment; a chain the program cannot parse
//! (longer, truncated, ESP...) has no transport ([`IPFLAG_NO_L4`]): a rule with a protocol or ports
//! does not match it, a rule on `ip6` alone does.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::frame::MacAddr;

use super::abi::{flow_key, RULE_MAX_ENTRIES, RULE_MAX_IDS, RULE_MAX_MASKS};
pub use super::abi::{
    key, IPFLAG_IP, IPFLAG_NO_L4, IPFLAG_V6, RULE_ID_BITS, RULE_TEXT_LEN, VLAN_PRESENT, VM_NAME_LEN,
};

/// Bytes of `struct flow_key` (bpf/lancet_common.h).
pub const FLOW_KEY_LEN: usize = std::mem::size_of::<flow_key>();
/// Masks one table holds (`RULE_MAX_MASKS`).
pub const MAX_MASKS: usize = RULE_MAX_MASKS as usize;
/// Rule ids are below this (`RULE_MAX_IDS`); id 0 is never used.
pub const MAX_RULE_IDS: u32 = RULE_MAX_IDS;
/// Hash entries of both tables together (`RULE_MAX_ENTRIES`).
pub const MAX_ENTRIES: usize = RULE_MAX_ENTRIES as usize;
/// Priority of a rule that names none.
pub const DEFAULT_PRIO: u16 = 100;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const MAX_VID: u16 = 4095;

/// A rule the parser refused, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rule: {0}")]
pub struct RuleError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError(msg.into()))
}

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The address (host bits are cleared by the parser).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    fn parse(text: &str) -> Result<Self, RuleError> {
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            RuleError(format!(
                "{text:?} is not an IPv4/IPv6 address or prefix (e.g. 10.1.0.0/16, fd00::/64)"
            ))
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len_text {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return err(format!("prefix length in {text:?} must be 0..={max}")),
            },
        };
        let mut bytes = ip_bytes(addr);
        mask_prefix(&mut bytes[..usize::from(max / 8)], len);
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bytes)),
        };
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.len == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

fn ip_bytes(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// Clear every bit after the first `len` bits of `bytes`.
fn mask_prefix(bytes: &mut [u8], len: u8) {
    for (i, b) in bytes.iter_mut().enumerate() {
        let start = i * 8;
        let keep = usize::from(len).saturating_sub(start).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
}

/// An inclusive TCP/UDP port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (>= first).
    pub last: u16,
}

impl PortRange {
    fn parse(text: &str) -> Result<Self, RuleError> {
        let bad = || {
            RuleError(format!(
                "{text:?} is not a port or port range (e.g. 4789, 8000-8080)"
            ))
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (
                a.parse::<u16>().map_err(|_| bad())?,
                b.parse::<u16>().map_err(|_| bad())?,
            ),
            None => {
                let p = text.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if first > last {
            return err(format!(
                "port range {text:?} is backwards: write {last}-{first}"
            ));
        }
        Ok(Self { first, last })
    }

    /// The range as prefix-aligned blocks `(first port, prefix length in bits)`; at most 30.
    pub fn blocks(self) -> Vec<(u16, u8)> {
        let mut out = Vec::new();
        let mut start = u32::from(self.first);
        let end = u32::from(self.last);
        while start <= end {
            // The largest block aligned at `start` that stays inside the range.
            let mut size_bits = if start == 0 {
                16
            } else {
                start.trailing_zeros().min(16)
            };
            while size_bits > 0 && start + (1 << size_bits) - 1 > end {
                size_bits -= 1;
            }
            out.push((start as u16, 16 - size_bits as u8));
            start += 1 << size_bits;
        }
        out
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// What a rule looks at; `None` = any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    /// Destination MAC.
    pub dst_mac: Option<[u8; 6]>,
    /// Source MAC.
    pub src_mac: Option<[u8; 6]>,
    /// 802.1Q VLAN id (the frame must be tagged with it).
    pub vlan: Option<u16>,
    /// Ethertype (after the VLAN tag).
    pub ethertype: Option<u16>,
    /// IP version only (from `ip`/`ip6` or implied by a prefix): 4 or 6.
    pub ip_version: Option<u8>,
    /// IP source prefix.
    pub src: Option<Prefix>,
    /// IP destination prefix.
    pub dst: Option<Prefix>,
    /// IP protocol (IPv4 protocol / IPv6 first next header).
    pub proto: Option<u8>,
    /// TCP/UDP source ports.
    pub sport: Option<PortRange>,
    /// TCP/UDP destination ports.
    pub dport: Option<PortRange>,
}

/// What a matching rule does with the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Redirect to the named VM's socket.
    ToVm(String),
    /// Pass to the host stack.
    Pass,
    /// Drop (counted).
    Drop,
    /// To the named VM, which also hands a copy to the host (see the mirror notes in
    /// the mirror notes in [`super::rulemaps`]).
    Mirror(String),
}

/// One filter rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The match.
    pub matches: Match,
    /// The action.
    pub action: Action,
    /// Priority: lower wins.
    pub prio: u16,
}

/// A MAC address in a rule (`dst mac 52:54:00:12:34:56`).
fn parse_mac(text: &str) -> Result<[u8; 6], RuleError> {
    text.parse::<MacAddr>()
        .map(MacAddr::octets)
        .map_err(|e| RuleError(e.to_string()))
}

fn parse_vm_name(text: Option<&&str>) -> Result<String, RuleError> {
    let Some(name) = text else {
        return err("`vm` needs the VM's name (e.g. `to vm web1`)");
    };
    if name.is_empty()
        || name.len() >= VM_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return err(format!(
            "VM name {name:?} must be 1..={} characters of letters, digits, '-', '_', '.'",
            VM_NAME_LEN - 1
        ));
    }
    Ok(name.to_string())
}

fn proto_number(text: &str) -> Result<u8, RuleError> {
    match text {
        "tcp" => Ok(PROTO_TCP),
        "udp" => Ok(PROTO_UDP),
        "icmp" => Ok(PROTO_ICMP),
        "icmp6" | "icmpv6" | "ipv6-icmp" => Ok(PROTO_ICMPV6),
        n => n.parse::<u8>().map_err(|_| {
            RuleError(format!(
                "{n:?} is not an IP protocol (tcp, udp, icmp, icmp6 or 0..=255)"
            ))
        }),
    }
}

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        PROTO_TCP => Some("tcp"),
        PROTO_UDP => Some("udp"),
        PROTO_ICMP => Some("icmp"),
        PROTO_ICMPV6 => Some("icmp6"),
        _ => None,
    }
}

fn ethertype_number(text: &str) -> Result<u16, RuleError> {
    match text {
        "arp" => Ok(ETHERTYPE_ARP),
        "ip" | "ipv4" => Ok(ETHERTYPE_IPV4),
        "ip6" | "ipv6" => Ok(ETHERTYPE_IPV6),
        t => {
            let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"));
            let parsed = match hex {
                Some(h) => u16::from_str_radix(h, 16),
                None => t.parse::<u16>(),
            };
            parsed.map_err(|_| {
                RuleError(format!(
                    "{t:?} is not an ethertype (0x0800, arp, ipv4, ipv6)"
                ))
            })
        }
    }
}

fn set<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), RuleError> {
    if slot.is_some() {
        return err(format!("{what} is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

/// Which end of a frame a `src`/`dst` word (or `smac`/`sport`...) names.
#[derive(Clone, Copy)]
enum End {
    Src,
    Dst,
}

/// A rule being parsed: its words, and the match, action and priority read so far. Each keyword
/// has its parser, which reads the keyword's values and returns how many words it took.
struct RuleParser<'a> {
    words: Vec<&'a str>,
    matches: Match,
    action: Option<Action>,
    prio: Option<u16>,
}

impl<'a> RuleParser<'a> {
    /// The word `at`, the value of `what`.
    fn need(&self, at: usize, what: &str) -> Result<&'a str, RuleError> {
        self.words
            .get(at)
            .copied()
            .ok_or_else(|| RuleError(format!("`{what}` needs a value")))
    }

    /// Read the keyword at `i`; returns the words it took.
    fn keyword(&mut self, i: usize) -> Result<usize, RuleError> {
        let w = self.words[i];
        match w {
            "src" => self.src_dst(i, End::Src),
            "dst" => self.src_dst(i, End::Dst),
            "smac" => self.short_mac(i, End::Src),
            "dmac" => self.short_mac(i, End::Dst),
            "vlan" => self.vlan(i),
            "ethertype" => {
                let et = ethertype_number(self.need(i + 1, w)?)?;
                set(&mut self.matches.ethertype, et, "ethertype")?;
                Ok(2)
            }
            "arp" => set(&mut self.matches.ethertype, ETHERTYPE_ARP, "ethertype").map(|_| 1),
            "ip" | "ipv4" => set(&mut self.matches.ip_version, 4, "ip version").map(|_| 1),
            "ip6" | "ipv6" => set(&mut self.matches.ip_version, 6, "ip version").map(|_| 1),
            "proto" => {
                let p = proto_number(self.need(i + 1, w)?)?;
                set(&mut self.matches.proto, p, "proto").map(|_| 2)
            }
            "tcp" | "udp" | "icmp" | "icmp6" => {
                set(&mut self.matches.proto, proto_number(w)?, "proto").map(|_| 1)
            }
            "sport" => self.ports(i + 1, w, End::Src).map(|_| 2),
            "dport" => self.ports(i + 1, w, End::Dst).map(|_| 2),
            "prio" | "priority" => self.priority(i),
            "to" => self.to(i),
            "mirror" => self.mirror(i),
            "pass" | "accept" => self.set_action(Action::Pass).map(|_| 1),
            "drop" | "deny" => self.set_action(Action::Drop).map(|_| 1),
            other => err(format!(
                "unknown word {other:?}: expected a match (src, dst, dst mac, src mac, vlan, \
                 ethertype, arp, ip, ip6, proto, tcp, udp, icmp, sport, dport), an action \
                 (to vm NAME, to host, pass, drop, mirror vm NAME) or prio N"
            )),
        }
    }

    /// `src|dst mac MAC`, `src|dst port PORTS` or `src|dst PREFIX`.
    fn src_dst(&mut self, i: usize, end: End) -> Result<usize, RuleError> {
        let w = self.words[i];
        match self.need(i + 1, w)? {
            "mac" => {
                let mac = parse_mac(self.need(i + 2, &format!("{w} mac"))?)?;
                self.mac(mac, end)?;
                Ok(3)
            }
            "port" => {
                self.ports(i + 2, &format!("{w} port"), end)?;
                Ok(3)
            }
            p => {
                let prefix = Prefix::parse(p)?;
                match end {
                    End::Src => set(&mut self.matches.src, prefix, "src")?,
                    End::Dst => set(&mut self.matches.dst, prefix, "dst")?,
                }
                Ok(2)
            }
        }
    }

    /// `smac MAC` / `dmac MAC`.
    fn short_mac(&mut self, i: usize, end: End) -> Result<usize, RuleError> {
        let mac = parse_mac(self.need(i + 1, self.words[i])?)?;
        self.mac(mac, end)?;
        Ok(2)
    }

    fn mac(&mut self, mac: [u8; 6], end: End) -> Result<(), RuleError> {
        match end {
            End::Src => set(&mut self.matches.src_mac, mac, "src mac"),
            End::Dst => set(&mut self.matches.dst_mac, mac, "dst mac"),
        }
    }

    /// The port range at word `at` (the value of `what`).
    fn ports(&mut self, at: usize, what: &str, end: End) -> Result<(), RuleError> {
        let ports = PortRange::parse(self.need(at, what)?)?;
        match end {
            End::Src => set(&mut self.matches.sport, ports, "sport"),
            End::Dst => set(&mut self.matches.dport, ports, "dport"),
        }
    }

    /// `vlan VID`.
    fn vlan(&mut self, i: usize) -> Result<usize, RuleError> {
        let v = self.need(i + 1, self.words[i])?;
        let vid = v
            .parse::<u16>()
            .ok()
            .filter(|v| *v <= MAX_VID)
            .ok_or_else(|| RuleError(format!("VLAN id {v:?} must be 0..={MAX_VID}")))?;
        set(&mut self.matches.vlan, vid, "vlan")?;
        Ok(2)
    }

    /// `prio N`.
    fn priority(&mut self, i: usize) -> Result<usize, RuleError> {
        let p = self.need(i + 1, self.words[i])?;
        let n = p
            .parse::<u16>()
            .map_err(|_| RuleError(format!("priority {p:?} must be 0..=65535 (lower wins)")))?;
        set(&mut self.prio, n, "prio")?;
        Ok(2)
    }

    /// `to vm NAME` or `to host`.
    fn to(&mut self, i: usize) -> Result<usize, RuleError> {
        let (action, taken) = match self.need(i + 1, "to")? {
            "vm" => (Action::ToVm(parse_vm_name(self.words.get(i + 2))?), 3),
            "host" => (Action::Pass, 2),
            other => return err(format!("`to {other}`: write `to vm NAME` or `to host`")),
        };
        self.set_action(action)?;
        Ok(taken)
    }

    /// `mirror [to] vm NAME`.
    fn mirror(&mut self, i: usize) -> Result<usize, RuleError> {
        let mut j = i + 1;
        if self.words.get(j) == Some(&"to") {
            j += 1;
        }
        if self.words.get(j) != Some(&"vm") {
            return err("`mirror` needs the VM: `mirror vm NAME`");
        }
        let name = parse_vm_name(self.words.get(j + 1))?;
        self.set_action(Action::Mirror(name))?;
        Ok(j + 2 - i)
    }

    fn set_action(&mut self, action: Action) -> Result<(), RuleError> {
        set(&mut self.action, action, "the action")
    }
}

impl Rule {
    /// Parse a rule from its words (`["udp", "dport", "4789", "to", "vm", "web1"]`).
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Self, RuleError> {
        let mut parser = RuleParser {
            words: words.iter().map(|w| w.as_ref()).collect(),
            matches: Match::default(),
            action: None,
            prio: None,
        };
        let mut i = 0;
        while i < parser.words.len() {
            i += parser.keyword(i)?;
        }
        let action = parser.action.ok_or_else(|| {
            RuleError(
                "the rule has no action: end it with `to vm NAME`, `pass`, `drop` or `mirror vm NAME`"
                    .into(),
            )
        })?;
        let rule = Rule {
            matches: parser.matches,
            action,
            prio: parser.prio.unwrap_or(DEFAULT_PRIO),
        };
        rule.validate()?;
        Ok(rule)
    }

    /// Parse a rule from one line of text.
    pub fn parse_str(text: &str) -> Result<Self, RuleError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        Self::parse(&words)
    }

    fn validate(&self) -> Result<(), RuleError> {
        let m = &self.matches;
        let mut family = m.ip_version;
        for p in [m.src, m.dst].into_iter().flatten() {
            let v = if p.addr.is_ipv4() { 4 } else { 6 };
            match family {
                Some(f) if f != v => {
                    return err(format!(
                        "{p} is IPv{v} but the rule already matches IPv{f}: one rule matches one IP version"
                    ))
                }
                _ => family = Some(v),
            }
        }
        if let (Some(et), Some(f)) = (m.ethertype, family) {
            let want = if f == 4 {
                ETHERTYPE_IPV4
            } else {
                ETHERTYPE_IPV6
            };
            if et != want {
                return err(format!(
                    "ethertype 0x{et:04x} cannot carry IPv{f}: drop the ethertype or the IP match"
                ));
            }
        }
        if (m.sport.is_some() || m.dport.is_some())
            && !matches!(m.proto, Some(PROTO_TCP) | Some(PROTO_UDP))
        {
            return err("ports need the protocol: add `tcp` or `udp` (e.g. `udp dport 4789`)");
        }
        if let (Some(et), Some(_)) = (m.ethertype, m.proto) {
            if et != ETHERTYPE_IPV4 && et != ETHERTYPE_IPV6 {
                return err(format!(
                    "ethertype 0x{et:04x} carries no IP protocol: drop one of them"
                ));
            }
        }
        if self.blocks_product() > MAX_MASKS {
            return err(format!(
                "the port ranges expand to {} masks, more than the {MAX_MASKS} a table holds: split the rule or use prefix-aligned ranges",
                self.blocks_product()
            ));
        }
        Ok(())
    }

    fn blocks_product(&self) -> usize {
        let n = |r: Option<PortRange>| r.map_or(1, |r| r.blocks().len());
        n(self.matches.sport) * n(self.matches.dport)
    }

    /// The IP version the rule implies (explicit, from a prefix, or from the ethertype).
    fn ip_family(&self) -> Option<u8> {
        let m = &self.matches;
        m.ip_version.or(m
            .src
            .or(m.dst)
            .map(|p| if p.addr.is_ipv4() { 4 } else { 6 }))
    }

    /// The VM the action names, if any.
    pub fn vm_name(&self) -> Option<&str> {
        match &self.action {
            Action::ToVm(n) | Action::Mirror(n) => Some(n),
            Action::Pass | Action::Drop => None,
        }
    }

    /// The rule's masked flow-key entries: `(mask, value)` pairs, `value == value & mask`, tags 0.
    pub fn compile(&self) -> Vec<(FlowKey, FlowKey)> {
        let m = &self.matches;
        let mut mask = FlowKey::default();
        let mut value = FlowKey::default();
        if let Some(mac) = m.dst_mac {
            mask.set(key::DST_MAC, &[0xff; 6]);
            value.set(key::DST_MAC, &mac);
        }
        if let Some(mac) = m.src_mac {
            mask.set(key::SRC_MAC, &[0xff; 6]);
            value.set(key::SRC_MAC, &mac);
        }
        if let Some(vid) = m.vlan {
            mask.set(key::VLAN, &0xffffu16.to_ne_bytes());
            value.set(key::VLAN, &(VLAN_PRESENT | vid).to_ne_bytes());
        }
        if let Some(et) = m.ethertype {
            mask.set(key::ETHERTYPE, &[0xff, 0xff]);
            value.set(key::ETHERTYPE, &et.to_be_bytes());
        }
        match self.ip_family() {
            Some(4) => {
                mask.0[key::IPFLAGS] = IPFLAG_IP | IPFLAG_V6;
                value.0[key::IPFLAGS] = IPFLAG_IP;
            }
            Some(_) => {
                mask.0[key::IPFLAGS] = IPFLAG_IP | IPFLAG_V6;
                value.0[key::IPFLAGS] = IPFLAG_IP | IPFLAG_V6;
            }
            None if m.proto.is_some() => {
                mask.0[key::IPFLAGS] = IPFLAG_IP;
                value.0[key::IPFLAGS] = IPFLAG_IP;
            }
            None => {}
        }
        for (prefix, offset) in [(m.src, key::SRC_IP), (m.dst, key::DST_IP)] {
            if let Some(p) = prefix {
                let width = if p.addr.is_ipv4() { 4 } else { 16 };
                let mut bits = [0xffu8; 16];
                mask_prefix(&mut bits[..width], p.len);
                mask.set(offset, &bits[..width]);
                value.set(offset, &ip_bytes(p.addr)[..width]);
            }
        }
        if let Some(p) = m.proto {
            mask.0[key::PROTO] = 0xff;
            value.0[key::PROTO] = p;
            // A transport that was found: never a frame whose chain was not parsed.
            mask.0[key::IPFLAGS] |= IPFLAG_NO_L4;
        }
        let blocks = |r: Option<PortRange>| match r {
            Some(r) => r.blocks().into_iter().map(Some).collect::<Vec<_>>(),
            None => vec![None],
        };
        let mut out = Vec::new();
        for s in blocks(m.sport) {
            for d in blocks(m.dport) {
                let (mut mk, mut vl) = (mask, value);
                for (block, offset) in [(s, key::SPORT), (d, key::DPORT)] {
                    if let Some((port, len)) = block {
                        let bits: u16 = if len == 0 { 0 } else { 0xffff << (16 - len) };
                        mk.set(offset, &bits.to_be_bytes());
                        vl.set(offset, &port.to_be_bytes());
                    }
                }
                out.push((mk, vl));
            }
        }
        out
    }
}

impl fmt::Display for Rule {
    /// The canonical text: parses back to the same rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.matches;
        let mut words: Vec<String> = Vec::new();
        if let Some(mac) = m.dst_mac {
            words.push(format!("dst mac {}", crate::frame::MacAddr(mac)));
        }
        if let Some(mac) = m.src_mac {
            words.push(format!("src mac {}", crate::frame::MacAddr(mac)));
        }
        if let Some(v) = m.vlan {
            words.push(format!("vlan {v}"));
        }
        match m.ethertype {
            Some(ETHERTYPE_ARP) => words.push("arp".into()),
            Some(et) => words.push(format!("ethertype 0x{et:04x}")),
            None => {}
        }
        match m.ip_version {
            Some(4) => words.push("ip".into()),
            Some(_) => words.push("ip6".into()),
            None => {}
        }
        if let Some(p) = m.src {
            words.push(format!("src {p}"));
        }
        if let Some(p) = m.dst {
            words.push(format!("dst {p}"));
        }
        if let Some(p) = m.proto {
            match proto_name(p) {
                Some(n) => words.push(n.into()),
                None => words.push(format!("proto {p}")),
            }
        }
        if let Some(r) = m.sport {
            words.push(format!("sport {r}"));
        }
        if let Some(r) = m.dport {
            words.push(format!("dport {r}"));
        }
        words.push(match &self.action {
            Action::ToVm(n) => format!("to vm {n}"),
            Action::Pass => "pass".into(),
            Action::Drop => "drop".into(),
            Action::Mirror(n) => format!("mirror vm {n}"),
        });
        words.push(format!("prio {}", self.prio));
        write!(f, "{}", words.join(" "))
    }
}

impl Match {
    /// The match part of the canonical text ("any" when empty).
    pub fn describe(rule: &Rule) -> String {
        let text = rule.to_string();
        let action_start = [" to vm ", " pass", " drop", " mirror vm "]
            .iter()
            .filter_map(|a| text.find(a))
            .min();
        match action_start {
            Some(i) => text[..i].to_string(),
            None => "any".into(),
        }
    }
}

/// A `struct flow_key` as bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey(pub [u8; FLOW_KEY_LEN]);

impl Default for FlowKey {
    fn default() -> Self {
        Self([0; FLOW_KEY_LEN])
    }
}

impl fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FlowKey {
    /// The key from the generated `struct flow_key` (same size by construction).
    pub fn from_abi(key: &flow_key) -> Self {
        let mut out = Self::default();
        out.0.copy_from_slice(super::abi::bytes(key));
        out
    }

    /// The key as the generated `struct flow_key`.
    pub fn to_abi(&self) -> flow_key {
        let mut out = flow_key::default();
        super::abi::bytes_mut(&mut out).copy_from_slice(&self.0);
        out
    }

    fn set(&mut self, offset: usize, bytes: &[u8]) {
        self.0[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// The tag (table << 8 | mask id).
    pub fn tag(&self) -> u32 {
        u32::from_ne_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    /// This key with `tag` in its tag word.
    pub fn with_tag(mut self, tag: u32) -> Self {
        self.0[key::TAG..key::TAG + 4].copy_from_slice(&tag.to_ne_bytes());
        self
    }

    /// `self & mask` (tag taken from `mask`), as the XDP program computes it.
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = FlowKey::default();
        for (i, o) in out.0.iter_mut().enumerate() {
            *o = self.0[i] & mask.0[i];
        }
        out.with_tag(mask.tag())
    }

    /// The flow key of a frame, the same way bpf/steer.bpf.c builds it (for tests and tools).
    pub fn from_frame(frame: &[u8]) -> Option<FlowKey> {
        let mut k = FlowKey::default();
        let eth = frame.get(..14)?;
        k.set(key::DST_MAC, &eth[..6]);
        k.set(key::SRC_MAC, &eth[6..12]);
        let mut et = u16::from_be_bytes([eth[12], eth[13]]);
        let mut l3 = 14;
        if et == 0x8100 || et == 0x88a8 {
            let Some(tag) = frame.get(14..18) else {
                return Some(k);
            };
            let vid = u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff;
            k.set(key::VLAN, &(VLAN_PRESENT | vid).to_ne_bytes());
            et = u16::from_be_bytes([tag[2], tag[3]]);
            l3 = 18;
        }
        k.set(key::ETHERTYPE, &et.to_be_bytes());
        let mut l4 = None;
        if et == ETHERTYPE_IPV4 {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return Some(k);
            };
            k.0[key::IPFLAGS] = IPFLAG_IP;
            k.0[key::PROTO] = ip[9];
            k.set(key::SRC_IP, &ip[12..16]);
            k.set(key::DST_IP, &ip[16..20]);
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ihl >= 20 && u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0 {
                l4 = Some(l3 + ihl);
            }
        } else if et == ETHERTYPE_IPV6 {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return Some(k);
            };
            k.0[key::IPFLAGS] = IPFLAG_IP | IPFLAG_V6;
            k.0[key::PROTO] = ip[6];
            k.set(key::SRC_IP, &ip[8..24]);
            k.set(key::DST_IP, &ip[24..40]);
            l4 = Some(l3 + 40);
        }
        if let Some(l4) = l4 {
            if matches!(k.0[key::PROTO], PROTO_TCP | PROTO_UDP) {
                if let Some(ports) = frame.get(l4..l4 + 4) {
                    k.set(key::SPORT, &ports[..2]);
                    k.set(key::DPORT, &ports[2..4]);
                }
            }
        }
        Some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_examples_and_prints_canonically() {
        let r = Rule::parse_str("udp dport 4789 to vm web1 prio 10").unwrap();
        assert_eq!(r.matches.proto, Some(PROTO_UDP));
        assert_eq!(
            r.matches.dport,
            Some(PortRange {
                first: 4789,
                last: 4789
            })
        );
        assert_eq!(r.action, Action::ToVm("web1".into()));
        assert_eq!(r.prio, 10);
        assert_eq!(r.to_string(), "udp dport 4789 to vm web1 prio 10");
        let r = Rule::parse_str("src 10.1.2.3/16 tcp dport 8000-8080 drop").unwrap();
        assert_eq!(
            r.to_string(),
            "src 10.1.0.0/16 tcp dport 8000-8080 drop prio 100"
        );
        assert_eq!(Rule::parse_str(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn rejects_bad_rules_with_a_reason() {
        for (text, needle) in [
            ("udp dport 4789", "no action"),
            ("dport 80 drop", "add `tcp` or `udp`"),
            ("src 10.0.0.0/33 drop", "prefix length"),
            ("src 10.0.0.1 dst fd00::1 drop", "one IP version"),
            ("vlan 4096 drop", "VLAN id"),
            ("tcp dport 90-80 drop", "backwards"),
            ("drop pass", "given twice"),
            ("frobnicate drop", "unknown word"),
            ("to vm this-name-is-far-too-long drop", "VM name"),
            ("arp tcp drop", "carries no IP protocol"),
            ("ethertype arp src 10.0.0.1 drop", "cannot carry IPv4"),
            ("dst mac 01:02:03 drop", "not a MAC"),
            ("tcp sport 1-65534 dport 1-65534 drop", "masks"),
        ] {
            let e = Rule::parse_str(text).unwrap_err();
            assert!(e.0.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn port_blocks_cover_the_range_exactly() {
        for (a, b) in [(8000, 8080), (0, 65535), (1, 1), (1, 65534), (4789, 4790)] {
            let blocks = PortRange { first: a, last: b }.blocks();
            let mut covered = Vec::new();
            for (start, len) in &blocks {
                let size = 1u32 << (16 - len);
                assert_eq!(u32::from(*start) % size, 0, "aligned");
                covered.extend(u32::from(*start)..u32::from(*start) + size);
            }
            let want: Vec<u32> = (u32::from(a)..=u32::from(b)).collect();
            assert_eq!(covered, want, "{a}-{b}");
            assert!(blocks.len() <= 30);
        }
        assert_eq!(
            PortRange {
                first: 8000,
                last: 8080
            }
            .blocks(),
            vec![(8000, 10), (8064, 12), (8080, 16)]
        );
    }

    fn udp_frame(dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = PROTO_UDP;
        f[26..30].copy_from_slice(&[10, 1, 2, 3]);
        f[30..34].copy_from_slice(&[10, 9, 9, 9]);
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn compiled_entries_match_exactly_the_ports_of_the_range() {
        let r = Rule::parse_str("src 10.1.0.0/16 udp dport 8000-8080 drop").unwrap();
        let entries = r.compile();
        for port in 7990..8100u16 {
            let k = FlowKey::from_frame(&udp_frame(port)).unwrap();
            let hit = entries.iter().any(|(m, v)| k.masked(m) == *v);
            assert_eq!(hit, (8000..=8080).contains(&port), "port {port}");
        }
        let mut other = udp_frame(8000);
        other[26] = 11;
        let k = FlowKey::from_frame(&other).unwrap();
        assert!(!entries.iter().any(|(m, v)| k.masked(m) == *v));
    }

    #[test]
    fn proto_alone_matches_ipv4_and_ipv6() {
        let r = Rule::parse_str("udp drop").unwrap();
        let (m, v) = r.compile()[0];
        let k4 = FlowKey::from_frame(&udp_frame(1)).unwrap();
        assert_eq!(k4.masked(&m), v);
        let mut f6 = vec![0u8; 62 + 8];
        f6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f6[14 + 6] = PROTO_UDP;
        let k6 = FlowKey::from_frame(&f6).unwrap();
        assert_eq!(k6.masked(&m), v);
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let ka = FlowKey::from_frame(&arp).unwrap();
        assert_ne!(ka.masked(&m), v);
    }
}
