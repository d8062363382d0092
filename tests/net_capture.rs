//! The files guest traffic and output go to: the pcap capture and the serial log stop at their
//! cap (counted), are created mode 0600, and are never created through a symlink.

use std::{
    io::Write,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
};

use lancet::net::pcap::{create_private, Direction, PcapWriter};
use lancet::vmm::serial::CappedWriter;

/// A private temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lancet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pcap_stops_at_its_cap_and_counts_what_it_did_not_capture() {
    let dir = TempDir::new("pcap-cap");
    let path = dir.0.join("vm.pcap");
    let cap = 10_000u64;
    let mut pcap = PcapWriter::create_capped(&path, cap).unwrap();
    let frame = [0xa5u8; 1000];
    for _ in 0..50 {
        pcap.record(Direction::Tx, &frame);
    }
    pcap.flush();
    let size = std::fs::metadata(&path).unwrap().len();
    // 24-byte header + 9 records of 16 + 1000 bytes fit; the 10th would not.
    assert_eq!(size, 24 + 9 * 1016);
    assert!(size <= cap);
    assert_eq!(pcap.tx_frames(), 9);
    assert_eq!(pcap.not_captured(), 41);
    assert_eq!(pcap.errors(), 0);
}

#[test]
fn capture_and_log_files_are_private_and_never_follow_a_symlink() {
    let dir = TempDir::new("pcap-mode");
    let path = dir.0.join("vm.pcap");
    // An existing file with a wide mode is narrowed too.
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(PcapWriter::create(&path).unwrap());
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    let fresh = dir.0.join("serial.log");
    drop(create_private(&fresh).unwrap());
    assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o600);
    // A symlink planted at the path: refused, the target untouched.
    let target = dir.0.join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.0.join("link.pcap");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = PcapWriter::create(&link).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn serial_log_stops_at_its_cap_and_counts_the_rest() {
    let dir = TempDir::new("serial-cap");
    let path = dir.0.join("serial.log");
    let mut log = CappedWriter::new(create_private(&path).unwrap(), 4096);
    let drops = log.drops();
    let line = [b'x'; 100];
    for _ in 0..100 {
        // The guest's console never sees an error.
        log.write_all(&line).unwrap();
    }
    log.flush().unwrap();
    drop(log);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    assert_eq!(drops.bytes(), 100 * 100 - 4096);
}
