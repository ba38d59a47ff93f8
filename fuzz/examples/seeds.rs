//! Writes the seed corpus `fuzz/corpus/<target>/` from the inputs of the project's unit tests, built with the
//! project's own emitters where there are some (HTTP requests, tar archives, FAT images formatted and filled
//! through the `fs` crate, VMBus/NVSP/RNDIS/vstor messages, xenstore messages) and from the wire layouts the
//! tests use otherwise. Deterministic: run it again after a format changes. Inputs that once crashed a target
//! are kept beside the seeds as `regress-*`.
//!
//!     cargo run --release --example seeds   (in fuzz/)

use drivers::scsi::Command;
use fs::memdisk::MemDisk;
use fs::{FatFs, FileSystem};
use platform_hyperv::hv::synic::ConnectionId;
use platform_hyperv::netvsc::nvsp::{NvspMessage, RecvSection};
use platform_hyperv::netvsc::rndis::{emit_packet_header, packet_header_len, ppi, RndisMessage};
use platform_hyperv::storvsc::vstor::{Body, Srb, VstorPacket};
use platform_hyperv::vmbus::guid::Guid;
use platform_hyperv::vmbus::msg::{gpadl_messages, ChannelMessage, InitiateContact, Offer, OpenChannel};
use platform_hyperv::vmbus::packet::{gpa_direct, inband, transfer_pages, GpaRange};
use platform_hyperv::vmbus::{GpadlHandle, RelId};
use platform_xen::xenstore::wire::{Message, MsgType, XsTxId};
use std::path::Path;

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    // Only the seeds are rewritten; `regress-*` files (inputs that once crashed) stay.
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("seed-") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
    }
    println!("{target}: {} seeds", seeds.len());
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// The request streams of zirvium-http's connection and handler tests.
fn http_streams() -> Vec<Vec<u8>> {
    let mut pipeline = get("/health").into_bytes();
    pipeline.extend_from_slice(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello");
    pipeline.extend_from_slice(b"GET /bytes/600 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    pipeline.extend_from_slice(b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n");
    pipeline.extend_from_slice(b"HEAD /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\n");
    pipeline.extend_from_slice(get("/missing").as_bytes());
    pipeline.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    vec![
        pipeline,
        format!("{}{}{}", get("/"), get("/health"), get("/bytes/3")).into_bytes(),
        b"PUT /echo?x=1&y HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 11\r\n\r\nhello world".to_vec(),
        b"POST http://example.com/echo HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n2\r\nde\r\n0\r\nT: x\r\n\r\n".to_vec(),
        b"PUT /early HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n".to_vec(),
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        b"PUT /after HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nokGET /close HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /bytes/2 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /bytes/1 HTTP/1.0\r\n\r\n".to_vec(),
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /empty HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=3-9\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: x\r\nRange: bytes=-4\r\n\r\nGET /docs/%2e%2e/a.txt HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /stream/700 HTTP/1.1\r\nHost: x\r\n\r\nPOST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na\nb".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        b"get / HTTP/1.1\r\n\r\nGET / HTTP/2.0\r\n\r\n".to_vec(),
    ]
}

fn tar_archives() -> Vec<Vec<u8>> {
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, path, data).unwrap();
    };
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, path, &[][..]).unwrap();
    };
    let mut a = tar::Builder::new(Vec::new());
    dir(&mut a, "etc/");
    file(&mut a, "etc/motd", b"hello from the initrd\n");
    file(&mut a, "www/index.html", b"<p>hi</p>\n");
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    a.append_link(&mut h, "www/copy.html", "www/index.html").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    a.append_link(&mut h, "www/sym", "index.html").unwrap();
    let a = a.into_inner().unwrap();

    let mut g = tar::Builder::new(Vec::new());
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(130));
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    g.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let g = g.into_inner().unwrap();

    let mut p = tar::Builder::new(Vec::new());
    p.append_pax_extensions([("path", &b"pax/name/from/extended/header.txt"[..]), ("mtime", &b"1700000000.5"[..])])
        .unwrap();
    file(&mut p, "short", b"pax data");
    let p = p.into_inner().unwrap();
    // Flag byte 1: the target fixes checksums (these are already right).
    vec![cat(&[&[0], &a]), cat(&[&[1], &g]), cat(&[&[0], &p]), vec![0; 1025]]
}

