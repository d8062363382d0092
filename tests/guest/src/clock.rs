//! Time from the TSC: the TCP stack's clock (microseconds since start) and the millisecond
//! figures on the console, scaled by the TSC frequency the VMM passes as `tsc_khz=`.

/// The TSC frequency assumed when the command line has no `tsc_khz=` (2 GHz; the ready line then
/// says `tsc_khz=assumed`).
pub const DEFAULT_TSC_KHZ: u32 = 2_000_000;

/// Converts TSC cycle counts to wall-clock time at a fixed frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscClock {
    /// TSC when the clock was started (time 0).
    start: u64,
    /// Cycles per millisecond (never 0).
    khz: u32,
}

impl TscClock {
    /// A clock whose time 0 is the TSC value `start`; `khz` 0 is taken as [`DEFAULT_TSC_KHZ`].
    pub fn new(start: u64, khz: u32) -> Self {
        TscClock {
            start,
            khz: if khz == 0 { DEFAULT_TSC_KHZ } else { khz },
        }
    }

    pub fn khz(&self) -> u32 {
        self.khz
    }

    /// Microseconds from the start to the TSC value `now` (0 if `now` is before the start).
    pub fn micros(&self, now: u64) -> i64 {
        let cycles = now.saturating_sub(self.start);
        i64::try_from(cycles_to_micros(cycles, self.khz)).unwrap_or(i64::MAX)
    }
}

/// `cycles` at `khz` kHz in microseconds (rounded down; `khz` 0 gives 0).
pub fn cycles_to_micros(cycles: u64, khz: u32) -> u64 {
    if khz == 0 {
        return 0;
    }
    let micros = u128::from(cycles) * 1000 / u128::from(khz);
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// `cycles` at `khz` kHz in milliseconds (rounded down; `khz` 0 gives 0).
pub fn cycles_to_millis(cycles: u64, khz: u32) -> u64 {
    cycles.checked_div(u64::from(khz)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_cycles_at_the_given_frequency() {
        // 2.5 GHz: 2_500_000 cycles per ms.
        assert_eq!(cycles_to_millis(2_500_000, 2_500_000), 1);
        assert_eq!(cycles_to_millis(2_499_999, 2_500_000), 0);
        assert_eq!(cycles_to_micros(2_500, 2_500_000), 1);
        assert_eq!(cycles_to_micros(7_500_000_000, 2_500_000), 3_000_000);
        assert_eq!(
            cycles_to_micros(u64::MAX, 1),
            u64::MAX,
            "saturates, no overflow"
        );
        assert_eq!((cycles_to_micros(5, 0), cycles_to_millis(5, 0)), (0, 0));
    }

    #[test]
    fn clock_counts_from_its_start_and_defaults_the_frequency() {
        let clock = TscClock::new(1_000_000, 1_000_000);
        assert_eq!(clock.micros(1_000_000), 0);
        assert_eq!(clock.micros(3_000_000), 2_000);
        assert_eq!(clock.micros(10), 0, "a TSC before the start reads as 0");
        let assumed = TscClock::new(0, 0);
        assert_eq!(assumed.khz(), DEFAULT_TSC_KHZ);
        assert_eq!(assumed.micros(2_000_000), 1_000);
    }
}
