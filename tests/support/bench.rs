//! Bench test helpers: a frame counter on the peer end of a [`VethPairNetns`].

use std::time::Duration;

use lancet::tools::bench::gen::{spawn_counter, CountConfig, CounterHandle, FrameFilter};
use lancet::tools::bench::netns::VethPairNetns;

/// How long a counter runs at most.
const COUNTER_MAX_DURATION: Duration = Duration::from_secs(20);

/// A counter on end `b` of `pair` counting frames that match `filter`; it stops after `expected`
/// frames (if given), [`COUNTER_MAX_DURATION`], or `idle` without a frame.
pub fn counter_at_b(
    pair: &VethPairNetns,
    filter: FrameFilter,
    expected: Option<u64>,
    idle: Duration,
) -> CounterHandle {
    spawn_counter(
        &pair.b.netns,
        &pair.b.ifname,
        None,
        CountConfig {
            filter,
            expected,
            max_duration: COUNTER_MAX_DURATION,
            idle_timeout: idle,
            max_active: None,
        },
    )
    .unwrap()
}
