//! Boots hand-made PVH guests in the VMM: serial output and the debug-exit status, PCI config
//! mechanism #1 finding the host bridge and the NIC at 00:03.0 with its pre-assigned resources,
//! both BAR windows reaching the NIC model, a triple fault stopping the VM, and the loader's errors.

mod common;

use common::{pvh_elf, temp_file, Captured, Code, FakeNic, FAKE_DEVICE, FAKE_VENDOR};
use lancet::vmm::boot::BootSpec;
use lancet::vmm::nic::NicModel;
use lancet::vmm::{run_vm, HiddenFeatures, IoTuning, NetConfig, RunReport, VmConfig, VmOutcome};

fn config(kernel: std::path::PathBuf, serial: Captured, with_nic: bool) -> VmConfig {
    VmConfig {
        mem_bytes: 64 << 20,
        cpus: 1,
        boot: BootSpec {
            kernel,
            initrd: None,
            cmdline: "prog=test".into(),
            cpus: 1,
        },
        hidden: HiddenFeatures::parse(lancet::vmm::DEFAULT_HIDDEN).unwrap(),
        serial_out: Box::new(serial),
        net: with_nic.then(|| NetConfig {
            make_nic: Box::new(|irq| Box::new(FakeNic::new(irq)) as Box<dyn NicModel>),
            backend: None,
            tx_inline: true,
            io: IoTuning::default(),
        }),
        pin_vcpu: None,
        pin_io: None,
        handle_signals: false,
        timeout: Some(std::time::Duration::from_secs(30)),
        stop_check: None,
    }
}

fn boot(name: &str, code: &Code, with_nic: bool) -> (RunReport, String) {
    let image = temp_file(name, &pvh_elf(&code.0, true));
    let serial = Captured::default();
    let report = run_vm(config(image.clone(), serial.clone(), with_nic)).expect("VM runs");
    std::fs::remove_file(image).unwrap();
    (report, serial.text())
}

#[test]
fn guest_prints_on_serial_and_exits_with_its_status() {
    let mut code = Code::default();
    code.print("hello from the guest\n").exit(7);
    let (report, serial) = boot("hello", &code, false);
    assert_eq!(serial, "hello from the guest\n");
    assert_eq!(report.outcome, VmOutcome::GuestExit(7));
    assert_eq!(report.outcome.exit_status(), 7);
    assert!(report.exits.snapshot().pio_serial >= 21);
}

#[test]
fn pvh_start_info_is_passed_in_ebx() {
    // ebx -> hvm_start_info: check the magic through `mov eax, [ebx]` (8b 03).
    let mut code = Code::default();
    code.0.extend_from_slice(&[0x8b, 0x03]);
    code.expect_eax(0x336e_c578, 1).exit(0);
    let (report, _) = boot("startinfo", &code, false);
    assert_eq!(report.outcome, VmOutcome::GuestExit(0));
}

#[test]
fn pci_scan_finds_host_bridge_and_nic_with_assigned_resources() {
    let mut code = Code::default();
    code.out32(0xcf8, Code::pci_address(0, 0))
        .in32(0xcfc)
        .expect_eax(0x1237_8086, 1)
        .out32(0xcf8, Code::pci_address(3, 0))
        .in32(0xcfc)
        .expect_eax(u32::from(FAKE_DEVICE) << 16 | u32::from(FAKE_VENDOR), 2)
        .in16(0xcfe)
        .expect_ax(FAKE_DEVICE, 3)
        .out32(0xcf8, Code::pci_address(3, 0x10))
        .in32(0xcfc)
        .expect_eax(0xc001, 4)
        .out32(0xcf8, Code::pci_address(3, 0x14))
        .in32(0xcfc)
        .expect_eax(0xfebf_0000, 5)
        .out32(0xcf8, Code::pci_address(3, 0x3c))
        .in8(0xcfc)
        .expect_al(11, 6)
        .in8(0xcfd)
        .expect_al(1, 7)
        .out32(0xcf8, Code::pci_address(3, 0x04))
        .in16(0xcfc)
        .expect_ax(0x7, 8)
        // An empty slot reads as all ones.
        .out32(0xcf8, Code::pci_address(7, 0))
        .in32(0xcfc)
        .expect_eax(0xffff_ffff, 9)
        // Write through MMIO BAR1, read back through I/O BAR0.
        .mov_eax(0xa5a5_5a5a)
        .store32(0xfebf_0010)
        .in32(0xc010)
        .expect_eax(0xa5a5_5a5a, 10)
        .exit(0);
    let (report, _) = boot("pci", &code, true);
    assert_eq!(
        report.outcome,
        VmOutcome::GuestExit(0),
        "check failed in the guest"
    );
    let exits = report.exits.snapshot();
    assert_eq!(exits.mmio_nic, 1);
    assert_eq!(exits.pio_nic, 1);
}

#[test]
fn guest_can_move_the_io_bar() {
    let mut code = Code::default();
    code.out32(0xcf8, Code::pci_address(3, 0x10))
        .out32(0xcfc, 0xd001)
        .out32(0xd004, 0x0102_0304)
        .in32(0xd004)
        .expect_eax(0x0102_0304, 1)
        // The old window no longer decodes.
        .in32(0xc004)
        .expect_eax(0xffff_ffff, 2)
        .exit(0);
    let (report, _) = boot("movebar", &code, true);
    assert_eq!(report.outcome, VmOutcome::GuestExit(0));
}

