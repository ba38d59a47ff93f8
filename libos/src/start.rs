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

/// A step of the boot timeline, in the order boot reaches them; each stamp records when the step *ended*
/// (`Entry` is the first instruction), so a step's cost is the difference to the previous stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The entry stub's first instruction (the origin, 0 µs).
    Entry,
    /// Entry stub done (`.bss` cleared, long mode): the first Rust instruction.
    Rust,
    /// Boot info read, free memory found, page tables built, heap claimed.
    Memory,
    /// GDT/IDT, command line, log, LAPIC.
    Cpu,
    /// Hypervisor detected and the platform initialised.
    Platform,
    /// TSC frequency known (stated by the platform or calibrated) and the clock installed.
    Clock,
    /// Device drivers started (virtio-mmio, PCI).
    Drivers,
    /// Network stack started (static address applied, or DHCP begun).
    Net,
    /// File systems mounted.
    Fs,
    /// The app's main runs.
    App,
    /// The app is ready for clients (httpd: listening).
    Ready,
}

impl Step {
    /// Every step, in timeline order.
    pub const ALL: [Step; 11] = [
        Step::Entry,
        Step::Rust,
        Step::Memory,
        Step::Cpu,
        Step::Platform,
        Step::Clock,
        Step::Drivers,
        Step::Net,
        Step::Fs,
        Step::App,
        Step::Ready,
    ];

    /// The step's name in the timeline line.
    pub const fn name(self) -> &'static str {
        match self {
            Step::Entry => "entry",
            Step::Rust => "rust",
            Step::Memory => "memory",
            Step::Cpu => "cpu",
            Step::Platform => "platform",
            Step::Clock => "clock",
            Step::Drivers => "drivers",
            Step::Net => "net",
            Step::Fs => "fs",
            Step::App => "app",
            Step::Ready => "ready",
        }
    }
}

/// TSC ticks at the end of each [`Step`] (0 = not reached); `Entry` lives in `BOOT_TSC_ENTRY`.
static STAMPS: [AtomicU64; Step::ALL.len()] = [const { AtomicU64::new(0) }; Step::ALL.len()];

/// Records now as the end of `step` (the first call per step wins, so a step is never moved later).
pub fn stamp(step: Step) {
    let _ = STAMPS[step as usize].compare_exchange(0, cpu::rdtsc(), Ordering::Relaxed, Ordering::Relaxed);
}

/// The boot timeline as `(step name, µs since entry)` for the steps reached, in order. Needs the TSC
/// frequency (all zeros before the clock step).
pub fn timeline() -> Vec<(&'static str, u64)> {
    let entry = entry_tsc();
    let hz = TSC_HZ.load(Ordering::Relaxed).max(1);
    let mut out = Vec::with_capacity(Step::ALL.len());
    out.push((Step::Entry.name(), 0));
    for step in &Step::ALL[1..] {
        let t = STAMPS[*step as usize].load(Ordering::Relaxed);
        if t != 0 {
            out.push((step.name(), ((u128::from(t.saturating_sub(entry)) * 1_000_000) / u128::from(hz)) as u64));
        }
    }
    out
}

/// The timeline as one line, e.g. `entry 0 us, rust 41 us (+41), memory 160 us (+119), ...`: every step
/// with its time since entry and its own cost.
pub fn timeline_line() -> alloc::string::String {
    use core::fmt::Write;
    let mut line = alloc::string::String::new();
    let mut prev = 0;
    for (i, (name, us)) in timeline().into_iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = match i {
            0 => write!(line, "{name} {us} us"),
            _ => write!(line, "{sep}{name} {us} us (+{})", us.saturating_sub(prev)),
        };
        prev = us;
    }
    line
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

/// Length of the PIT calibration when nothing states the TSC frequency (µs).
const CALIBRATION_US: u32 = 1000;
/// Length of the LAPIC one-shot timer calibration against a known TSC frequency (µs).
const LAPIC_CALIBRATION_US: u64 = 250;

/// Determines the TSC frequency when no platform did — the hypervisor timing leaf 0x4000_0010 from `timing`,
/// CPUID 0x15, else a 1 ms PIT measurement that also calibrates the LAPIC one-shot timer — and installs the
/// TSC clock if no clock is installed yet. Returns how the frequency was found. Errors: no way to know the
/// TSC frequency.
pub fn ensure_clock(timing: Option<crate::hypervisor::TimingInfo>) -> Result<&'static str, &'static str> {
    let mut how = "platform";
    let mut lapic_done = false;
    if TSC_HZ.load(Ordering::Relaxed) == 0 {
        let (hz, src) = match crate::time::tsc::frequency_from_cpuid(&cpu::NativeCpuid, timing) {
            Some(f) => (f.hz, "cpuid"),
            None => {
                let mut lapic_t0 = 0;
                let (ticks, ns) = pit::measure_tsc_ticks(CALIBRATION_US, &mut || lapic_t0 = apic::calibrate_start())
                    .ok_or("no TSC frequency from CPUID and the PIT does not count")?;
                apic::calibrate_finish(lapic_t0);
                lapic_done = true;
                let hz = crate::time::tsc::calibrate_hz(ticks, ns).map_err(|_| "implausible PIT calibration")?;
                (hz, "a 1 ms PIT measurement")
            }
        };
        TSC_HZ.store(hz, Ordering::Relaxed);
        how = src;
    }
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if crate::time::clock_name() == "none" {
        static CLOCK: spin::Once<TscClock> = spin::Once::new();
        let scale = crate::time::tsc::TscScale::new(hz).map_err(|_| "implausible TSC frequency")?;
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
    // The LAPIC one-shot rate (a no-op in TSC-deadline mode): stated by the timing leaf, measured in the PIT
    // window above, or measured against the TSC now.
    match timing.map(|t| u64::from(t.lapic_bus_khz) * 1000) {
        _ if lapic_done || apic::calibrated() => {}
        Some(bus_hz) if bus_hz != 0 => apic::set_timer_hz(bus_hz, hz),
        _ => apic::calibrate(hz / 1_000_000 * LAPIC_CALIBRATION_US),
    }
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
    stamp(Step::Rust);
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
    stamp(Step::Memory);

    gdt::init();
    idt::init();
    let protections = cpu::enable_protections();
    let cmdline = CMDLINE.call_once(|| Cmdline::parse(boot.cmdline).unwrap_or_else(|e| boot_error("command line", &e)));
    crate::console::init_log(cmdline.log_level());
    crate::task::watchdog::configure(cmdline.watchdog_secs().unwrap_or(0));
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
    log::info!("cpu: {protections}; kernel text read-only, data/heap/stacks no-execute, stack guard pages");
    if let Some(s) = cmdline.watchdog_secs() {
        log::info!("watchdog: the VM exits with status {} after {s} s without executor progress", crate::EXIT_WATCHDOG);
    }
    log::debug!("command line: {:?}", boot.cmdline);
    stamp(Step::Cpu);
    // SAFETY: `__zirvium_start` is defined by the zirvium crate, which every app links.
    unsafe { __zirvium_start(boot, cmdline) }
}
