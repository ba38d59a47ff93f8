//! x86_64: boot stub, CPU registers, GDT/TSS, IDT and exception dumps, LAPIC/IOAPIC, legacy PIC/PIT.
//! Source: Intel SDM Vol. 3A (system programming), chapters cited per module.

pub mod apic;
pub mod boot;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod ioapic;
pub mod pit;
pub mod rtc;
