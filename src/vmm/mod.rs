//! The machine around the chip: KVM VM and vCPUs, guest memory, PCI and I/O buses, serial console,
//! guest loading (PVH ELF, bzImage) and the I/O thread that connects the Lance to a backend.
