//! The host's storage back end (storvsp): the vstor initialisation sequence (exact-match protocol version) and a
//! SCSI disk in memory answering READ(16), WRITE(16), READ CAPACITY(16) and SYNCHRONIZE CACHE(10), with the data
//! moved through the request's GPA-direct pages. Written from `drivers/scsi/storvsc_drv.c` and SBC-4.

use crate::backend::{pkt, Backend, GuestPacket, Io, PageList};
use crate::bytes::{rd16, rd32, wr32};
use crate::{lock, HostConfig};
use std::sync::{Arc, Mutex};

const OP_COMPLETE_IO: u32 = 1;
const OP_EXECUTE_SRB: u32 = 3;
const OP_BEGIN_INIT: u32 = 7;
const OP_END_INIT: u32 = 8;
const OP_QUERY_PROTOCOL: u32 = 9;
const OP_QUERY_PROPERTIES: u32 = 10;
/// STATUS_REVISION_MISMATCH, what the host answers for a protocol it does not speak.
const STATUS_REVISION_MISMATCH: u32 = 0xC000_0059;
const SRB_SUCCESS: u8 = 0x01;
const SRB_ERROR_AUTOSENSE: u8 = 0x04 | 0x80;
const SECTOR: usize = 512;

/// The disk and what was done to it.
#[derive(Debug, Default)]
pub struct DiskState {
    /// Contents.
    pub data: Vec<u8>,
    /// Protocol version negotiated.
    pub protocol: Option<u16>,
    /// READ(16) commands.
    pub reads: u64,
    /// WRITE(16) commands.
    pub writes: u64,
    /// SYNCHRONIZE CACHE commands.
    pub flushes: u64,
    /// Writes not yet followed by a flush.
    pub unflushed_writes: u64,
    /// UNIT ATTENTION answers given.
    pub unit_attentions: u64,
}

impl DiskState {
    pub(crate) fn new(data: Vec<u8>) -> Self {
        Self { data, ..Self::default() }
    }
}

pub(crate) struct StorVsp {
    version: u16,
    disk: Arc<Mutex<DiskState>>,
    unit_attention: bool,
    initialized: bool,
}

impl StorVsp {
    pub fn new(cfg: &HostConfig, disk: Arc<Mutex<DiskState>>) -> Self {
        Self { version: cfg.storvsp_version, disk, unit_attention: cfg.unit_attention, initialized: false }
    }

    fn reply(io: &mut Io, p: &GuestPacket, mut v: Vec<u8>, status: u32) {
        wr32(&mut v, 0, OP_COMPLETE_IO);
        wr32(&mut v, 4, 0);
        wr32(&mut v, 8, status);
        io.out.push(pkt::comp(p.tid, &v));
    }