/// FAT images formatted and filled through the `fs` crate (as fs's own tests do), plus mkfs.fat-like corners.
fn fat_images() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (size, files) in [(64 * 1024, 2usize), (128 * 1024, 6)] {
        let disk = MemDisk::formatted(size);
        let fat = FatFs::mount(disk.clone()).expect("mounts");
        fat.create_dir("/dir").unwrap();
        fat.create_dir("/dir/sub").unwrap();
        for i in 0..files {
            let path = if i % 2 == 0 { format!("/file{i}.txt") } else { format!("/dir/a long file name {i}.data") };
            let mut f = fat.create_file(&path).unwrap();
            let data: Vec<u8> = (0..700 * (i + 1)).map(|j| (j * 7 + i) as u8).collect();
            f.write_at(0, &data).unwrap();
        }
        fat.sync().unwrap();
        fat.unmount().unwrap();
        drop(fat);
        let image = disk.durable.lock().clone();
        out.push(cat(&[&[0], &image]));
    }
    out
}

fn pvh_images() -> Vec<Vec<u8>> {
    // struct hvm_start_info at 0, memory map at 0x100, module list at 0x200, command lines at 0x300/0x380.
    let image = |version: u32, map: &[(u64, u64, u32)], cmdline: &[u8], modules: usize| {
        let mut m = vec![0u8; 0x400];
        m[0..4].copy_from_slice(&0x336e_c578u32.to_le_bytes());
        m[4..8].copy_from_slice(&version.to_le_bytes());
        m[12..16].copy_from_slice(&(modules as u32).to_le_bytes());
        m[16..24].copy_from_slice(&0x200u64.to_le_bytes());
        m[24..32].copy_from_slice(&0x300u64.to_le_bytes());
        m[32..40].copy_from_slice(&0xf5a40u64.to_le_bytes());
        m[40..48].copy_from_slice(&0x100u64.to_le_bytes());
        m[48..52].copy_from_slice(&(map.len() as u32).to_le_bytes());
        for (i, (a, s, t)) in map.iter().enumerate() {
            let at = 0x100 + i * 24;
            m[at..at + 8].copy_from_slice(&a.to_le_bytes());
            m[at + 8..at + 16].copy_from_slice(&s.to_le_bytes());
            m[at + 16..at + 20].copy_from_slice(&t.to_le_bytes());
        }
        for i in 0..modules {
            let at = 0x200 + i * 32;
            m[at..at + 8].copy_from_slice(&(0x20_0000u64 + i as u64 * 0x1000).to_le_bytes());
            m[at + 8..at + 16].copy_from_slice(&0x1000u64.to_le_bytes());
            m[at + 16..at + 24].copy_from_slice(&0x380u64.to_le_bytes());
        }
        m[0x300..0x300 + cmdline.len()].copy_from_slice(cmdline);
        m[0x380..0x384].copy_from_slice(b"mod\0");
        m
    };
    // Recorded from QEMU 10 microvm -m 64M (libos bootinfo tests).
    let microvm = [(0, 0x9fc00, 1), (0x9fc00, 0x400, 2), (0xf0000, 0x10000, 2), (0x100000, 0x3f00000, 1)];
    vec![
        image(1, &microvm, b" loglevel=debug -- a b \0", 1),
        image(1, &[(0, 0x1000, 1), (0, 0x1_0000_0000, 1), (0x1000, 0x2000, 7)], b"ip=10.0.2.15/24 gw=10.0.2.2\0", 2),
        image(0, &microvm, b"\0", 0),
    ]
}

