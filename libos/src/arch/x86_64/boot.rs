//! PVH entry: 32-bit protected mode → long mode with an identity map of the first 4 GiB in 2 MiB pages
//! (the first 2 MiB in 4 KiB pages).
//!
//! Source: Xen `docs/misc/pvh.pandoc` (entry state: 32-bit flat segments, paging off, `ebx` = physical
//! address of `hvm_start_info`), ELF note `XEN_ELFNOTE_PHYS32_ENTRY` (`xen/include/public/elfnote.h`, 18),
//! Intel SDM Vol. 3A §9.8.5 "Initializing IA-32e Mode". The final page tables (W^X, guard pages) are built
//! later by `mem::paging`; this map only has to carry us there.

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

global_asm!(
    r#"
    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    /* PVH leaves esp undefined (Xen starts it at 0; QEMU's option ROM has a stack): the far return below needs one. */
    mov esp, offset __boot_stack_top
    mov esi, ebx                      /* hvm_start_info paddr, kept in esi */
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
pvh_pdpt_loop:
    mov [edi], eax
    add eax, 0x1000
    add edi, 8
    dec ecx
    jnz pvh_pdpt_loop
    mov edi, offset boot_pd
    mov eax, 0x83
    xor edx, edx
    mov ecx, 2048
pvh_pd_loop:
    mov [edi], eax
    mov [edi + 4], edx
    add eax, 0x200000
    adc edx, 0
    add edi, 8
    dec ecx
    jnz pvh_pd_loop

    /* The first 2 MiB (image, stack, these tables) in 4 KiB pages: a shadow-paging hypervisor write-protects
       page-table pages, and inside a 2 MiB page that would make every write near them trap. */
    mov edi, offset boot_pt
    mov eax, 0x3
    mov ecx, 512
pvh_pt_loop:
    mov [edi], eax
    add eax, 0x1000
    add edi, 8
    dec ecx
    jnz pvh_pt_loop
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
    jb pvh_no_nx
    mov eax, 0x80000001
    cpuid
    bt edx, 20
    jnc pvh_no_nx
    mov edi, 0x800
pvh_no_nx:
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    or eax, edi
    wrmsr

    mov eax, cr0
    or eax, 0x80010001                /* PG | WP | PE */
    mov cr0, eax

    lgdt [boot_gdt_ptr]
    mov eax, offset pvh_long_mode
    push 0x08
    push eax
    retf

    .code64
pvh_long_mode:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    lea rsp, [rip + __boot_stack_top]
    xor ebp, ebp
    mov edi, esi
    call libos_boot_main
pvh_dead:
    cli
    hlt
    jmp pvh_dead

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
    "#
);
