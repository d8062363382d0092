//! The VM's network put together from what the user asked for: the Lance model (its MAC; link up
//! when there is a backend) and the backend chain ([`VmNet`]: AF_XDP or TAP with anti-spoofing,
//! capture, mirror and published counters) behind the port the I/O thread drives. `lancet run`
//! fills a [`NetSetup`]; the result goes into [`VmConfig::net`](super::VmConfig).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::nic::NicModel;
use super::{IoTuning, NetConfig};
use crate::frame::MacAddr;
use crate::lance::Lance;
use crate::net::names::IfName;
use crate::net::vmnet::{VmNet, VmNetOptions};
use crate::net::{BackendKind, BackendSpec, NetError, XdpMode};

/// Everything about the VM's network card and its host side.
#[derive(Debug, Clone)]
pub struct NetSetup {
    /// The host interface to bridge to (AF_XDP: the NIC; TAP: a bridge or a port of one). None:
    /// the VM's NIC has no link.
    pub nic: Option<IfName>,
    /// AF_XDP or TAP.
    pub backend: BackendKind,
    /// How the steering program attaches (AF_XDP).
    pub xdp_mode: XdpMode,
    /// The VM's MAC (the Lance's PROM address).
    pub mac: MacAddr,
    /// The VM's configured IPv4 address: steered to it (ARP) and its only IPv4 source. None: the
    /// addresses it uses are learned.
    pub vm_ip: Option<Ipv4Addr>,
    /// The TAP device to create (TAP).
    pub tap: IfName,
    /// Name, anti-spoofing, VLAN, capture and mirror settings (`addresses` is filled from
    /// `vm_ip`).
    pub options: VmNetOptions,
    /// Walk the TX ring on the vCPU thread (else the I/O thread does).
    pub tx_inline: bool,
    /// How long the I/O thread busy-polls the TX ring after activity.
    pub busy_poll: Duration,
}

/// Open the backend (when there is a NIC) and build the network part of the VM's configuration.
pub fn net_config(setup: &NetSetup) -> Result<NetConfig, NetError> {
    let backend: Option<Box<dyn crate::net::Backend>> = match &setup.nic {
        Some(nic) => Some(open_port(setup, nic)?),
        None => None,
    };
    let link_up = backend.is_some();
    let mac = setup.mac.octets();
    Ok(NetConfig {
        make_nic: Box::new(move |irq| {
            let mut lance = Lance::new(mac, irq);
            lance.set_link(link_up);
            Box::new(lance) as Box<dyn NicModel>
        }),
        backend,
        tx_inline: setup.tx_inline,
        io: IoTuning {
            busy_poll: setup.busy_poll,
        },
    })
}

fn open_port(setup: &NetSetup, nic: &IfName) -> Result<Box<dyn crate::net::Backend>, NetError> {
    let spec = BackendSpec {
        kind: setup.backend,
        nic: nic.to_string(),
        vm_mac: setup.mac.octets(),
        vm_ip: setup.vm_ip,
        tap_name: Some(setup.tap.to_string()),
        xdp_mode: setup.xdp_mode,
    };
    let opts = VmNetOptions {
        addresses: setup.vm_ip.map(IpAddr::V4).into_iter().collect(),
        ..setup.options.clone()
    };
    let backend = VmNet::open(&spec, &opts)?;
    Ok(Box::new(backend))
}
