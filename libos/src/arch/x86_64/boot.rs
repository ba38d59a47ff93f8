//! The two 32-bit entries, PVH and Multiboot2, and their shared path to long mode with an identity map of the
//! first 4 GiB in 2 MiB pages (the first 2 MiB in 4 KiB pages).
//!
//! Source: Xen `docs/misc/pvh.pandoc` (entry state: 32-bit flat segments, paging off, `ebx` = physical
//! address of `hvm_start_info`), ELF note `XEN_ELFNOTE_PHYS32_ENTRY` (`xen/include/public/elfnote.h`, 18);
//! The Multiboot2 Specification 1.0 §3.1 (header: magic, architecture 0 = i386 protected mode, length,
//! checksum, tags; within the first 32 KiB of the file, 8-byte aligned), §3.1.6 (entry address tag, type 3),
//! §3.3 (machine state: `eax` = 0x36d76289, `ebx` = physical address of the boot information, anywhere below
//! 4 GiB; flat 32-bit segments, paging off, `esp` and the GDT undefined); Intel SDM Vol. 3A §9.8.5
//! "Initializing IA-32e Mode". The final page tables (W^X, guard pages) are built later by `mem::paging`;
//! this map only has to carry us there.
//!
//! One ELF boots both ways: QEMU `-kernel`, Xen and Firecracker read the PVH note; GRUB's `multiboot2` command
//! finds the Multiboot2 header at the start of `.text` (QEMU only knows Multiboot1, so `-kernel` keeps PVH).

use core::arch::global_asm;

// The note lets QEMU `-kernel`, Xen and Firecracker find the 32-bit entry point.
pvh::xen_elfnote_phys32_entry!(pvh_start32);

extern "C" {
    fn pvh_start32() -> !;
}

/// TSC value read by the first instruction of the entry stub (ticks); the boot timeline's origin. In `.data`,
/// not `.bss`: the stub writes it before it clears `.bss`.
#[no_mangle]
#[used]
#[link_section = ".data"]
pub static mut BOOT_TSC_ENTRY: u64 = 0;

/// `eax` at the Multiboot2 entry (0x36d76289 from a Multiboot2 loader); checked by Rust. In `.data`, written
/// before `.bss` is cleared.
#[no_mangle]
#[used]
#[link_section = ".data"]
pub static mut BOOT_ENTRY_EAX: u32 = 0;

/// Entry kinds the stub passes to `libos_boot_main` in its second argument.
pub const ENTRY_PVH: u32 = 0;
/// See [`ENTRY_PVH`].
pub const ENTRY_MULTIBOOT2: u32 = 1;

global_asm!(
    r#"
    /* Multiboot2 header (§3.1): placed first in .text by zirvium.ld, so within the file's first 32 KiB. */
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6                  /* magic */
    .long 0                           /* architecture: i386 32-bit protected mode */
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    .short 3, 0                       /* entry address tag, required */
    .long 12
    .long mb2_start32
    .balign 8
    .short 0, 0                       /* end tag */
    .long 8
mb2_header_end:

    .section .text.boot, "ax"
    .code32
    .global mb2_start32
mb2_start32:
    cli
    cld
    mov esp, offset __boot_stack_top
    mov esi, ebx                      /* boot information paddr, kept in esi */
    mov [BOOT_ENTRY_EAX], eax
    mov ebp, {multiboot2}             /* entry kind, kept in ebp */
    jmp boot32_common

    .global pvh_start32
pvh_start32:
    cli
    cld
    /* PVH leaves esp undefined (Xen starts it at 0; QEMU's option ROM has a stack): the far return below needs one. */
    mov esp, offset __boot_stack_top
    mov esi, ebx                      /* hvm_start_info paddr, kept in esi */
    mov ebp, {pvh}
boot32_common:
    rdtsc
    mov [BOOT_TSC_ENTRY], eax
    mov [BOOT_TSC_ENTRY + 4], edx

    /* Clear .bss (page tables live there). The boot stack is outside .bss and is not touched. */
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd

    /* PML4[0] -> PDPT; PDPT[0..4] -> PD0..PD3; PDx[j] = (x GiB + j * 2 MiB) | PS | RW | P. */
    mov eax, offset boot_pdpt
    or eax, 0x3
    mov [boot_pml4], eax
    mov edi, offset boot_pdpt
    mov eax, offset boot_pd
    or eax, 0x3
    mov ecx, 4
boot_pdpt_loop:
    mov [edi], eax
    add eax, 0x1000
    add edi, 8
    dec ecx
    jnz boot_pdpt_loop
    mov edi, offset boot_pd
    mov eax, 0x83
    xor edx, edx
    mov ecx, 2048
boot_pd_loop:
    mov [edi], eax
    mov [edi + 4], edx
    add eax, 0x200000
    adc edx, 0
    add edi, 8
    dec ecx
    jnz boot_pd_loop

    /* The first 2 MiB (image, stack, these tables) in 4 KiB pages: a shadow-paging hypervisor write-protects
       page-table pages, and inside a 2 MiB page that would make every write near them trap. */
    mov edi, offset boot_pt
    mov eax, 0x3
    mov ecx, 512
boot_pt_loop:
    mov [edi], eax
    add eax, 0x1000
    add edi, 8
    dec ecx
    jnz boot_pt_loop
    mov eax, offset boot_pt
    or eax, 0x3
    mov [boot_pd], eax

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20                      /* CR4.PAE */
    mov cr4, eax

    /* EFER.LME, plus EFER.NXE when CPUID.80000001h:EDX[20] says NX exists. */
    mov eax, 0x80000000
    cpuid
    xor edi, edi
    cmp eax, 0x80000001
    jb boot_no_nx
    mov eax, 0x80000001
    cpuid
    bt edx, 20
    jnc boot_no_nx
    mov edi, 0x800
boot_no_nx:
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    or eax, edi
    wrmsr

    mov eax, cr0
    or eax, 0x80010001                /* PG | WP | PE */
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    mov eax, offset boot_long_mode
    push 0x08
    push eax
    retf

    .code64
boot_long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + __boot_stack_top]
    mov edi, esi                      /* libos_boot_main(info paddr, entry kind) */
    mov esi, ebp
    xor ebp, ebp
    call libos_boot_main
boot_dead:
    cli
    hlt
    jmp boot_dead

    .section .rodata.boot, "a"
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff          /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff          /* 0x10: data */
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096 * 4
boot_pt:   .skip 4096

    /* Not in .bss: never cleared, so only the pages actually used are ever touched. */
    .section .stack, "aw", @nobits
    .balign 4096
    .global __boot_stack_guard
__boot_stack_guard: .skip 4096
    .global __boot_stack_bottom
__boot_stack_bottom: .skip 256 * 1024
    .global __boot_stack_top
__boot_stack_top:
    "#,
    pvh = const ENTRY_PVH,
    multiboot2 = const ENTRY_MULTIBOOT2,
);
