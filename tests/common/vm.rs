//! `lancet run` as a child process in a testbed (`src/tools/testbed.rs`) booting the test guest: start
//! it (or several echo VMs on one NIC), watch its serial console, stop it or wait for its exit, and
//! kill it (by PID) on drop.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lancet::tools::guest_cmdline::{GuestCmdline, GuestMode, GuestProgram, Ipv4Cidr};
use lancet::tools::testbed::{Side, Testbed, TestbedConfig};

/// A `lancet run` child process in a testbed; killed (by its PID) and reaped on drop.
pub struct VmProcess {
    pub child: Option<Child>,
    pub serial: PathBuf,
    pub stats: PathBuf,
}

impl VmProcess {
    /// `lancet run` with the testbed's VM MAC.
    pub fn start(bed: &Testbed, backend: &str, guest: &[&str], tag: &str) -> Self {
        Self::start_as(bed, backend, Testbed::VM_MAC, guest, tag)
    }

    /// `lancet run` with the VM's MAC `vm_mac` (several VMs on one NIC).
    pub fn start_as(
        bed: &Testbed,
        backend: &str,
        vm_mac: [u8; 6],
        guest: &[&str],
        tag: &str,
    ) -> Self {
        let dir = std::env::temp_dir();
        let id = format!("{}-{tag}", std::process::id());
        let serial = dir.join(format!("lancet-e2e-{id}.serial"));
        let stats = dir.join(format!("lancet-e2e-{id}.json"));
        let nic = if backend == "tap" {
            Testbed::BRIDGE
        } else {
            Testbed::NIC
        };
        let mac = lancet::frame::MacAddr(vm_mac).to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_lancet"))
            .args([
                "run",
                "--netns",
                bed.ns_name(Side::Host),
                "--nic",
                nic,
                "--backend",
                backend,
            ])
            .args(["--mac", &mac, "--mem", "128M", "--timeout", "300"])
            .args([
                "--serial",
                serial.to_str().unwrap(),
                "--stats-json",
                stats.to_str().unwrap(),
            ])
            .args(guest)
            // Extra `lancet run` options for measurements (e.g. "--tx-mode io-thread").
            .args(
                std::env::var("LANCET_E2E_RUN_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lancet");
        Self {
            child: Some(child),
            serial,
            stats,
        }
    }

    /// `lancet run --guest echo` on the testbed's NIC (XDP backend) as VM `name` with `mac` and
    /// `ip` (in the testbed's prefix); returns once the guest is ready. `tag` names its files.
    pub fn start_echo(bed: &Testbed, tag: &str, name: &str, mac: [u8; 6], ip: Ipv4Addr) -> Self {
        let serial =
            std::env::temp_dir().join(format!("lancet-{tag}-{}-{name}.serial", std::process::id()));
        let stats = serial.with_extension("json");
        let mac = lancet::frame::MacAddr(mac).to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_lancet"))
            .args(["run", "--netns", bed.ns_name(Side::Host)])
            .args(["--nic", Testbed::NIC, "--backend", "xdp", "--vm-name", name])
            .args(["--mac", &mac, "--mem", "128M", "--timeout", "120"])
            .arg("--serial")
            .arg(&serial)
            .arg("--stats-json")
            .arg(&stats)
            .args(["--guest", "echo", "--guest-elf"])
            .arg(super::test_guest_elf())
            .args(["--guest-ip", &format!("{ip}/{}", Testbed::PREFIX_LEN)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lancet");
        let mut vm = Self {
            child: Some(child),
            serial,
            stats,
        };
        vm.wait_for("lancet-guest: ready prog=echo", Duration::from_secs(60));
        vm
    }

    /// The `lancet run` process's PID (while it runs).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn serial_text(&self) -> String {
        std::fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Waits until the serial console shows `needle`; panics with the console if the VM exits or
    /// the time runs out.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let text = self.serial_text();
            if text.contains(needle) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let mut stderr = String::new();
                use std::io::Read;
                let _ = self
                    .child
                    .as_mut()
                    .unwrap()
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                panic!("lancet exited ({status}) before {needle:?}:\n{stderr}\nserial:\n{text}");
            }
            assert!(
                start.elapsed() < timeout,
                "no {needle:?} within {timeout:?}; serial:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, wait, and return the exit code and the stats document.
    pub fn stop(mut self) -> (i32, serde_json::Value) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let stats = std::fs::read_to_string(&self.stats).unwrap_or_default();
        (
            status.code().unwrap_or(-1),
            serde_json::from_str(&stats).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits for the VM to exit on its own; returns the exit code, the stats and the serial
    /// console (read before drop removes the files).
    pub fn wait_exit(mut self, timeout: Duration) -> (i32, serde_json::Value, String) {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < timeout,
                "the VM did not exit; serial:\n{}",
                self.serial_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.child = None;
        let stats = std::fs::read_to_string(&self.stats).unwrap_or_default();
        (
            code,
            serde_json::from_str(&stats).unwrap_or(serde_json::Value::Null),
            self.serial_text(),
        )
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of our own unreaped child.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.serial);
        let _ = std::fs::remove_file(&self.stats);
    }
}

pub fn testbed(backend: &str, tag: &str) -> Testbed {
    Testbed::new(TestbedConfig {
        name_prefix: tag.into(),
        with_bridge: backend == "tap",
        ..Default::default()
    })
    .expect("testbed (needs root and iproute2)")
}

pub fn guest_args(program: &str, poll: bool) -> Vec<String> {
    guest_args_at(program, poll, Testbed::VM_IP)
}

/// The test guest's arguments with its address `ip` (in the testbed's prefix).
pub fn guest_args_at(program: &str, poll: bool, ip: std::net::Ipv4Addr) -> Vec<String> {
    let program: GuestProgram = clap::ValueEnum::from_str(program, false).expect("a guest program");
    let line = GuestCmdline {
        mode: if poll {
            GuestMode::Poll
        } else {
            GuestMode::Irq
        },
        ip: Some(Ipv4Cidr {
            addr: ip,
            prefix_len: Testbed::PREFIX_LEN,
        }),
        ..GuestCmdline::new(program)
    };
    let elf = super::test_guest_elf();
    let mut args = vec![
        "--guest-elf".to_string(),
        elf.to_string_lossy().into_owned(),
    ];
    args.extend(line.run_args());
    args
}
