//! Platform selection, the one place that decides which device drivers start, and the hand-over to the app
//! (called by libos after memory and CPU setup).
#![allow(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use libos::bootinfo::BootInfo;
use libos::cmdline::Cmdline;
use libos::platform::Platform;

static CMDLINE: spin_once::Once = spin_once::Once::new();

/// The initrd embedded by `images build/run --initrd` (`ZIRVIUM_INITRD` at build time), or empty.
static EMBEDDED_INITRD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/initrd.tar"));

mod spin_once {
    use core::sync::atomic::{AtomicPtr, Ordering};
    /// A write-once pointer to the command line.
    pub struct Once(AtomicPtr<libos::cmdline::Cmdline>);
    impl Once {
        pub const fn new() -> Self {
            Self(AtomicPtr::new(core::ptr::null_mut()))
        }
        pub fn set(&self, c: &'static libos::cmdline::Cmdline) {
            self.0.store(c as *const _ as *mut _, Ordering::Release);
        }
        pub fn get(&self) -> Option<&'static libos::cmdline::Cmdline> {
            // SAFETY: only `set` stores, always a `&'static Cmdline`.
            unsafe { self.0.load(Ordering::Acquire).as_ref() }
        }
    }
}

pub fn cmdline() -> &'static Cmdline {
    CMDLINE.get().expect("the command line is parsed before the app runs")
}

extern "Rust" {
    fn __zirvium_app_main() -> Pin<Box<dyn Future<Output = u8> + Send>>;
    fn __zirvium_app_name() -> &'static str;
}

/// The platforms this image can run on, in no particular order; the best `probe` fit wins.
fn platforms() -> [&'static dyn Platform; 4] {
    [&platform_kvm::KVM, &platform_kvm::QEMU, &platform_xen::XEN, &platform_hyperv::HYPERV]
}

/// The PCI driver table, first match wins (`libos::pci::scan` hands each function to the first driver that
/// claims it). virtio-pci takes virtio-net, virtio-blk and virtio-scsi by device ID, NVMe its class code; a new
/// PCI driver — vmxnet3, PVSCSI — is added here.
static PCI_DRIVERS: &[&libos::pci::Driver] = &[&drivers::virtio::pci::DRIVER, &drivers::nvme::DRIVER];

/// Starts the drivers of the devices any platform may have, after the platform's own `init`: the virtio-mmio
/// devices the command line names (microvm, Firecracker), then every PCI function a driver in [`PCI_DRIVERS`]
/// claims (none on a Xen PVH guest or microvm: no PCI bus). Returns the features for the `platform:` line,
/// e.g. "virtio-pci (MSI-X)", "virtio-blk (1 disk)". Errors: a malformed `virtio_mmio.device=`.
fn start_drivers(boot: &BootInfo, cmdline: &Cmdline) -> Result<Vec<String>, String> {
    let mut features = drivers::virtio::mmio::start(cmdline).map_err(|e| alloc::format!("{e}"))?;
    // QEMU names virtio-mmio devices on the command line only with `acpi=off`: no RSDP to search for then.
    let scan_bios = cmdline.virtio_mmio.is_empty();
    features.extend(libos::pci::scan(boot, scan_bios, PCI_DRIVERS).features());
    features.extend(drivers::virtio::disk_summary());
    Ok(features)
}

#[no_mangle]
fn __zirvium_start(boot: &'static BootInfo, cmdline: &'static Cmdline) -> ! {
    CMDLINE.set(cmdline);
    // SAFETY: defined by the app through `zirvium::app!`.
    let app_name = unsafe { __zirvium_app_name() };
    libos::platform::set_app_name(app_name);
    let detection = libos::hypervisor::detect(&libos::arch::x86_64::cpu::NativeCpuid);
    let mut best: Option<(&'static dyn Platform, libos::platform::Fit)> = None;
    for p in platforms() {
        if let Some(fit) = p.probe(&detection, boot) {
            if best.as_ref().is_none_or(|(_, b)| fit.score > b.score) {
                best = Some((p, fit));
            }
        }
    }
    let Some((platform, fit)) = best else {
        libos::console::emergency_print(format_args!("boot error: no platform fits this machine: {detection}\n"));
        libos::exit(libos::EXIT_BOOT_ERROR);
    };
    libos::platform::set_current(platform.name());
    let brought = match platform.init(&detection, boot, cmdline) {
        Ok(b) => b,
        Err(e) => {
            libos::console::emergency_print(format_args!("boot error: {e}\n"));
            libos::exit(libos::EXIT_BOOT_ERROR);
        }
    };
    let clock_how = match libos::start::ensure_clock(detection.timing()) {
        Ok(how) => how,
        Err(e) => {
            libos::console::emergency_print(format_args!("boot error: clock: {e}\n"));
            libos::exit(libos::EXIT_BOOT_ERROR);
        }
    };
    let devices = match start_drivers(boot, cmdline) {
        Ok(f) => f,
        Err(e) => {
            libos::console::emergency_print(format_args!("boot error: devices: {e}\n"));
            libos::exit(libos::EXIT_BOOT_ERROR);
        }
    };
    libos::arch::x86_64::cpu::enable_interrupts();
    let mut features: Vec<String> = brought.features;
    features.extend(devices);
    features.push(alloc::format!(
        "clock {} ({} MHz TSC from {})",
        libos::time::clock_name(),
        libos::start::tsc_hz() / 1_000_000,
        clock_how
    ));
    log::info!("platform: {} ({}; features: {})", platform.name(), fit.reason, features.join(", "));
    libos::start::stamp(3);
    let nics = libos::dev::take_net();
    if !nics.is_empty() {
        if let Err(e) = net::start(nics, cmdline) {
            libos::console::emergency_print(format_args!("boot error: network: {e}\n"));
            libos::exit(libos::EXIT_BOOT_ERROR);
        }
    }
    // A boot module wins; else the archive `images` embedded at build time (see build.rs), if any.
    let initrd = libos::start::boot_info()
        .and_then(|b| b.modules().first())
        .map(|m| m.bytes())
        .or((!EMBEDDED_INITRD.is_empty()).then_some(EMBEDDED_INITRD));
    if let Err(e) = ::fs::mount_boot(initrd, libos::dev::block_devices()) {
        libos::console::emergency_print(format_args!("boot error: fs: {e}\n"));
        libos::exit(libos::EXIT_BOOT_ERROR);
    }
    libos::start::stamp(4);
    if let Some(b) = libos::start::boot_info().filter(|b| b.loader_data().is_some()) {
        // Where the TSC counts from the vCPU's reset (QEMU TCG), TSC time at the entry is the firmware plus the
        // boot loader; some hypervisors carry the host's TSC over, so it is reported as TSC time, not as a fact.
        let us = |ticks: u64| (u128::from(ticks) * 1_000_000 / u128::from(libos::start::tsc_hz().max(1))) as u64;
        log::info!(
            "boot: {} entered at TSC time {} us, app main at {} us (from the vCPU's reset where the TSC starts at 0: \
             firmware and loader, then Zirvium)",
            b.entry(),
            us(libos::start::entry_tsc()),
            us(libos::arch::x86_64::cpu::rdtsc())
        );
    }
    // SAFETY: defined by the app through `zirvium::app!`.
    let main = unsafe { __zirvium_app_main() };
    let code = libos::task::block_on(main);
    log::debug!("app exited with status {code}");
    // Write back and mark file systems clean (FAT's dirty bit) so the disk needs no fsck after a normal exit.
    ::fs::unmount_all();
    libos::exit(code)
}