#[test]
fn triple_fault_stops_the_vm_with_a_message() {
    let mut code = Code::default();
    code.print("x").ud2();
    let (report, serial) = boot("ud2", &code, false);
    assert_eq!(serial, "x");
    assert_ne!(report.outcome.exit_status(), 0);
    assert!(
        matches!(report.outcome, VmOutcome::TripleFault { .. }),
        "{:?}",
        report.outcome
    );
    assert!(!report.outcome.to_string().is_empty());
}

#[test]
fn loader_errors_say_what_is_wrong() {
    let serial = Captured::default();
    let missing = std::env::temp_dir().join("lancet-test-no-such-kernel");
    let err = run_vm(config(missing, serial.clone(), false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");

    let junk = temp_file("junk", &[0x55; 4096]);
    let err = run_vm(config(junk.clone(), serial.clone(), false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither a bzImage"), "{err}");
    std::fs::remove_file(junk).unwrap();

    let mut code = Code::default();
    code.exit(0);
    let no_note = temp_file("nonote", &pvh_elf(&code.0, false));
    let err = run_vm(config(no_note.clone(), serial, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("PVH"), "{err}");
    std::fs::remove_file(no_note).unwrap();
}

/// Guest code that sets bit i of the exit status when feature i of `features` is visible.
fn probe_features(features: &[(u32, bool, u32)]) -> Code {
    let mut code = Code::default();
    code.0.extend_from_slice(&[0x31, 0xf6]); // xor esi, esi
    for (i, &(leaf, in_ebx, bit)) in features.iter().enumerate() {
        code.mov_eax(leaf);
        code.0.extend_from_slice(&[0x31, 0xc9, 0x0f, 0xa2]); // xor ecx, ecx; cpuid
        code.0
            .extend_from_slice(&[0xf7, if in_ebx { 0xc3 } else { 0xc1 }]); // test ebx/ecx, imm32
        code.0.extend_from_slice(&(1u32 << bit).to_le_bytes());
        code.0.extend_from_slice(&[0x74, 0x03, 0x83, 0xce, 1 << i]); // jz +3; or esi, 1 << i
    }
    code.0.extend_from_slice(&[0x89, 0xf0]); // mov eax, esi
    code.mov_dx(0x501);
    code.0.extend_from_slice(&[0xee, 0xf4]); // out dx, al; hlt
    code
}

/// Runs the feature probe with `--cpuid-hide hide`; returns the guest's bitmask.
fn visible_features(hide: &str, features: &[(u32, bool, u32)]) -> u8 {
    let image = temp_file(
        &format!("cpuid{}", hide.len()),
        &pvh_elf(&probe_features(features).0, true),
    );
    let mut cfg = config(image.clone(), Captured::default(), false);
    cfg.hidden = HiddenFeatures::parse(hide).unwrap();
    let report = run_vm(cfg).unwrap();
    std::fs::remove_file(image).unwrap();
    match report.outcome {
        VmOutcome::GuestExit(mask) => mask,
        other => panic!("{other:?}"),
    }
}

#[test]
fn hidden_cpu_features_are_invisible_to_the_guest() {
    // cx16 and x2apic (leaf 1 ECX bits 13, 21). This machine's nested KVM honours KVM_SET_CPUID2 for
    // these; it does not for xsave/popcnt/smep/smap/fsgsbase (its ring-0 emulator answers CPUID
    // itself), which is why Linux guests also get `noxsave clearcpuid=...` on their command line.
    let features = [(1, false, 13), (1, false, 21)];
    assert_eq!(visible_features("", &features), 0b11);
    assert_eq!(visible_features("cx16", &features), 0b10);
    assert_eq!(visible_features("cx16,x2apic", &features), 0b00);
}

#[test]
fn second_vcpu_waiting_for_sipi_does_not_block_shutdown() {
    let mut code = Code::default();
    code.print("smp\n").exit(3);
    let image = temp_file("smp", &pvh_elf(&code.0, true));
    let serial = Captured::default();
    let mut cfg = config(image.clone(), serial.clone(), true);
    cfg.cpus = 2;
    let report = run_vm(cfg).unwrap();
    std::fs::remove_file(image).unwrap();
    assert_eq!(report.outcome, VmOutcome::GuestExit(3));
    assert_eq!(serial.text(), "smp\n");
}

#[test]
fn threads_can_be_pinned_and_bad_cpus_are_refused() {
    let mut code = Code::default();
    code.exit(0);
    let image = temp_file("pin", &pvh_elf(&code.0, true));
    let mut cfg = config(image.clone(), Captured::default(), true);
    cfg.pin_vcpu = Some(0);
    cfg.pin_io = Some(0);
    assert_eq!(run_vm(cfg).unwrap().outcome, VmOutcome::GuestExit(0));
    let mut cfg = config(image.clone(), Captured::default(), true);
    cfg.pin_io = Some(4096);
    let err = run_vm(cfg).unwrap_err().to_string();
    std::fs::remove_file(image).unwrap();
    assert!(err.contains("CPU 4096") && err.contains("I/O"), "{err}");
}
