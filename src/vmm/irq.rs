//! Interrupt wiring: the in-kernel PIC + IOAPIC + PIT, the NIC's level-triggered INTA on GSI 11
//! through KVM_IRQ_LINE (callable from any thread), and the 8259's ELCR preset so IRQ 11 is level
//! triggered on the legacy route too.

use std::sync::Arc;

use kvm_bindings::{kvm_irqchip, kvm_pit_config, KVM_IRQCHIP_PIC_SLAVE, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::VmFd;

use super::error::{kvm_err, Result};
use crate::lance::IrqLine;

/// Creates PIC + IOAPIC + LAPICs and the PIT (speaker port 0x61 handled in the kernel).
pub fn create_interrupt_controllers(vm: &VmFd) -> Result<()> {
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))
}

/// Marks `irq` (8..16, on the slave 8259) level-triggered in the ELCR, as firmware does for PCI IRQs.
pub fn set_pic_level_triggered(vm: &VmFd, irq: u8) -> Result<()> {
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_PIC_SLAVE,
        ..Default::default()
    };
    vm.get_irqchip(&mut chip)
        .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
    // SAFETY: chip_id selects the PIC, so `pic` is the member KVM filled in.
    unsafe { chip.chip.pic.elcr |= 1 << (irq & 7) };
    vm.set_irqchip(&chip).map_err(kvm_err("KVM_SET_IRQCHIP"))
}

/// A level-triggered interrupt line into KVM's PIC and IOAPIC at `gsi`.
pub struct KvmIrqLine {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl KvmIrqLine {
    pub fn new(vm: Arc<VmFd>, gsi: u32) -> Self {
        Self { vm, gsi }
    }
}

impl IrqLine for KvmIrqLine {
    fn set_level(&mut self, asserted: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, asserted) {
            tracing::warn!(gsi = self.gsi, "KVM_IRQ_LINE failed: {e}");
        }
    }
}