fn vmbus_messages() -> Vec<Vec<u8>> {
    let offer = Offer {
        if_type: Guid([0x63, 0x51, 0x61, 0xf8, 0x3e, 0xdf, 0xc5, 0x46, 0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e]),
        if_instance: Guid([7; 16]),
        chn_flags: 0,
        mmio_megabytes: 0,
        user_def: [0; 120],
        sub_channel_index: 0,
        child_relid: RelId(14),
        monitor_id: 3,
        monitor_allocated: true,
        dedicated_interrupt: true,
        connection_id: ConnectionId(0x2000e),
    };
    let mut msgs = vec![
        ChannelMessage::OfferChannel(offer),
        ChannelMessage::RescindOffer { child_relid: RelId(14) },
        ChannelMessage::AllOffersDelivered,
        ChannelMessage::OpenResult { child_relid: RelId(14), open_id: 1, status: 0 },
        ChannelMessage::GpadlCreated { child_relid: RelId(14), gpadl: GpadlHandle(0xE1E10), status: 0 },
        ChannelMessage::GpadlTorndown { gpadl: GpadlHandle(0xE1E10) },
        ChannelMessage::VersionResponse { version_supported: true, connection_state: 0, msg_conn_id: ConnectionId(4) },
        ChannelMessage::InitiateContact(InitiateContact {
            version: 5 << 16,
            target_vcpu: 0,
            interrupt_page_or_sint: 2,
            monitor_page1: 0x1000,
            monitor_page2: 0x2000,
        }),
        ChannelMessage::OpenChannel(OpenChannel {
            child_relid: RelId(14),
            open_id: 1,
            ring_gpadl: GpadlHandle(0xE1E10),
            target_vp: 0,
            downstream_page_offset: 2,
            user_data: [0; 120],
        }),
        ChannelMessage::UnloadResponse,
    ];
    msgs.extend(gpadl_messages(RelId(14), GpadlHandle(0xE1E11), &(0..40).collect::<Vec<u64>>(), 40 * 4096).unwrap());
    msgs.iter().map(ChannelMessage::emit).collect()
}

fn vmbus_packets() -> Vec<Vec<u8>> {
    let range = GpaRange { len: 5000, offset: 100, pfns: vec![0x1234, 0x1235] };
    vec![
        inband(1, 1, b"an in-band payload").unwrap(),
        gpa_direct(2, 1, &[range.clone(), GpaRange { len: 10, offset: 0, pfns: vec![9] }], &[1; 24]).unwrap(),
        transfer_pages(3, 0, 0xcafe, &[(0, 1514), (4096, 60)], &[2; 16]).unwrap(),
    ]
}

fn ring_ops() -> Vec<Vec<u8>> {
    let write = |n: u16, b: u8| cat(&[&[0], &n.to_le_bytes(), &vec![b; n as usize]]);
    let guest = |n: u16, b: u8| cat(&[&[7], &n.to_le_bytes(), &vec![b; n as usize]]);
    vec![
        cat(&[&write(100, 1), &write(3000, 2), &[4, 4, 6], &write(2000, 3), &[5, 6]]),
        cat(&[&guest(200, 9), &guest(2500, 8), &[8], &guest(10, 7), &[8, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0]]),
        cat(&[&write(50, 1), &[1, 8, 0, 0, 0, 4]]),
    ]
}

fn nvsp_messages() -> Vec<Vec<u8>> {
    let section = RecvSection { offset: 0, sub_alloc_size: 1728, num_sub_allocs: 1024, end_offset: 1728 * 1024 };
    [
        NvspMessage::Init { min: 0x2, max: 0x6_0000 },
        NvspMessage::InitComplete { negotiated: 0x6_0000, max_mdl_chain_len: 0, status: 1 },
        NvspMessage::SendReceiveBufferComplete { status: 1, sections: vec![section] },
        NvspMessage::SendSendBufferComplete { status: 1, section_size: 6144 },
        NvspMessage::SendRndisPacket { channel_type: 0, section_index: 0xffff_ffff, section_size: 0 },
        NvspMessage::SendRndisPacketComplete { status: 1 },
        NvspMessage::SendIndirectionTable { count: 16, offset: 12 },
        NvspMessage::SendNdisConfig { mtu: 1500, capability: 1 },
    ]
    .iter()
    .map(NvspMessage::emit)
    .collect()
}

fn rndis_messages() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        RndisMessage::InitializeComplete {
            req_id: 1,
            status: 0,
            major: 1,
            minor: 0,
            dev_flags: 1,
            medium: 0,
            max_pkt_per_msg: 8,
            max_xfer_size: 0x4000,
            pkt_alignment_factor: 3,
        },
        RndisMessage::QueryComplete { req_id: 2, status: 0, info: vec![0x00, 0x15, 0x5d, 1, 2, 3] },
        RndisMessage::SetComplete { req_id: 3, status: 0 },
        RndisMessage::IndicateStatus { status: 0x4001_000b, info: vec![] },
        RndisMessage::Keepalive { req_id: 4 },
    ]
    .iter()
    .map(RndisMessage::emit)
    .collect();
    let frame = [0xffu8; 60];
    let ppis = [(ppi::TCPIP_CHKSUM, 0x5), (ppi::IEEE_8021Q, 0x64)];
    let mut b = vec![0u8; packet_header_len(ppis.len()) + frame.len()];
    let h = emit_packet_header(&mut b, frame.len(), &ppis);
    b[h..].copy_from_slice(&frame);
    out.push(b);
    out
}

