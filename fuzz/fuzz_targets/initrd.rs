//! The initrd: ustar/GNU/pax archives (`fs::tar::Reader`) mounted as a read-only tree (`fs::Initrd::parse`).
//! Half of the inputs get their header checksums fixed first so the fuzzer reaches past them. Invariants: no
//! panic; every member's data is a slice inside the archive; a mounted tree lists, stats and reads back every
//! file at its length, and its file/byte counts match; and parse → emit → parse round-trips: the tree written
//! out again with the `tar` crate (GNU long names where needed) parses to the same tree.
#![no_main]

use fs::tar::{EntryKind, Reader, BLOCK};
use fs::{FileSystem, Initrd};
use libfuzzer_sys::fuzz_target;
use zirvium_fuzz::tree::{walk, Limits, Tree};
use zirvium_fuzz::with_static;

const LIMITS: Limits = Limits { depth: 64, entries: 10_000, file_bytes: usize::MAX };

/// Rewrites every header's checksum (ustar: the unsigned sum of the header with the checksum field as spaces,
/// six octal digits, NUL, space), following member sizes from header to header.
fn fix_checksums(archive: &mut [u8]) {
    let mut pos = 0;
    while pos + BLOCK <= archive.len() {
        let block = &mut archive[pos..pos + BLOCK];
        if block.iter().all(|&b| b == 0) {
            pos += BLOCK;
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size = fs::tar::parse_number(&block[124..136]).unwrap_or(0);
        let data = usize::try_from(size).unwrap_or(usize::MAX).div_ceil(BLOCK).saturating_mul(BLOCK);
        pos = pos.saturating_add(BLOCK).saturating_add(data);
    }
}

/// The tree written out as a tar archive with the `tar` crate.
fn emit(tree: &Tree) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in tree {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        match data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, &path[1..], &data[..]).expect("tar crate writes a file");
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &path[1..], &[][..]).expect("tar crate writes a directory");
            }
        }
    }
    builder.into_inner().expect("tar crate finishes")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, archive)) = data.split_first() else { return };
    let mut archive = archive.to_vec();
    if flags & 1 != 0 {
        fix_checksums(&mut archive);
    }
    let range = archive.as_ptr_range();
    for entry in Reader::new(&archive) {
        let Ok(e) = entry else { break };
        if e.kind == EntryKind::File && !e.data.is_empty() {
            let d = e.data.as_ptr_range();
            assert!(range.start <= d.start && d.end <= range.end, "member data outside the archive");
        }
    }
    // SAFETY: the Initrd built from the 'static copy is dropped inside the closure.
    let tree = unsafe {
        with_static(&archive, |bytes| {
            let initrd = match Initrd::parse(bytes) {
                Ok(initrd) => initrd,
                Err(e) => {
                    let _ = e.to_string();
                    return None;
                }
            };
            let tree = walk(&initrd, &LIMITS, true);
            let files = tree.iter().filter(|(_, d)| d.is_some()).count() as u64;
            let bytes: u64 = tree.iter().filter_map(|(_, d)| d.as_ref()).map(|d| d.len() as u64).sum();
            assert_eq!((initrd.files(), initrd.bytes()), (files, bytes), "counts disagree with the tree");
            assert!(initrd.read_only());
            Some(tree)
        })
    };
    let Some(tree) = tree else { return };
    let again = emit(&tree);
    // SAFETY: as above.
    let tree2 = unsafe {
        with_static(&again, |bytes| {
            let initrd = Initrd::parse(bytes).unwrap_or_else(|e| panic!("the re-emitted archive is refused: {e}"));
            walk(&initrd, &LIMITS, true)
        })
    };
    assert_eq!(tree2, tree, "parse -> emit -> parse changed the tree");
});
