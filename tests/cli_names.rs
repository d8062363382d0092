//! Names the CLI turns into paths are validated before any filesystem use: an interface given to
//! `lancet nic|filter|stats` cannot be a path out of /sys/fs/bpf/lancet, and `--vm-name` cannot
//! leave /run/lancet (issue 11, item 9).

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::victim::Victim;

fn lancet(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lancet"))
        .args(args)
        .output()
        .expect("run lancet");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lancet run` of the echo guest from a guest ELF that does not exist, with `extra` options.
fn run_echo<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let run = [
        "run",
        "--guest",
        "echo",
        "--guest-elf",
        "/nonexistent/guest",
    ];
    [&run[..], extra].concat()
}

#[test]
fn nic_detach_of_a_path_is_refused_and_removes_nothing() {
    let victim = Victim::new();
    let path = victim.dir.to_str().unwrap();
    let (code, stderr) = lancet(&["nic", "detach", path]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("not a valid interface name") && stderr.contains("'/'"),
        "{stderr}"
    );
    assert!(victim.intact(), "lancet nic detach removed files of {path}");
}

#[test]
fn filter_and_stats_refuse_paths_as_nics() {
    for args in [
        &["filter", "list", "../../../tmp"][..],
        &["filter", "flush", "/tmp"],
        &["stats", "/etc"],
        &["nic", "status", ".."],
        &["nic", "attach", "a-name-longer-than-15"],
    ] {
        let (code, stderr) = lancet(args);
        assert_ne!(code, 0, "{args:?}: {stderr}");
        assert!(
            stderr.contains("not a valid interface name"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn vm_name_escaping_run_lancet_is_refused_before_anything_runs() {
    let escape = format!("ltx{}", std::process::id());
    let name = format!("../{escape}");
    let (code, stderr) = lancet(&run_echo(&["--nic", "lt-nonexistent", "--vm-name", &name]));
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("not a valid VM name") && stderr.contains(&name),
        "{stderr}"
    );
    // Nothing was written next to /run/lancet.
    assert!(!PathBuf::from(format!("/run/{escape}.json")).exists());
    assert!(!PathBuf::from(format!("/run/lancet/{escape}.json")).exists());
}

#[test]
fn vm_names_too_long_for_the_map_key_are_refused() {
    let (code, stderr) = lancet(&run_echo(&["--vm-name", "sixteen-bytes-xx"]));
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("not a valid VM name") && stderr.contains("longer than 15"),
        "{stderr}"
    );
}

#[test]
fn netns_names_cannot_be_paths_out_of_run_netns() {
    // /var/run/netns/../../proc/1/ns/net would be the initial namespace.
    for args in [
        &run_echo(&["--netns", "../../proc/1/ns/net"])[..],
        &["nic", "attach", "lt-nic", "--netns", "../../proc/1/ns/net"],
        &["nic", "status", "lt-nic", "--netns", ".."],
    ] {
        let (code, stderr) = lancet(args);
        assert_ne!(code, 0, "{args:?}: {stderr}");
        assert!(
            stderr.contains("not a valid network namespace name"),
            "{args:?}: {stderr}"
        );
    }
}