fn vstor_packets() -> Vec<Vec<u8>> {
    let srb = Srb {
        srb_status: 1,
        scsi_status: 2,
        port: 0,
        path_id: 0,
        target_id: 0,
        lun: 0,
        cdb_length: 16,
        sense_info_length: 0x14,
        data_in: 1,
        data_transfer_length: 4096,
        cdb_or_sense: {
            let mut c = [0u8; 20];
            c[..16].copy_from_slice(Command::Read16 { lba: 8, blocks: 8, fua: false }.to_bytes().as_slice());
            c
        },
        srb_flags: 0,
    };
    vec![
        VstorPacket { operation: 1, flags: 1, status: 0, body: Body::Srb(srb) }.emit(64),
        VstorPacket { operation: 9, flags: 1, status: 0, body: Body::Version { major_minor: 0x0602, revision: 0 } }
            .emit(64),
        VstorPacket {
            operation: 7,
            flags: 1,
            status: 0,
            body: Body::Properties { max_channel_cnt: 1, flags: 1, max_transfer_bytes: 0x80000 },
        }
        .emit(48),
        // Fixed-format sense data: sense key 3 (medium error), ASC 0x11.
        {
            let mut s = vec![0x70, 0, 3, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x11, 0, 0, 0, 0, 0];
            s.resize(32, 0);
            s
        },
    ]
}

fn ic_messages() -> Vec<Vec<u8>> {
    // vmbuspipe_hdr (8 bytes) + icmsg_hdr: icverframe u32 @8, icmsgtype u16 @12, icvermsg u32 @14, icmsgsize u16
    // @18, status u32 @20, ictransaction_id u8 @24, icflags u8 @25; the body at 28 (Linux `hyperv.h`).
    let msg = |ty: u16, body: &[u8]| {
        let mut b = vec![0u8; 28];
        b[12..14].copy_from_slice(&ty.to_le_bytes());
        b[25] = 1 | 2;
        b.extend_from_slice(body);
        b
    };
    let negotiate = {
        // icframe_vercnt, icmsg_vercnt, reserved, then major/minor u16 pairs.
        let mut body = vec![2, 0, 3, 0, 0, 0, 0, 0];
        for (maj, min) in [(1u16, 0u16), (3, 0), (1, 0), (3, 0), (4, 0)] {
            body.extend_from_slice(&maj.to_le_bytes());
            body.extend_from_slice(&min.to_le_bytes());
        }
        body
    };
    let framed = |service: u8, m: Vec<u8>| cat(&[&[service], &(m.len() as u16).to_le_bytes(), &m]);
    let mut heartbeat = 41u64.to_le_bytes().to_vec();
    heartbeat.resize(40, 0);
    let mut shutdown = vec![0u8; 12 + 2048];
    shutdown[8] = 2;
    let mut time = vec![0u8; 40];
    time[0..8].copy_from_slice(&133_000_000_000_000_000u64.to_le_bytes());
    time[24] = 1;
    vec![
        cat(&[&framed(0, msg(0, &negotiate)), &framed(0, msg(3, &heartbeat))]),
        cat(&[&framed(1, msg(0, &negotiate)), &framed(1, msg(4, &shutdown))]),
        cat(&[&framed(2, msg(0, &negotiate)), &framed(2, msg(6, &time))]),
        framed(3, msg(7, &vec![0u8; 2600])),
    ]
}

fn xenstore_streams() -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    for m in [
        Message::request(MsgType::Read, 1, XsTxId(0), &[], b"4\0").unwrap(),
        Message::request(MsgType::Directory, 2, XsTxId(0), &["0", "1"], b"").unwrap(),
        Message::request(MsgType::WatchEvent, 0, XsTxId(0), &["device/vif/0/state", "tok"], b"").unwrap(),
        Message::request(MsgType::Error, 3, XsTxId(0), &["ENOENT"], b"").unwrap(),
        Message::request(MsgType::TransactionStart, 4, XsTxId(0), &["17"], b"").unwrap(),
    ] {
        m.emit(&mut replies);
    }
    // piece (u16), hostile (u8), then the daemon's byte stream.
    vec![cat(&[&[7, 0, 0], &replies]), cat(&[&[1, 0, 0x81], &replies[..40]])]
}

