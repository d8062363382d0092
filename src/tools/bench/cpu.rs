//! CPU time (what utime + stime count, but to the nanosecond: the scheduler's run time) of a whole
//! process (all its threads, the exited ones included: its CPU-time clock,
//! `clock_getcpuclockid`) and of one thread (`/proc/PID/task/TID/schedstat`), and finding a
//! thread by name. utime + stime from `/proc/.../stat` (10 ms ticks) is the fallback where those
//! cannot be read. The bench samples these before and after a phase for its CPU-per-work figures
//! (`host_cpu_ms_per_mb`, `io_cpu_ns_per_frame`), so they count CPU time, not wall time; a
//! quick TCP transfer takes tens of milliseconds, too short for ticks.

use std::time::Duration;

use super::BenchError;

/// Fields of /proc/.../stat after the `(comm)` field: index of utime (field 14 of proc(5)) and
/// stime (field 15), counting the state (field 3) as 0.
const STAT_UTIME_AFTER_COMM: usize = 11;
const STAT_STIME_AFTER_COMM: usize = 12;
/// Clock ticks per second when sysconf cannot tell (the Linux default).
const DEFAULT_CLK_TCK: u64 = 100;

/// utime + stime in clock ticks from the text of a /proc stat file (`comm` may hold spaces and
/// parentheses: the fields start after the last `)`).
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(STAT_UTIME_AFTER_COMM)?.parse().ok()?;
    let stime: u64 = fields.get(STAT_STIME_AFTER_COMM)?.parse().ok()?;
    Some(utime + stime)
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(tck)
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(DEFAULT_CLK_TCK)
}

fn read_stat(file: &str) -> Result<Duration, BenchError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| BenchError::Io(format!("reading {file}: {e} (has the task exited?)")))?;
    let ticks = parse_stat_ticks(&text)
        .ok_or_else(|| BenchError::Io(format!("{file}: no utime/stime fields")))?;
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / clk_tck(),
    ))
}

/// The run time (ns, first field) of a schedstat file.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// CPU time of process `pid`, all threads (live and exited).
pub fn process_cpu(pid: u32) -> Result<Duration, BenchError> {
    let Ok(raw_pid) = libc::pid_t::try_from(pid) else {
        return Err(BenchError::Io(format!("pid {pid} out of range")));
    };
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid writes one clockid_t through the valid pointer it is given.
    let got = unsafe { libc::clock_getcpuclockid(raw_pid, &mut clock) };
    if got == 0 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through the valid pointer it is given.
        if unsafe { libc::clock_gettime(clock, &mut ts) } == 0 {
            let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
            let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
            return Ok(Duration::new(secs, nanos));
        }
    }
    read_stat(&format!("/proc/{pid}/stat"))
}

/// CPU time of thread `tid` of process `pid`.
pub fn thread_cpu(pid: u32, tid: u32) -> Result<Duration, BenchError> {
    let schedstat = format!("/proc/{pid}/task/{tid}/schedstat");
    match std::fs::read_to_string(&schedstat)
        .ok()
        .as_deref()
        .and_then(parse_schedstat_ns)
    {
        Some(ns) => Ok(Duration::from_nanos(ns)),
        None => read_stat(&format!("/proc/{pid}/task/{tid}/stat")),
    }
}

/// The calling thread's id (for [`thread_cpu`] with this process's pid).
pub fn current_tid() -> u32 {
    nix::unistd::gettid().as_raw().unsigned_abs()
}

/// The id of the thread of `pid` whose name (`comm`) is `name`.
pub fn find_thread(pid: u32, name: &str) -> Result<u32, BenchError> {
    let dir = format!("/proc/{pid}/task");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| BenchError::Io(format!("listing {dir}: {e}")))?;
    for entry in entries.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                return Ok(tid);
            }
        }
    }
    Err(BenchError::Io(format!(
        "process {pid} has no thread named {name:?}"
    )))
}

/// CPU consumed between two samples, as a share of work: `(after - before) / work`, in `unit`s of
/// time per item. `None` when there was no work.
pub fn per_unit(before: Duration, after: Duration, work: f64, unit: Duration) -> Option<f64> {
    (work > 0.0).then(|| after.saturating_sub(before).as_secs_f64() / unit.as_secs_f64() / work)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_are_utime_plus_stime_after_a_comm_with_spaces() {
        // proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let line = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(line), Some(12));
        assert_eq!(parse_stat_ticks("42 (x) S 1"), None);
        assert_eq!(
            parse_schedstat_ns("310019567 42831438 66\n"),
            Some(310_019_567)
        );
    }

    #[test]
    fn own_thread_is_found_and_burns_cpu() {
        let pid = std::process::id();
        let tid = current_tid();
        let before = thread_cpu(pid, tid).unwrap();
        // Burn CPU until the thread's clock moves (bounded): it must count this thread's work.
        let start = std::time::Instant::now();
        let mut after = before;
        let mut x = 0u64;
        while after <= before && start.elapsed() < Duration::from_secs(5) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            after = thread_cpu(pid, tid).unwrap();
        }
        assert!(after > before, "{before:?} -> {after:?}");
        assert!(process_cpu(pid).unwrap() >= after);
        assert!(find_thread(pid, "no-such-thread-name").is_err());
    }
}
