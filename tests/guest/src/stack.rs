//! The TCP/IP stack (smoltcp, ring 3 only) on top of the ring-3 Lance driver: a smoltcp `Device`
//! over `Lance::receive` / `TxQueue::send` / `kick`, the interface, one TCP socket with static
//! 64 KiB buffers in `.noinit`, and the TSC clock smoltcp runs on.

use core::mem::MaybeUninit;
use core::ptr::{addr_of_mut, write_bytes};
use core::sync::atomic::{AtomicBool, Ordering};

use smoltcp::iface::SocketStorage;
use smoltcp::iface::{Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

use crate::clock::TscClock;
use crate::cmdline::Config;
use crate::lance::{Lance, BUF_SIZE};
use crate::user;

/// Largest Ethernet frame (header + 1500 B MTU, FCS excluded): TCP MSS 1460.
const ETHERNET_MTU: usize = 1514;
/// TCP receive and send buffer sizes (the advertised window follows the receive buffer).
pub const TCP_BUFFER_SIZE: usize = 64 * 1024;

/// The TCP socket's buffers: 128 KiB, so in `.noinit` (not loaded, not zeroed by the slow ring 0);
/// zeroed by `Stack::new` in ring 3 before use.
#[repr(C, align(4096))]
struct TcpBuffers {
    rx: [u8; TCP_BUFFER_SIZE],
    tx: [u8; TCP_BUFFER_SIZE],
}

#[link_section = ".noinit.tcp"]
static mut TCP_BUFFERS: MaybeUninit<TcpBuffers> = MaybeUninit::uninit();
/// The socket set's storage (one socket).
static mut SOCKET_STORAGE: [SocketStorage<'static>; 1] = [SocketStorage::EMPTY];
/// Set by the first `Stack::new`: the statics above are handed out once.
static STATIC_TAKEN: AtomicBool = AtomicBool::new(false);

/// A smoltcp device over the Lance's rings. Received frames are copied out of the RX ring (the
/// descriptor goes straight back to the chip); transmitted frames are built in the TX buffers.
pub struct LanceDevice<'a> {
    pub lance: &'a mut Lance,
    /// The frame of the current RX token.
    rx_frame: [u8; BUF_SIZE],
    /// Where a TX token builds its frame when the TX ring filled up meanwhile.
    tx_scratch: [u8; BUF_SIZE],
    /// Frames smoltcp built that found the TX ring full (lost; TCP retransmits).
    pub tx_full_drops: u64,
}

impl<'a> LanceDevice<'a> {
    pub fn new(lance: &'a mut Lance) -> Self {
        LanceDevice {
            lance,
            rx_frame: [0; BUF_SIZE],
            tx_scratch: [0; BUF_SIZE],
            tx_full_drops: 0,
        }
    }
}

pub struct LanceRxToken<'a> {
    frame: &'a [u8],
}

pub struct LanceTxToken<'a> {
    lance: &'a mut Lance,
    scratch: &'a mut [u8; BUF_SIZE],
    drops: &'a mut u64,
}

impl RxToken for LanceRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

impl TxToken for LanceTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let length = len.min(BUF_SIZE);
        let mut build = Some(f);
        let mut result = None;
        self.lance.tx().send(|buffer| {
            if let Some(build) = build.take() {
                result = Some(build(&mut buffer[..length]));
            }
            length
        });
        match (result, build) {
            (Some(result), _) => result,
            // The ring filled up since `transmit`/`receive` handed out the token.
            (None, Some(build)) => {
                *self.drops += 1;
                build(&mut self.scratch[..length])
            }
            (None, None) => unreachable!("TxQueue::send ran the builder without a result"),
        }
    }
}

impl Device for LanceDevice<'_> {
    type RxToken<'b>
        = LanceRxToken<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = LanceTxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Leave frames in the RX ring while the TX ring is full (smoltcp may answer at once).
        if !self.lance.tx().has_room() {
            return None;
        }
        let mut length = 0;
        let rx_frame = &mut self.rx_frame;
        self.lance.receive(1, |frame, _| {
            rx_frame[..frame.len()].copy_from_slice(frame);
            length = frame.len();
        });
        if length == 0 {
            return None;
        }
        Some((
            LanceRxToken {
                frame: &self.rx_frame[..length],
            },
            LanceTxToken {
                lance: self.lance,
                scratch: &mut self.tx_scratch,
                drops: &mut self.tx_full_drops,
            },
        ))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        if !self.lance.tx().has_room() {
            return None;
        }
        Some(LanceTxToken {
            lance: self.lance,
            scratch: &mut self.tx_scratch,
            drops: &mut self.tx_full_drops,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = ETHERNET_MTU;
        caps
    }
}

/// The interface with its one TCP socket.
pub struct Stack<'a> {
    pub device: LanceDevice<'a>,
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    pub clock: TscClock,
}

impl<'a> Stack<'a> {
    /// Brings up the interface at `config.ip` with one TCP socket. Call once (the socket buffers
    /// are static); a second call fails the guest.
    pub fn new(lance: &'a mut Lance, config: &Config, clock: TscClock) -> Self {
        if STATIC_TAKEN.swap(true, Ordering::AcqRel) {
            user::fail("the TCP stack can be brought up once only");
        }
        // SAFETY: STATIC_TAKEN guarantees this runs once, so these are the only references to
        // the two statics; the buffers are zeroed (made valid `u8`s) before the slices are made.
        let (rx, tx, storage) = unsafe {
            let buffers = addr_of_mut!(TCP_BUFFERS).cast::<TcpBuffers>();
            write_bytes(buffers, 0, 1);
            (
                &mut (&mut (*buffers).rx)[..],
                &mut (&mut (*buffers).tx)[..],
                &mut (&mut *addr_of_mut!(SOCKET_STORAGE))[..],
            )
        };
        let mut device = LanceDevice::new(lance);
        let mac = EthernetAddress(device.lance.mac);
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ethernet(mac));
        iface_config.random_seed = user::rdtsc();
        let now = Instant::from_micros(clock.micros(user::rdtsc()));
        let mut iface = Interface::new(iface_config, &mut device, now);
        let [a, b, c, d] = config.ip;
        iface.update_ip_addrs(|addrs| {
            // One address on an empty list: cannot exceed the list's capacity.
            let _ = addrs.push(IpCidr::new(
                Ipv4Address::new(a, b, c, d).into(),
                config.prefix_len,
            ));
        });
        let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
        socket.set_nagle_enabled(false);
        let mut sockets = SocketSet::new(storage);
        let handle = sockets.add(socket);
        Stack {
            device,
            iface,
            sockets,
            handle,
            clock,
        }
    }

    /// smoltcp's time now.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.clock.micros(user::rdtsc()))
    }

    /// One pass: every received frame in, every due segment out, then TDMD per the kick policy.
    pub fn poll(&mut self) -> PollResult {
        let now = self.now();
        let result = self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.device.lance.kick();
        result
    }

    /// The TCP socket.
    pub fn tcp(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    /// Starts connecting the TCP socket to `remote` from `local_port` (SYN on the next poll).
    pub fn connect(
        &mut self,
        remote: (Ipv4Address, u16),
        local_port: u16,
    ) -> Result<(), tcp::ConnectError> {
        let socket = self.sockets.get_mut::<tcp::Socket>(self.handle);
        socket.connect(self.iface.context(), remote, local_port)
    }
}
