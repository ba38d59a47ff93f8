//! The boot sequence after the entry stub (PVH or Multiboot2): console, boot info, memory, CPU tables, command
//! line, log, LAPIC;
//! then the `zirvium` crate's `__zirvium_start` picks the platform and runs the app. Also the TSC clock used
//! when no paravirtual clock exists, the boot timeline (TSC stamps), and timer arming for the executor.
#![allow(unsafe_code)]

use crate::arch::x86_64::boot::{BOOT_ENTRY_EAX, BOOT_TSC_ENTRY, ENTRY_MULTIBOOT2, ENTRY_PVH};
use crate::arch::x86_64::{apic, cpu, gdt, idt, pit};
use crate::bootinfo::multiboot2::{self, Multiboot2Error};
use crate::bootinfo::{BootInfo, BootInfoError, PvhStartInfo};
use crate::cmdline::Cmdline;
use crate::mem::{self, paging, FrameAllocator, FreeRanges};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use pvh::start_info::reader::StartInfoReader;

static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

/// What the boot protocol told us (memory map, modules, command line), once boot has read it; `None` before
/// that and in host tests.
pub fn boot_info() -> Option<&'static BootInfo> {
    BOOT_INFO.get()
}
static CMDLINE: spin::Once<Cmdline> = spin::Once::new();
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

extern "Rust" {
    /// Defined by the `zirvium` crate: platform selection, then the app. Never returns.
    fn __zirvium_start(boot: &'static BootInfo, cmdline: &'static Cmdline) -> !;
}

fn boot_error(what: &str, e: &dyn core::fmt::Display) -> ! {
    crate::console::emergency_print(format_args!("boot error: {what}: {e}\n"));
    crate::exit(crate::EXIT_BOOT_ERROR)
}

/// Boot timeline stamps, in order: entry, rust, memory, platform, app. TSC ticks (0 = not reached).
static STAMPS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Names of the timeline stamps.
pub const STAMP_NAMES: [&str; 5] = ["entry", "rust", "memory", "platform", "app"];

/// Records timeline stamp `i` (index into [`STAMP_NAMES`]) now.
pub fn stamp(i: usize) {
    if let Some(s) = STAMPS.get(i) {
        s.store(cpu::rdtsc(), Ordering::Relaxed);
    }
}

/// The boot timeline as `(name, µs since entry)` for the stamps reached. Needs the TSC frequency.
pub fn timeline() -> Vec<(&'static str, u64)> {
    // SAFETY: written once by the entry stub before any Rust code ran.
    let entry = unsafe { core::ptr::read_volatile(&raw const BOOT_TSC_ENTRY) };
    let hz = TSC_HZ.load(Ordering::Relaxed).max(1);
    let mut out = Vec::new();
    out.push(("entry", 0));
    for (i, name) in STAMP_NAMES.iter().enumerate().skip(1) {
        let t = STAMPS[i].load(Ordering::Relaxed);
        if t != 0 {
            out.push((*name, ((u128::from(t.saturating_sub(entry)) * 1_000_000) / u128::from(hz)) as u64));
        }
    }
    out
}

/// The TSC value at the first instruction of the image (ticks).
pub fn entry_tsc() -> u64 {
    // SAFETY: written once by the entry stub before any Rust code ran.
    unsafe { core::ptr::read_volatile(&raw const BOOT_TSC_ENTRY) }
}

/// Sets the TSC frequency (Hz), e.g. from pvclock; used for timer deadlines and the timeline.
pub fn set_tsc_hz(hz: u64) {
    TSC_HZ.store(hz, Ordering::Relaxed);
}

/// The TSC frequency (Hz), 0 when unknown.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Monotonic clock from the invariant TSC at a known frequency.
pub struct TscClock {
    scale: crate::time::tsc::TscScale,
}

impl crate::time::ClockSource for TscClock {
    fn now_ns(&self) -> u64 {
        self.scale.ticks_to_ns(cpu::rdtsc())
    }
    fn name(&self) -> &'static str {
        "tsc"
    }
}

