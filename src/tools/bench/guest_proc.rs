//! A VM process running the lancet test guest (QEMU or `lancet run`): started with its serial
//! console on a pipe, ready when the guest prints its `ready` line, stopped by PID (SIGTERM, then
//! SIGKILL), console lines kept (bounded) for progress and error messages.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::BenchError;

/// Console line prefixes of the test guest ABI.
const READY_LINE: &str = "lancet-guest: ready";
const ERROR_LINE: &str = "lancet-guest: error";
/// Console lines kept per process (a chatty guest cannot grow the bench without limit).
const MAX_CONSOLE_LINES: usize = 10_000;
/// Longest console line kept whole.
const MAX_LINE_BYTES: u64 = 4096;
/// How often the start-up wait re-checks its deadline.
const READY_POLL: Duration = Duration::from_millis(100);

/// A started VM process whose guest said it is ready.
pub struct GuestProcess {
    path: &'static str,
    child: Option<Child>,
    console: Arc<Mutex<Vec<String>>>,
}

fn spawn_console_reader(
    stream: impl std::io::Read + Send + 'static,
    console: Arc<Mutex<Vec<String>>>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            // Bytes, not `lines()`: a guest printing invalid UTF-8 must not end the reading.
            // Bounded: an endless line is cut into pieces rather than growing without limit.
            let mut bounded = std::io::Read::take(&mut reader, MAX_LINE_BYTES);
            match bounded.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            if line.contains(READY_LINE) {
                let _ = ready.send(Ok(()));
            } else if line.contains(ERROR_LINE) {
                let _ = ready.send(Err(line.clone()));
            }
            if let Ok(mut lines) = console.lock() {
                if lines.len() < MAX_CONSOLE_LINES {
                    lines.push(line);
                }
            }
        }
    });
}

impl GuestProcess {
    /// Start `command` (stdout and stderr are captured) and wait up to `boot_timeout` for the
    /// guest's ready line. On failure the process is stopped and the error quotes the console.
    pub fn start(
        path: &'static str,
        mut command: Command,
        boot_timeout: Duration,
    ) -> Result<Self, BenchError> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let program = format!("{:?}", command.get_program());
        let mut child = command.spawn().map_err(|e| BenchError::Path {
            path: path.into(),
            reason: format!("cannot start {program}: {e}"),
        })?;
        let console = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            spawn_console_reader(out, console.clone(), ready_tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_console_reader(err, console.clone(), ready_tx);
        }
        let mut process = GuestProcess {
            path,
            child: Some(child),
            console,
        };
        let deadline = Instant::now() + boot_timeout;
        loop {
            match ready_rx.recv_timeout(READY_POLL) {
                Ok(Ok(())) => return Ok(process),
                Ok(Err(line)) => return Err(process.failed(&format!("the guest reported: {line}"))),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(process.failed("the VM process exited before the guest was ready"))
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    return Err(
                        process.failed(&format!("no `{READY_LINE}` line within {boot_timeout:?}"))
                    )
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Stop the process: SIGTERM (a VMM writes its statistics on it), SIGKILL after `grace`.
    /// Returns true if it had already exited by itself.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The VM process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last console lines, joined, for error messages.
    pub fn console_tail(&self) -> String {
        self.console
            .lock()
            .map(|lines| {
                let start = lines.len().saturating_sub(5);
                lines[start..].join(" | ")
            })
            .unwrap_or_default()
    }

    /// The number after `prefix` in the last console line that has it (e.g. `blast sent=`).
    pub fn last_number_after(&self, prefix: &str) -> Option<u64> {
        let lines = self.console.lock().ok()?;
        lines
            .iter()
            .rev()
            .find_map(|l| l.split(prefix).nth(1))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
    }

    /// Stop the process and describe the failure with the console's last lines.
    pub fn failed(&mut self, what: &str) -> BenchError {
        self.stop(Duration::from_secs(1));
        BenchError::Path {
            path: self.path.into(),
            reason: format!("{what}; console: {}", self.console_tail()),
        }
    }
}

impl Drop for GuestProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}
