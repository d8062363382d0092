//! The `native` path runner: the kernel's own stack at the host end of a veth pair, no VM; the
//! baseline the VM paths' echo RTT and TCP bulk figures are compared with. Echo: a kernel UDP
//! echo (`poll` mode spins on a non-blocking socket). TCP: a kernel sink (or source) thread in
//! the host namespace plays the guest's part; its own CPU time (/proc/self/task/TID/stat) is the
//! path's host CPU. No frame-level sink or blast: the receive and transmit phases are
//! unavailable (raw_xsk is their no-VM baseline).

use std::net::SocketAddrV4;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::cpu::{current_tid, thread_cpu};
use super::netns::{enter_netns, VethPairNetns};
use super::packet::ECHO_PORT;
use super::report::Pinning;
use super::rtt::KernelUdpEcho;
use super::tcp::{bulk_receive, bulk_send, Transfer};
use super::{BenchError, Endpoint, GuestMode, PathRunner, PathStats, Phase, Role, RunningPath};

/// How long the native sink waits for the peer's connection.
const ACCEPT_WITHIN: Duration = Duration::from_secs(30);

/// Runs the kernel stack on a private veth pair in two `lt-*` namespaces, created on first use.
pub struct NativeRunner {
    cpu: Option<usize>,
    testbed: Option<VethPairNetns>,
}

impl NativeRunner {
    pub fn new(cpu: Option<usize>) -> Self {
        NativeRunner { cpu, testbed: None }
    }

    fn testbed(&mut self) -> Result<&VethPairNetns, BenchError> {
        if self.testbed.is_none() {
            self.testbed = Some(VethPairNetns::create("nt")?);
        }
        self.testbed
            .as_ref()
            .ok_or_else(|| BenchError::Setup("native testbed missing".into()))
    }
}

const NO_FRAME_PHASES: &str =
    "the kernel stack has no frame-level sink or blast (raw_xsk is the no-VM frame baseline)";

impl PathRunner for NativeRunner {
    fn name(&self) -> &'static str {
        "native"
    }

    fn reports_exits(&self) -> Result<(), String> {
        Err("no VM on this path".into())
    }

    fn phase_unavailable(&self, phase: Phase) -> Option<String> {
        match phase {
            Phase::Rx | Phase::Tx => Some(NO_FRAME_PHASES.into()),
            Phase::Tcp => None,
        }
    }

    fn pinning(&self) -> Vec<Pinning> {
        vec![Pinning {
            thread: "native kernel echo / TCP thread".into(),
            cpu: self.cpu,
        }]
    }

    fn prepare(&mut self, _mode: GuestMode) -> Result<Endpoint, BenchError> {
        Ok(self.testbed()?.endpoint_at_a())
    }

    fn start(&mut self, mode: GuestMode, role: &Role) -> Result<Box<dyn RunningPath>, BenchError> {
        let endpoint = self.prepare(mode)?;
        let netns = self.testbed()?.a.netns.clone();
        let job = match role {
            Role::Echo => Job::Echo(KernelUdpEcho::spawn(
                &netns,
                ECHO_PORT,
                mode == GuestMode::Poll,
                self.cpu,
            )?),
            Role::Sink { .. } | Role::Blast { .. } => {
                return Err(BenchError::Path {
                    path: "native".into(),
                    reason: NO_FRAME_PHASES.into(),
                })
            }
            Role::TcpSink { port } => {
                let addr = SocketAddrV4::new(endpoint.dut_ip, *port);
                Job::Tcp(spawn_held(&netns, self.cpu, move |bound| {
                    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
                        BenchError::Io(format!("native TCP sink: listen on {addr}: {e}"))
                    })?;
                    bound();
                    bulk_receive(&listener, ACCEPT_WITHIN, || {})
                })?)
            }
            Role::TcpSource { peer, bytes } => {
                let (peer, bytes) = (*peer, *bytes);
                let (go, go_rx) = mpsc::channel::<()>();
                let mut held = spawn_held(&netns, self.cpu, move |bound| {
                    bound();
                    // Send from the bench's first CPU sample on (see RunningNative::host_cpu).
                    let _ = go_rx.recv();
                    bulk_send(peer, bytes)
                })?;
                held.go = Mutex::new(Some(go));
                Job::Tcp(held)
            }
        };
        Ok(Box::new(RunningNative { endpoint, job }))
    }
}

/// A TCP thread that stays alive (so its /proc task entry can be read) until told to stop.
struct HeldThread {
    tid: u32,
    /// A source waits for this before sending; sent at the first CPU sample (or on drop).
    go: Mutex<Option<mpsc::Sender<()>>>,
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Result<Transfer, BenchError>>,
}

/// Run `work` on a thread inside `netns`; `work` calls its argument once it is ready for the
/// peer (e.g. listening). Returns then, with the thread's id.
fn spawn_held<F>(netns: &str, cpu: Option<usize>, work: F) -> Result<HeldThread, BenchError>
where
    F: FnOnce(&dyn Fn()) -> Result<Transfer, BenchError> + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel::<Result<u32, BenchError>>();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let netns = netns.to_string();
    let thread = std::thread::Builder::new()
        .name("bench-native-tcp".into())
        .spawn(move || {
            if let Err(e) = enter_netns(&netns) {
                let _ = ready_tx.send(Err(e.clone()));
                return Err(e);
            }
            if let Some(cpu) = cpu {
                super::pin_current_thread(cpu);
            }
            let tid = current_tid();
            let ready = ready_tx.clone();
            let result = work(&move || {
                let _ = ready.send(Ok(tid));
            });
            if let Err(e) = &result {
                let _ = ready_tx.send(Err(e.clone()));
            }
            // Stay alive until the bench has read this thread's CPU time.
            let _ = stop_rx.recv();
            result
        })
        .map_err(|e| BenchError::Setup(format!("cannot spawn the native TCP thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(tid)) => Ok(HeldThread {
            tid,
            go: Mutex::new(None),
            stop,
            thread,
        }),
        Ok(Err(e)) => {
            drop(stop);
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            drop(stop);
            Err(super::netns::join(thread).err().unwrap_or_else(|| {
                BenchError::Setup("the native TCP thread ended before it was ready".into())
            }))
        }
    }
}

enum Job {
    Echo(KernelUdpEcho),
    Tcp(HeldThread),
}

struct RunningNative {
    endpoint: Endpoint,
    job: Job,
}

impl RunningPath for RunningNative {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn host_cpu(&self) -> Result<Duration, BenchError> {
        match &self.job {
            Job::Tcp(held) => {
                let cpu = thread_cpu(std::process::id(), held.tid);
                // The guest's part starts when the bench took its first sample, as a VM's
                // does when its ready line arrives.
                if let Ok(mut go) = held.go.lock() {
                    if let Some(go) = go.take() {
                        let _ = go.send(());
                    }
                }
                cpu
            }
            Job::Echo(_) => Err(BenchError::Io(
                "native: host CPU is measured in the TCP phase only".into(),
            )),
        }
    }

    fn finish(self: Box<Self>) -> Result<PathStats, BenchError> {
        match self.job {
            Job::Echo(echo) => {
                echo.stop()?;
            }
            Job::Tcp(held) => {
                if let Ok(mut go) = held.go.lock() {
                    go.take();
                }
                let _ = held.stop.send(());
                super::netns::join(held.thread)?;
            }
        }
        Ok(PathStats::default())
    }
}