    fn srb(&mut self, io: &mut Io, p: &GuestPacket, mut v: Vec<u8>) {
        let win8 = self.version >= 0x0501;
        let need = if win8 { 64 } else { 48 };
        if v.len() < need {
            io.events.push(format!("storvsp: ERROR SRB packet of {} bytes, protocol needs {need}", v.len()));
            return;
        }
        let cdb = v[28..44].to_vec();
        let xfer = rd32(&v, 24) as usize;
        let dir = v[22];
        let data: Option<PageList> = p.gpa_ranges().into_iter().next().map(|(len, off, pfns)| PageList {
            pfns,
            offset: off as usize,
            len: len as usize,
        });
        let mut sense: Option<(u8, u8)> = None;
        let mut transferred = 0usize;
        if self.unit_attention {
            self.unit_attention = false;
            lock(&self.disk).unit_attentions += 1;
            sense = Some((0x6, 0x29));
        } else {
            let mut d = lock(&self.disk);
            let sectors = (d.data.len() / SECTOR) as u64;
            match cdb[0] {
                0x88 | 0x8A => {
                    let lba = u64::from_be_bytes(cdb[2..10].try_into().unwrap_or([0; 8]));
                    let blocks = u32::from_be_bytes(cdb[10..14].try_into().unwrap_or([0; 4])) as u64;
                    let bytes = blocks as usize * SECTOR;
                    let ok_dir = (cdb[0] == 0x88 && dir == 1) || (cdb[0] == 0x8A && dir == 0);
                    match &data {
                        Some(pl) if lba + blocks <= sectors && bytes == xfer && pl.len >= bytes && ok_dir => {
                            let at = lba as usize * SECTOR;
                            let ok = if cdb[0] == 0x88 {
                                d.reads += 1;
                                pl.write(io.mem, 0, &d.data[at..at + bytes])
                            } else {
                                d.writes += 1;
                                d.unflushed_writes += 1;
                                let mut buf = vec![0u8; bytes];
                                let ok = pl.read(io.mem, 0, &mut buf);
                                d.data[at..at + bytes].copy_from_slice(&buf);
                                ok
                            };
                            if ok {
                                transferred = bytes;
                            } else {
                                sense = Some((0x3, 0x11));
                            }
                        }
                        _ => {
                            io.events.push(format!("storvsp: bad rw lba {lba} blocks {blocks} xfer {xfer} dir {dir}"));
                            sense = Some((0x5, 0x21));
                        }
                    }
                }
                0x9E if cdb[1] & 0x1f == 0x10 => {
                    let mut r = [0u8; 32];
                    r[0..8].copy_from_slice(&(sectors - 1).to_be_bytes());
                    r[8..12].copy_from_slice(&(SECTOR as u32).to_be_bytes());
                    let n = xfer.min(32);
                    match &data {
                        Some(pl) if pl.write(io.mem, 0, &r[..n]) => transferred = n,
                        _ => sense = Some((0x5, 0x24)),
                    }
                }
                0x35 => {
                    d.flushes += 1;
                    d.unflushed_writes = 0;
                }
                other => {
                    io.events.push(format!("storvsp: unsupported SCSI command {other:#x}"));
                    sense = Some((0x5, 0x20));
                }
            }
        }
        match sense {
            None => {
                v[14] = SRB_SUCCESS;
                v[15] = 0;
                wr32(&mut v, 24, transferred as u32);
            }
            Some((key, asc)) => {
                v[14] = SRB_ERROR_AUTOSENSE;
                v[15] = 2;
                wr32(&mut v, 24, 0);
                let mut s = [0u8; 20];
                s[0] = 0x70;
                s[2] = key;
                s[7] = 10;
                s[12] = asc;
                v[28..48].copy_from_slice(&s);
            }
        }
        Self::reply(io, p, v, 0);
    }
}

impl Backend for StorVsp {
    fn opened(&mut self, io: &mut Io) {
        io.events.push("storvsp: channel open".into());
    }

    fn packet(&mut self, io: &mut Io, p: &GuestPacket) {
        if p.payload.len() < 48 {
            io.events.push(format!("storvsp: ERROR vstor packet of {} bytes", p.payload.len()));
            return;
        }
        let v = p.payload.to_vec();
        if p.flags & pkt::COMPLETION_REQUESTED == 0 {
            io.events.push("storvsp: ERROR request without completion requested".into());
        }
        match rd32(&v, 0) {
            OP_BEGIN_INIT => {
                io.events.push("storvsp: begin initialization".into());
                Self::reply(io, p, v, 0);
            }
            OP_QUERY_PROTOCOL => {
                let ver = rd16(&v, 12);
                let ok = ver == self.version;
                io.events.push(format!(
                    "storvsp: protocol {}.{} -> {}",
                    ver >> 8,
                    ver & 0xff,
                    if ok { "accepted" } else { "refused" }
                ));
                if ok {
                    lock(&self.disk).protocol = Some(ver);
                }
                Self::reply(io, p, v, if ok { 0 } else { STATUS_REVISION_MISMATCH });
            }
            OP_QUERY_PROPERTIES => {
                let mut v = v;
                v[12..48].fill(0);
                wr32(&mut v, 24, 0x20_0000);
                Self::reply(io, p, v, 0);
            }
            OP_END_INIT => {
                self.initialized = true;
                io.events.push("storvsp: end initialization".into());
                Self::reply(io, p, v, 0);
            }
            OP_EXECUTE_SRB => {
                if !self.initialized {
                    io.events.push("storvsp: ERROR SRB before END_INITIALIZATION".into());
                }
                self.srb(io, p, v)
            }
            other => io.events.push(format!("storvsp: unexpected operation {other}")),
        }
    }

    fn poll(&mut self, _io: &mut Io) {}
}