fn acpi_memory() -> Vec<Vec<u8>> {
    // q35-like: RSDP (rev 0) at 0xE0000 → RSDT at +0x40 → MCFG at +0x80 (acpi.rs tests' layout); the target fixes
    // the checksums (flag 1).
    let base = 0xE0000u32;
    let mut m = vec![0u8; 0xc0];
    m[0..8].copy_from_slice(b"RSD PTR ");
    m[9..15].copy_from_slice(b"BOCHS ");
    m[16..20].copy_from_slice(&(base + 0x40).to_le_bytes());
    let rsdt = 0x40;
    m[rsdt..rsdt + 4].copy_from_slice(b"RSDT");
    m[rsdt + 4..rsdt + 8].copy_from_slice(&40u32.to_le_bytes());
    m[rsdt + 36..rsdt + 40].copy_from_slice(&(base + 0x80).to_le_bytes());
    let mcfg = 0x80;
    m[mcfg..mcfg + 4].copy_from_slice(b"MCFG");
    m[mcfg + 4..mcfg + 8].copy_from_slice(&60u32.to_le_bytes());
    m[mcfg + 44..mcfg + 52].copy_from_slice(&0xb000_0000u64.to_le_bytes());
    m[mcfg + 55] = 0xff;
    vec![cat(&[&[1], &m])]
}

fn main() {
    let http: Vec<Vec<u8>> = http_streams().into_iter().map(|s| cat(&[&[0], &[1, 0, 0, 0, 0, 0, 0, 0], &s])).collect();
    write("http_connection", &http);
    let mut parsers: Vec<Vec<u8>> = http_streams().into_iter().map(|s| cat(&[&[0], &s])).collect();
    parsers.push(
        b"\x105\r\nhello\r\n1a; name=\"v\" ; x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nA: 1\r\nB: 2\r\n\r\n".to_vec(),
    );
    parsers.push(b"\x20bytes=0-1,-5".to_vec());
    parsers.push(b"\x01/a/%2e%2e/b/./c%2Fd".to_vec());
    write("http_parsers", &parsers);
    write("initrd", &tar_archives());
    write("fat", &fat_images());
    write(
        "cmdline",
        &[
            &b"loglevel=debug -- a b"[..],
            b"ip=10.0.2.15/24 gw=10.0.2.2 dns=10.0.2.3 -- --port 8080 msg=\"hello world\"",
            b"loglevel=info virtio_mmio.device=4K@0xfeb00000:5 -- x virtio_mmio.device=512@0xfeb01000:6",
            b"msg=\"a b\" \"--\"",
        ]
        .map(<[u8]>::to_vec),
    );
    write("pvh_start_info", &pvh_images());
    write("vmbus_msg", &vmbus_messages());
    write("vmbus_packet", &vmbus_packets());
    write("vmbus_ring", &ring_ops());
    write("nvsp", &nvsp_messages());
    write("rndis", &rndis_messages());
    write("vstor", &vstor_packets());
    write("hyperv_ic", &ic_messages());
    write("xenstore", &xenstore_streams());
    // Device op sequences: honest service first (op numbers are each target's `match` arms).
    write("xen_netfront", &[vec![0, 0, 0, 0, 3, 60, 0, 6, 8, 3, 200, 0, 1, 4, 0, 0, 1, 3, 4, 5, 6, 6, 7, 8]]);
    write("xen_blkfront", &[vec![0x04, 0xff, 0, 0, 3, 0, 4, 2, 0, 1, 8, 0, 4, 1, 0, 2, 3, 0, 0, 0, 2, 0, 0, 0, 0]]);
    write("virtio_net", &[vec![0x03, 0, 0, 0, 0, 0, 0, 64, 0, 3, 5, 100, 0, 7, 6, 0, 7, 8, 1, 0]]);
    write("virtio_blk", &[vec![0x3f, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 2, 0, 1, 9, 0, 0, 2, 0, 0, 0, 0, 0]]);
    write("acpi", &acpi_memory());
}
