//! GDT with a 64-bit code segment, a data segment and a TSS whose IST stacks carry the exceptions that
//! must not run on a possibly broken stack: #DF (IST1), NMI (IST2), #MC (IST3).
//! Source: Intel SDM Vol. 3A §3.4.5 (segment descriptors), §8.7 (64-bit TSS), §6.14.5 (IST).

use core::arch::asm;
use core::mem::size_of;

/// Selector of the 64-bit kernel code segment.
pub const KERNEL_CS: u16 = 0x08;
/// Selector of the kernel data segment.
pub const KERNEL_DS: u16 = 0x10;
const TSS_SEL: u16 = 0x18;

/// IST index (1-based, as in the IDT gate) for double faults.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST index for NMI.
pub const IST_NMI: u8 = 2;
/// IST index for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;
/// IST index for device interrupts once threads run: the running thread's own interrupt stack (see `thread`).
pub const IST_THREAD: u8 = 4;

const IST_STACK_BYTES: usize = 16 * 1024;

#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp: [u64; 3],
    _reserved1: u64,
    ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

/// One IST stack with an unmapped guard page below it (see `mem::paging`).
#[repr(C, align(4096))]
struct IstStack {
    guard: [u8; 4096],
    stack: [u8; IST_STACK_BYTES],
}

// In the never-cleared `.stack` section, like the boot stack: untouched pages cost nothing at boot.
#[link_section = ".stack"]
static mut IST_STACKS: [IstStack; 3] = [const { IstStack { guard: [0; 4096], stack: [0; IST_STACK_BYTES] } }; 3];
static mut TSS: Tss = Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};
static mut GDT: [u64; 5] = [0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0, 0];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Loads the GDT and TSS. Called once on the boot CPU before the IDT is loaded.
pub fn init() {
    // SAFETY: single-threaded boot; the statics are only written here, before any interrupt can read them.
    unsafe {
        let stacks = &raw mut IST_STACKS;
        let tss = &raw mut TSS;
        for i in 0..3 {
            let top = (&raw mut (*stacks)[i].stack) as u64 + IST_STACK_BYTES as u64;
            (*tss).ist[i] = top;
        }
        let base = tss as u64;
        let limit = (size_of::<Tss>() - 1) as u64;
        // 64-bit TSS descriptor (type 9, present), two GDT slots.
        let low = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89u64 << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        let gdt = &raw mut GDT;
        (*gdt)[3] = low;
        (*gdt)[4] = base >> 32;
        let ptr = DescriptorPointer { limit: (size_of::<[u64; 5]>() - 1) as u16, base: gdt as u64 };
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {ds:x}",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = in(reg) u64::from(KERNEL_CS),
            ds = in(reg) KERNEL_DS,
            tss = in(reg) TSS_SEL,
            tmp = lateout(reg) _,
        );
    }
}

/// Points IST entry `ist` (1..=7) at `top` (an interrupt stack's first address above it, 16-aligned): the
/// next interrupt through a gate with that index starts there. Other values of `ist` are ignored.
pub fn set_interrupt_stack(ist: u8, top: u64) {
    if !(1..=7).contains(&ist) {
        return;
    }
    super::cpu::without_interrupts(|| {
        // SAFETY: interrupts are off; the CPU reads the TSS only when it delivers an interrupt.
        unsafe { TSS.ist[usize::from(ist) - 1] = top };
    });
}

/// Addresses of the guard pages under the IST stacks (4 KiB each), to be left unmapped.
pub fn ist_guard_pages() -> [u64; 3] {
    let base = (&raw const IST_STACKS) as u64;
    core::array::from_fn(|i| base + (i * size_of::<IstStack>()) as u64)
}