/// Determines the TSC frequency when no platform did (the hypervisor timing leaf 0x4000_0010 from `timing`,
/// CPUID 0x15, else a 10 ms PIT measurement) and installs the TSC clock if no clock is installed yet. Returns
/// how the frequency was found. Errors: no way to know the TSC frequency.
pub fn ensure_clock(timing: Option<crate::hypervisor::TimingInfo>) -> Result<&'static str, &'static str> {
    let mut how = "platform";
    if TSC_HZ.load(Ordering::Relaxed) == 0 {
        let (hz, src) = crate::time::tsc::frequency_from_cpuid(&cpu::NativeCpuid, timing)
            .map(|f| (f.hz, "cpuid"))
            .or_else(|| {
                let (ticks, ns) = pit::measure_tsc_ticks(10)?;
                crate::time::tsc::calibrate_hz(ticks, ns).ok().map(|hz| (hz, "a 10 ms PIT measurement"))
            })
            .ok_or("no TSC frequency from CPUID and the PIT does not count")?;
        TSC_HZ.store(hz, Ordering::Relaxed);
        how = src;
    }
    if crate::time::clock_name() == "none" {
        static CLOCK: spin::Once<TscClock> = spin::Once::new();
        let scale =
            crate::time::tsc::TscScale::new(TSC_HZ.load(Ordering::Relaxed)).map_err(|_| "implausible TSC frequency")?;
        let c = CLOCK.call_once(|| TscClock { scale });
        crate::time::set_clock(c);
        // Count uptime from the first instruction.
        crate::time::set_origin_ns(c.scale.ticks_to_ns(entry_tsc()));
    }
    if crate::time::SystemTime::now().is_none() {
        if let Some(secs) = crate::arch::x86_64::rtc::unix_seconds() {
            crate::time::set_wall_clock(secs * 1_000_000_000, crate::time::uptime_ns());
        }
    }
    // LAPIC one-shot calibration against the TSC over 1 ms (a no-op in TSC-deadline mode).
    apic::calibrate(TSC_HZ.load(Ordering::Relaxed) / 1000);
    Ok(how)
}

/// Arms the LAPIC timer for `deadline_ns` (uptime ns).
pub fn arm_timer_at(deadline_ns: u64) {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    let now = crate::time::uptime_ns();
    let delta_ns = deadline_ns.saturating_sub(now);
    let ticks = ((u128::from(delta_ns) * u128::from(hz)) / 1_000_000_000).min(u128::from(u64::MAX / 2)) as u64;
    apic::set_deadline(cpu::rdtsc().saturating_add(ticks));
}

fn read_start_info(paddr: u32) -> BootInfo {
    // SAFETY: PVH guarantees `ebx` points at a valid hvm_start_info, identity mapped by the boot stub.
    let Some(reader) = (unsafe { StartInfoReader::from_paddr_identity(paddr) }) else {
        let magic = if paddr == 0 {
            0
        } else {
            // SAFETY: as above; the magic is the first field.
            unsafe { core::ptr::read_volatile(paddr as usize as *const u32) }
        };
        boot_error("hvm_start_info", &crate::bootinfo::BootInfoError::BadMagic(magic))
    };
    let raw = reader.raw();
    let mut map = [(0u64, 0u64, 0u32); crate::bootinfo::MAX_REGIONS + 1];
    let mut n = 0;
    for e in reader.memmap().iter().take(map.len()) {
        map[n] = (e.addr, e.size, e.ty);
        n += 1;
    }
    let mut mods = [(0u64, 0u64, None); crate::bootinfo::MAX_MODULES + 1];
    let mut m = 0;
    // The module list is read by hand: QEMU's microvm firmware (qboot) places it only 4-byte aligned, and the
    // `pvh` reader yields nothing for a misaligned list. Entry layout: `hvm_modlist_entry` (paddr, size,
    // cmdline_paddr, reserved; u64 each), xen/include/public/arch-x86/hvm/start_info.h.
    let count = (raw.nr_modules as usize).min(mods.len());
    for i in 0..count {
        let entry = (raw.modlist_paddr as usize).wrapping_add(i * 32) as *const u64;
        // SAFETY: the loader describes `nr_modules` entries at `modlist_paddr`, identity mapped; read_unaligned
        // because the list may sit on any 4-byte boundary.
        let (paddr, size, cmdline) =
            unsafe { (entry.read_unaligned(), entry.add(1).read_unaligned(), entry.add(2).read_unaligned()) };
        // qboot leaves `cmdline_paddr` uninitialised: only follow it into RAM the memory map describes.
        let in_ram = map[..n].iter().any(|&(a, len, ty)| ty == 1 && cmdline >= a && cmdline < a.saturating_add(len));
        let cmdline = (cmdline != 0 && in_ram).then(|| {
            // SAFETY: a NUL-terminated string the loader placed in identity-mapped memory.
            unsafe { core::ffi::CStr::from_ptr(cmdline as usize as *const core::ffi::c_char) }.to_bytes()
        });
        mods[m] = (paddr, size, cmdline);
        m += 1;
    }
    let si = PvhStartInfo {
        paddr: u64::from(paddr),
        magic: raw.magic,
        version: raw.version,
        rsdp_paddr: raw.rsdp_paddr,
        cmdline: reader.cmdline().map(|c| c.to_bytes()),
        memmap: &map[..n],
        modules: &mods[..m],
    };
    BootInfo::from_pvh(&si).unwrap_or_else(|e| boot_error("hvm_start_info", &e))
}

