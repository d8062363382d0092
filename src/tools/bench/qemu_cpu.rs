//! Which `-cpu` model QEMU can start with on this host, decided by probing, not assumed.
//!
//! Some KVM hosts (nested hypervisors among them) refuse MSRs that `-cpu host` asks QEMU to set,
//! e.g. IA32_ARCH_CAPABILITIES (MSR 0x10a): QEMU then aborts at start with
//! `failed to set MSR 0x10a to 0x69`. The probe starts QEMU once per candidate, paused (`-S`) with
//! its monitor on a pipe, and answers `quit`: QEMU has written every vCPU register by the time it
//! reads its monitor, so exit status 0 means the model is usable. Only that exact refusal moves on
//! to the next candidate; any other failure (no KVM, a broken binary) is reported as it is.
//!
//! Every candidate carries the same feature hiding as lancet's own VM (`HiddenFeatures`, applied
//! there with KVM_SET_CPUID2), so the QEMU baseline runs the guest on the same CPU view.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::vmm::{HiddenFeatures, DEFAULT_HIDDEN};

/// What QEMU prints when the host's KVM refuses an MSR the CPU model needs.
pub const MSR_REFUSED: &str = "failed to set MSR";
/// Base CPU models in order of preference: the host's own CPU, the host's CPU without
/// IA32_ARCH_CAPABILITIES (refused by some nested KVMs), and QEMU's generic 64-bit model.
pub const BASE_MODELS: [&str; 3] = ["host", "host,-arch-capabilities", "qemu64"];
/// How long one probe start may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of QEMU's output a failure message quotes.
const QUOTED_OUTPUT_BYTES: usize = 400;

/// Why no CPU model could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuProbeError {
    #[error("cannot start {binary}: {reason}")]
    Spawn { binary: String, reason: String },
    #[error("QEMU did not start with -cpu {cpu} within {PROBE_TIMEOUT:?}")]
    Timeout { cpu: String },
    #[error("QEMU cannot start with -cpu {cpu} (exit {status}): {output}")]
    Failed {
        cpu: String,
        status: String,
        output: String,
    },
    #[error("this host's KVM refuses an MSR of every CPU model tried ({tried}): {output}")]
    AllRefused { tried: String, output: String },
}

/// The `-cpu` candidates for the given hidden features, most preferred first
/// (e.g. `host,-cx16,-xsave,...`).
pub fn cpu_candidates(hidden: &HiddenFeatures) -> Vec<String> {
    let hide: String = hidden.names().map(|name| format!(",-{name}")).collect();
    BASE_MODELS
        .iter()
        .map(|base| format!("{base}{hide}"))
        .collect()
}

/// The candidates for lancet's default feature hiding (what `lancet run` applies by default).
pub fn default_cpu_candidates() -> Vec<String> {
    let hidden = HiddenFeatures::parse(DEFAULT_HIDDEN).unwrap_or_default();
    cpu_candidates(&hidden)
}

/// Returns the first candidate QEMU (`binary`) starts with under KVM. A candidate refused with
/// [`MSR_REFUSED`] falls through to the next; any other failure ends the probe with its output.
pub fn probe_cpu_model(binary: &Path, candidates: &[String]) -> Result<String, CpuProbeError> {
    let mut last_refusal = String::new();
    for cpu in candidates {
        match start_paused(binary, cpu)? {
            StartOutcome::Started => return Ok(cpu.clone()),
            StartOutcome::Refused(output) => {
                tracing::debug!(cpu, "QEMU refused this CPU model: {output}");
                last_refusal = output;
            }
        }
    }
    Err(CpuProbeError::AllRefused {
        tried: candidates.join(" | "),
        output: last_refusal,
    })
}

/// The CPU model for QEMU in PATH with lancet's default hiding, probed once per process.
pub fn qemu_cpu_model() -> Result<String, CpuProbeError> {
    static CHOSEN: OnceLock<Result<String, CpuProbeError>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            let binary =
                super::qemu_path::find_in_path(super::qemu_path::QEMU_BINARY).ok_or_else(|| {
                    CpuProbeError::Spawn {
                        binary: super::qemu_path::QEMU_BINARY.into(),
                        reason: "not found in PATH: apt-get install qemu-system-x86".into(),
                    }
                })?;
            probe_cpu_model(&binary, &default_cpu_candidates())
        })
        .clone()
}

enum StartOutcome {
    Started,
    Refused(String),
}

/// Starts QEMU paused with `-cpu cpu`, tells its monitor to quit, and reads how it ended.
fn start_paused(binary: &Path, cpu: &str) -> Result<StartOutcome, CpuProbeError> {
    let mut child = Command::new(binary)
        .args(["-enable-kvm", "-M", "pc", "-cpu", cpu, "-m", "16"])
        .args(["-display", "none", "-nodefaults", "-S", "-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CpuProbeError::Spawn {
            binary: binary.display().to_string(),
            reason: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // QEMU may already have died (the refusal case): a broken pipe here is expected.
        let _ = stdin.write_all(b"quit\n");
    }
    let mut stderr = child.stderr.take();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        if let Some(err) = stderr.as_mut() {
            let _ = err.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CpuProbeError::Timeout { cpu: cpu.into() });
            }
        }
    };
    let output = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(StartOutcome::Started);
    }
    let quoted = quote(&output);
    if output.contains(MSR_REFUSED) {
        return Ok(StartOutcome::Refused(quoted));
    }
    Err(CpuProbeError::Failed {
        cpu: cpu.into(),
        status: status.to_string(),
        output: quoted,
    })
}

/// The first lines of QEMU's output, bounded, on one line.
fn quote(output: &str) -> String {
    let joined = output.lines().collect::<Vec<_>>().join(" | ");
    match joined.char_indices().nth(QUOTED_OUTPUT_BYTES) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_start_with_host_and_carry_lancets_feature_hiding() {
        let hidden = HiddenFeatures::parse("cx16,xsave").unwrap();
        assert_eq!(
            cpu_candidates(&hidden),
            vec![
                "host,-cx16,-xsave".to_string(),
                "host,-arch-capabilities,-cx16,-xsave".to_string(),
                "qemu64,-cx16,-xsave".to_string(),
            ]
        );
        for cpu in default_cpu_candidates() {
            for name in DEFAULT_HIDDEN.split(',') {
                assert!(cpu.contains(&format!(",-{name}")), "{cpu} lacks -{name}");
            }
        }
    }
}
