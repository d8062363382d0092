//! What the peer end of a testbed sees: a test frame arriving unchanged.

use std::time::Duration;

use lancet::tools::testbed::{frames, RawSocket};

/// The next test frame (one with a sequence number) `peer` sees within `wait` is `frame`, byte for
/// byte; `what` names the frame in the failure.
pub fn assert_peer_receives(peer: &RawSocket, wait: Duration, frame: &[u8], what: &str) {
    let got = peer
        .recv_matching(wait, |f| frames::test_seq(f).is_some())
        .unwrap();
    assert_eq!(
        got.as_deref(),
        Some(frame),
        "{what} reaches the peer unchanged"
    );
}