/// Reads the Multiboot2 boot information at `paddr` (Multiboot2 spec §3.6) after checking the entry's `eax`.
fn read_multiboot2(paddr: u32) -> BootInfo {
    // SAFETY: written once by the entry stub before any Rust code ran.
    let magic = unsafe { core::ptr::read_volatile(&raw const BOOT_ENTRY_EAX) };
    let fail = |e: Multiboot2Error| boot_error("Multiboot2", &BootInfoError::Multiboot2(e));
    if magic != multiboot2::BOOTLOADER_MAGIC {
        fail(Multiboot2Error::BadMagic(magic));
    }
    if paddr == 0 || !paddr.is_multiple_of(8) {
        fail(Multiboot2Error::BadAddress(paddr.into()));
    }
    // SAFETY: §3.3: `ebx` holds the physical address of the boot information, below 4 GiB and identity mapped
    // by the boot stub; `total_size` is its first field.
    let total_size = unsafe { core::ptr::read_volatile(paddr as usize as *const u32) };
    if !(16..=multiboot2::MAX_MBI_LEN).contains(&total_size) {
        fail(Multiboot2Error::BadTotalSize { total_size, available: total_size as usize });
    }
    // SAFETY: the loader wrote `total_size` bytes there and hands them to the kernel; the range is reserved from
    // the frame allocator below (`BootInfo::loader_data`), and this is the only reference ever made to it (the
    // parser rewrites GRUB's command-line escapes in place, then keeps shared references), so it stays valid
    // and unaliased for the life of the VM.
    let mbi = unsafe { core::slice::from_raw_parts_mut(paddr as usize as *mut u8, total_size as usize) };
    BootInfo::from_multiboot2(mbi, paddr.into()).unwrap_or_else(|e| boot_error("Multiboot2", &e))
}

/// Rust entry from `arch::x86_64::boot`: `info_paddr` is `ebx` at the entry (`hvm_start_info` for PVH, the
/// Multiboot2 boot information), `entry` which entry ran ([`ENTRY_PVH`] or [`ENTRY_MULTIBOOT2`]).
#[no_mangle]
extern "C" fn libos_boot_main(info_paddr: u32, entry: u32) -> ! {
    stamp(1);
    crate::console::serial::init();
    let boot = BOOT_INFO.call_once(|| match entry {
        ENTRY_PVH => read_start_info(info_paddr),
        ENTRY_MULTIBOOT2 => read_multiboot2(info_paddr),
        other => boot_error("entry", &format_args!("unknown entry kind {other}")),
    });

    // Memory: everything the loader gave us that is not the image, a module, the command line or the loader's
    // boot information (which the command line, module strings and the RSDP copy point into).
    let img = paging::image_layout();
    let mut res = [(0u64, 0u64); 3 + crate::bootinfo::MAX_MODULES];
    let mut r = 0;
    res[r] = (img.text_start, img.end);
    r += 1;
    if let Some(range) = boot.loader_data() {
        res[r] = range;
        r += 1;
    }
    if !boot.cmdline.is_empty() {
        let p = boot.cmdline.as_ptr() as u64;
        res[r] = (p, p + boot.cmdline.len() as u64 + 1);
        r += 1;
    }
    for md in boot.modules() {
        res[r] = (md.start, md.start + md.len);
        r += 1;
    }
    let free = FreeRanges::new(boot, &res[..r]).unwrap_or_else(|e| boot_error("memory map", &e));
    let mut frames = FrameAllocator::new(free);
    let guards =
        [paging::boot_stack_guard(), gdt::ist_guard_pages()[0], gdt::ist_guard_pages()[1], gdt::ist_guard_pages()[2]];
    for g in guards {
        mem::add_guard_page(g);
    }
    paging::init(boot, &mut frames, &guards).unwrap_or_else(|e| boot_error("page tables", &e));
    let mut heap_bytes = 0;
    for &(s, e) in frames.into_ranges().ranges() {
        // SAFETY: free RAM from the memory map, identity mapped RW by `paging::init`, used by nothing else.
        if unsafe { mem::heap::claim(s, e) } {
            heap_bytes += e - s;
        }
    }
    stamp(2);

    gdt::init();
    idt::init();
    let cmdline = CMDLINE.call_once(|| Cmdline::parse(boot.cmdline).unwrap_or_else(|e| boot_error("command line", &e)));
    crate::console::init_log(cmdline.log_level());
    let apic = apic::init();
    idt::register(apic::TIMER_VECTOR, |_| {});
    log::info!(
        "Zirvium {} booted via {}: {} MiB RAM, heap {} KiB, image {} KiB, {} APIC (id {}), timer {}",
        env!("CARGO_PKG_VERSION"),
        boot.entry(),
        boot.ram_bytes() >> 20,
        heap_bytes >> 10,
        (img.end - img.text_start) >> 10,
        if apic.x2apic { "x2APIC" } else { "xAPIC" },
        apic.id,
        if apic.tsc_deadline { "TSC-deadline" } else { "LAPIC one-shot" },
    );
    log::debug!("command line: {:?}", boot.cmdline);
    // SAFETY: `__zirvium_start` is defined by the zirvium crate, which every app links.
    unsafe { __zirvium_start(boot, cmdline) }
}
