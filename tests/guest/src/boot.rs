//! Boot: the PVH ELF note, the 32-bit PVH entry, static identity page tables, the GDT, and the
//! switch to 64-bit long mode. Everything here is data or a few dozen instructions, because guest
//! ring 0 runs through a slow instruction emulator on the target machine.
//!
//! Memory map set up here (all identity mapped, all pages user-accessible so the ring-3 driver can
//! reach its rings and the NIC's MMIO BAR):
//! - 0 .. 1 GiB: 2 MiB pages, write-back (RAM; the guest uses only the first 32 MiB).
//! - 1 .. 4 GiB: 2 MiB pages, uncached (PCD|PWT): PCI MMIO BARs, LAPIC, IOAPIC.

use core::arch::global_asm;

/// GDT selector of the 64-bit ring-0 code segment.
pub const KERNEL_CS: u16 = 0x08;
/// GDT selector of the ring-3 64-bit code segment (index 3, RPL 3).
pub const USER_CS: u16 = 0x18 | 3;
/// GDT selector of the ring-3 data segment (index 4, RPL 3).
pub const USER_DS: u16 = 0x20 | 3;
/// GDT selector of the TSS (index 5; a 16-byte system descriptor).
pub const TSS_SEL: u16 = 0x28;

extern "C" {
    /// The GDT (7 quadwords); entries 5 and 6 are the TSS descriptor filled in by ring 0.
    pub static mut gdt64: [u64; 7];
    /// Guest-physical address of `struct hvm_start_info`, saved from %ebx at entry.
    pub static mut pvh_start_info: u32;
}

// The PVH note: owner "Xen", type XEN_ELFNOTE_PHYS32_ENTRY (18), descriptor = the 32-bit entry
// address. The descriptor is 8 bytes (upper half zero) because QEMU reads a full 64-bit word.
global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    "#,
    options(att_syntax)
);

// Entry in 32-bit protected mode, paging off, %ebx = hvm_start_info. Enables SSE (CR4.OSFXSR |
// OSXMMEXCPT, CR0.MP, no EM/TS), PAE, EFER.LME, paging, and far-jumps to 64-bit code.
global_asm!(
    r#"
    .section .text.entry, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    movl %ebx, pvh_start_info
    lgdt gdt64_ptr
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $ring0_stack_top, %esp
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9FFFFFF3, %eax
    orl $0x80000023, %eax
    movl %eax, %cr0
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $ring0_stack_top, %rsp
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    rep stosb
    call ring0_main
1:
    cli
    hlt
    jmp 1b

    .section .data.pagetables, "aw"
    .balign 4096
boot_pml4:
    .quad boot_pdpt + 0x7
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x7
    .quad boot_pd + 0x1007
    .quad boot_pd + 0x2007
    .quad boot_pd + 0x3007
    .fill 508, 8, 0
boot_pd:
    .set lancet_pd_i, 0
    .rept 512
    .quad (lancet_pd_i << 21) | 0x87
    .set lancet_pd_i, lancet_pd_i + 1
    .endr
    .rept 1536
    .quad (lancet_pd_i << 21) | 0x9F
    .set lancet_pd_i, lancet_pd_i + 1
    .endr

    .section .data.gdt, "aw"
    .balign 16
    .globl gdt64
gdt64:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00AFFA000000FFFF
    .quad 0x00CFF2000000FFFF
    .quad 0
    .quad 0
gdt64_end:
    .balign 8
    .word 0
gdt64_ptr:
    .word gdt64_end - gdt64 - 1
    .quad gdt64

    .globl pvh_start_info
    .balign 4
pvh_start_info:
    .long 0

    .section .noinit.ring0_stack, "aw", @nobits
    .balign 4096
    .globl ring0_stack_top
ring0_stack_bottom:
    .skip 16384
ring0_stack_top:

    .section .noinit.user_stack, "aw", @nobits
    .balign 4096
    .globl user_stack_top
user_stack_bottom:
    .skip 65536
user_stack_top:
    "#,
    options(att_syntax)
);

// Freestanding memory primitives the compiler may call (from ring 0 or ring 3). `rep movsb` and
// `rep stosb` are fast in ring 3 and contain no SSE for ring 0.
global_asm!(
    r#"
    .section .text.ring0.mem, "ax"
    .globl memcpy
memcpy:
    movq %rdi, %rax
    movq %rdx, %rcx
    rep movsb
    ret

    .globl memmove
memmove:
    movq %rdi, %rax
    movq %rdx, %rcx
    cmpq %rsi, %rdi
    jbe 2f
    leaq (%rsi,%rdx), %r8
    cmpq %r8, %rdi
    jae 2f
    leaq -1(%rdi,%rdx), %rdi
    leaq -1(%rsi,%rdx), %rsi
    std
    rep movsb
    cld
    ret
2:
    rep movsb
    ret

    .globl memset
memset:
    movq %rdi, %r9
    movl %esi, %eax
    movq %rdx, %rcx
    rep stosb
    movq %r9, %rax
    ret

    .globl memcmp
    .globl bcmp
memcmp:
bcmp:
    xorl %eax, %eax
    testq %rdx, %rdx
    jz 4f
3:
    movzbl (%rdi), %eax
    movzbl (%rsi), %ecx
    subl %ecx, %eax
    jnz 4f
    incq %rdi
    incq %rsi
    decq %rdx
    jnz 3b
4:
    ret
    "#,
    options(att_syntax)
);
