//! Bringing up VMBus and its devices, the same sequence on a real host and against the `hyperv` test peer:
//! SynIC and InitiateContact, the offers (waiting a little for a late NIC offer), then one
//! driver per offered device class: netvsc, storvsc, the heartbeat, shutdown, time sync and KVP integration
//! services, and Dynamic Memory (its channel opened here, its handshake by the platform with the kernel's balloon).
//! Source: Linux `drivers/hv/vmbus_drv.c` (`vmbus_bus_init`) and the per-device probe functions.

use crate::hv::{Enlightenments, HwAccess};
use crate::ic::{self, Service};
use crate::mem::Dma;
use crate::netvsc::{self, Netvsc};
use crate::storvsc::{self, Storvsc};
use crate::vmbus::channel::Channel;
use crate::vmbus::guid;
use crate::vmbus::msg::version;
use crate::vmbus::{self, InterruptLine, Vmbus};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use libos::time::Duration;

/// Tunables of the whole bring-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// VMBus timeouts.
    pub vmbus: vmbus::Config,
    /// netvsc settings.
    pub netvsc: netvsc::Config,
    /// storvsc settings.
    pub storvsc: storvsc::Config,
    /// How long to wait for a NIC offer that did not come before AllOffersDelivered (Hyper-V hosts often offer
    /// the synthetic NIC late); zero where no synthetic NIC can come (QEMU's VMBus server has none).
    pub late_nic_wait: Duration,
    /// Pages of each integration service ring (control page included); KVP messages are 7.5 KiB.
    pub ic_ring_pages: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vmbus: vmbus::Config::default(),
            netvsc: netvsc::Config::default(),
            storvsc: storvsc::Config::default(),
            late_nic_wait: Duration::from_millis(1500),
            ic_ring_pages: 4,
        }
    }
}

/// What came up.
pub struct Devices {
    /// The bus (spawn [`Vmbus::run`] to handle rescinds and late offers).
    pub bus: Arc<Vmbus>,
    /// NICs.
    pub nics: Vec<Netvsc>,
    /// Disks.
    pub disks: Vec<Arc<Storvsc>>,
    /// Integration service channels, opened; run each with [`ic::run`].
    pub ics: Vec<(Service, Channel)>,
    /// The Dynamic Memory channel, opened (run [`crate::dm::DynamicMemory::connect`] on it).
    pub dm: Option<Channel>,
    /// One entry per thing brought up, for the boot log.
    pub features: Vec<String>,
}

/// Connects VMBus and starts a driver for every offered device it knows. A device that fails to start is logged
/// and skipped; only a bus that cannot connect is an error.
pub async fn bring_up(
    hw: Arc<dyn HwAccess>,
    dma: Arc<dyn Dma>,
    en: &Enlightenments,
    line: &InterruptLine,
    vector: u8,
    cfg: &Config,
) -> Result<Devices, vmbus::Error> {
    let bus = Vmbus::new(hw, dma, en, line, vector, cfg.vmbus.clone())?;
    let v = bus.connect().await?;
    let mut offers = bus.request_offers().await?;
    if !cfg.late_nic_wait.is_zero() && !offers.iter().any(|o| o.if_type == guid::NIC) {
        if let Some(o) = bus.wait_for_offer(guid::NIC, cfg.late_nic_wait).await {
            log::info!("vmbus: NIC offered after AllOffersDelivered (relid {})", o.child_relid);
            offers.push(o);
        }
    }
    let mut features = alloc::vec![format!("vmbus {} ({} offers)", version::display(v), offers.len())];
    let mut nics = Vec::new();
    let mut disks = Vec::new();
    let mut ics = Vec::new();
    let mut dm = None;
    for o in &offers {
        if o.sub_channel_index != 0 {
            continue;
        }
        match o.if_type {
            guid::NIC => match Netvsc::new(&bus, o, &cfg.netvsc).await {
                Ok(n) => {
                    features.push(format!("netvsc (NVSP {})", netvsc::nvsp::version::display(n.nvsp_version())));
                    nics.push(n);
                }
                Err(e) => log::error!("vmbus: NIC (relid {}) not started: {e}", o.child_relid),
            },
            guid::SCSI => match Storvsc::new(&bus, o, &cfg.storvsc).await {
                Ok(d) => {
                    features.push(format!("storvsc ({} MiB)", (libos::dev::BlockDevice::info(&*d).bytes()) >> 20));
                    disks.push(d);
                }
                Err(e) => log::error!("vmbus: SCSI controller (relid {}) not started: {e}", o.child_relid),
            },
            guid::DYNAMIC_MEMORY => match bus.open_channel(o, crate::dm::RING_PAGES, crate::dm::RING_PAGES).await {
                Ok(ch) => dm = Some(ch),
                Err(e) => log::error!("vmbus: dynamic memory (relid {}) not started: {e}", o.child_relid),
            },
            class => match Service::from_class(&class) {
                Some(s) => match bus.open_channel(o, cfg.ic_ring_pages, cfg.ic_ring_pages).await {
                    Ok(ch) => ics.push((s, ch)),
                    Err(e) => log::error!("vmbus: {} IC not started: {e}", s.name()),
                },
                None => {
                    log::info!("vmbus: no driver for {} ({class}), relid {}", guid::class_name(&class), o.child_relid)
                }
            },
        }
    }
    if !ics.is_empty() {
        let names: Vec<&str> = ics.iter().map(|(s, _)| s.name()).collect();
        features.push(format!("ICs: {}", names.join(", ")));
    }
    Ok(Devices { bus, nics, disks, ics, dm, features })
}

/// Spawns the tasks that keep the bus and the integration services going.
pub fn spawn_services(bus: &Arc<Vmbus>, ics: Vec<(Service, Channel)>, ctx: &ic::Context) {
    libos::task::spawn(bus.clone().run());
    for (s, ch) in ics {
        let ctx = ctx.clone();
        libos::task::spawn(async move {
            let e = ic::run(s, ch, ctx).await;
            log::warn!("{} IC stopped: {e}", s.name());
        });
    }
}
