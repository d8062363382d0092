//! The Intel MultiProcessor Specification 1.4 table (floating pointer + configuration table) at
//! 0x9fc00, where Linux scans for it: the CPUs, the PCI (0) and ISA (1) buses, the IOAPIC, ISA IRQs
//! identity-mapped to IOAPIC pins, and the NIC's INTA (PCI 00:03.0) on pin 11, level-triggered.

use vm_memory::GuestMemoryMmap;

use super::{write_bytes, EBDA_START};
use crate::vmm::error::Result;
use crate::vmm::pci::NIC_DEVICE;

/// GSI / IOAPIC pin / PIC IRQ of the NIC's INTA.
pub const NIC_IRQ: u8 = 11;
/// Where the local APIC and IOAPIC live.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;

const MP_SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const BUS_ID_PCI: u8 = 0;
const BUS_ID_ISA: u8 = 1;
// Entry types.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
// Interrupt types.
const INT_VECTORED: u8 = 0;
const INT_NMI: u8 = 1;
const INT_EXTINT: u8 = 3;
/// irqflag: conforms to the bus (ISA: edge, active high).
const IRQFLAG_CONFORMS: u16 = 0;
/// irqflag: active high (bits 1:0 = 01), level triggered (bits 3:2 = 11). KVM's IOAPIC takes the
/// line level as the logical assertion, so the NIC's line is described as active high.
const IRQFLAG_LEVEL_HIGH: u16 = 0b1101;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// CPU signature (family 6) and feature flags (FPU, APIC) as firmware reports them.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
const IOAPIC_ENABLED: u8 = 1;
/// ISA IRQ 2 is the PIC cascade; IRQ 11 belongs to the NIC.
const ISA_IRQS: u8 = 16;
const FLOATING_POINTER_LEN: usize = 16;
const CONFIG_HEADER_LEN: usize = 44;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Builds the configuration table (header + entries) for `cpus` processors, located at `addr`.
fn config_table(cpus: u8) -> Vec<u8> {
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    for (id, name) in [(BUS_ID_PCI, b"PCI   "), (BUS_ID_ISA, b"ISA   ")] {
        entries.extend_from_slice(&[ENTRY_BUS, id]);
        entries.extend_from_slice(name);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    let mut io_interrupt = |kind: u8, flags: u16, bus: u8, bus_irq: u8, pin: u8| {
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, kind]);
        entries.extend_from_slice(&flags.to_le_bytes());
        entries.extend_from_slice(&[bus, bus_irq, ioapic_id, pin]);
        count += 1;
    };
    for irq in (0..ISA_IRQS).filter(|&i| i != 2 && i != NIC_IRQ) {
        io_interrupt(INT_VECTORED, IRQFLAG_CONFORMS, BUS_ID_ISA, irq, irq);
    }
    // PCI source bus IRQ: device number in bits 6:2, pin (INTA = 0) in bits 1:0.
    io_interrupt(
        INT_VECTORED,
        IRQFLAG_LEVEL_HIGH,
        BUS_ID_PCI,
        NIC_DEVICE << 2,
        NIC_IRQ,
    );
    for (kind, dest_apic, lint) in [(INT_EXTINT, 0u8, 0u8), (INT_NMI, 0xff, 1)] {
        entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind]);
        entries.extend_from_slice(&IRQFLAG_CONFORMS.to_le_bytes());
        entries.extend_from_slice(&[BUS_ID_ISA, 0, dest_apic, lint]);
        count += 1;
    }
    let total = CONFIG_HEADER_LEN + entries.len();
    let mut table = Vec::with_capacity(total);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(total as u16).to_le_bytes());
    table.extend_from_slice(&[MP_SPEC_REV, 0]);
    table.extend_from_slice(b"LANCET  ");
    table.extend_from_slice(b"LANCET-VM   ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);
    table
}

fn floating_pointer(table_addr: u32) -> [u8; FLOATING_POINTER_LEN] {
    let mut fp = [0u8; FLOATING_POINTER_LEN];
    fp[0..4].copy_from_slice(b"_MP_");
    fp[4..8].copy_from_slice(&table_addr.to_le_bytes());
    fp[8] = 1; // length in 16-byte units
    fp[9] = MP_SPEC_REV;
    fp[10] = checksum(&fp);
    fp
}

/// Writes the floating pointer at 0x9fc00 and the configuration table right after it.
pub fn write_mp_table(mem: &GuestMemoryMmap, cpus: u8) -> Result<()> {
    let table_addr = EBDA_START + FLOATING_POINTER_LEN as u64;
    write_bytes(
        mem,
        EBDA_START,
        &floating_pointer(table_addr as u32),
        "writing the MP table",
    )?;
    write_bytes(mem, table_addr, &config_table(cpus), "writing the MP table")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_zero_and_nic_entry_present() {
        let fp = floating_pointer(0x9fc10);
        assert_eq!(fp.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = config_table(2);
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(
            u16::from_le_bytes([table[4], table[5]]) as usize,
            table.len()
        );
        let count = u16::from_le_bytes([table[34], table[35]]);
        // 2 CPUs, 2 buses, 1 IOAPIC, 14 ISA + 1 PCI, 2 local.
        assert_eq!(count, 2 + 2 + 1 + 15 + 2);
        let nic = [
            ENTRY_IO_INTERRUPT,
            INT_VECTORED,
            0b1101,
            0,
            BUS_ID_PCI,
            12,
            2,
            11,
        ];
        assert!(table.windows(8).any(|w| w == nic));
    }
}
