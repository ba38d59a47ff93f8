//! FAT images (`/data`) through the `fs` crate's FAT layer (`fs::FatFs`, over starry-fatfs and the sector cache)
//! on an in-memory block device (`fs::memdisk::MemDisk`): mount, walk and read the whole tree, then change it
//! (create, write, extend, truncate, make and remove directories, rename, remove), sync and unmount, and mount
//! the result again. The input is the disk image (the first byte chooses a few operation parameters).
//! Invariants: no panic and no hang on any image — a corrupted volume gives errors; a file written on a volume
//! that mounted reads back what was written while every call succeeded.
#![no_main]

use fs::memdisk::MemDisk;
use fs::{FatFs, FileSystem};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use zirvium_fuzz::tree::{walk, Limits};

// Small bounds keep an execution around a millisecond (the walk re-resolves every path from the root): the
// images are at most `-max_len` (64 KiB) anyway, so a few dozen entries and a few KiB per file reach every
// structure a corrupted volume can hold.
const LIMITS: Limits = Limits { depth: 4, entries: 32, file_bytes: 4096 };
/// The walk after the power cut only checks that the survivor mounts and lists without a panic.
const AFTER_CUT: Limits = Limits { depth: 1, entries: 8, file_bytes: 1024 };

/// Changes the volume; returns the contents of `/fz.bin` when every step up to reading it back succeeded.
fn mutate(fat: &FatFs, seed: u8, tree: &[(String, Option<Vec<u8>>)]) -> Option<Vec<u8>> {
    let pattern: Vec<u8> = (0..700 + usize::from(seed) * 37).map(|i| (i * 7 + usize::from(seed)) as u8).collect();
    let mut written = None;
    if let Ok(mut f) = fat.create_file("/fz.bin") {
        let mut ok = true;
        let mut at = 0;
        while ok && at < pattern.len() {
            match f.write_at(at as u64, &pattern[at..]) {
                Ok(n) if n > 0 => at += n,
                _ => ok = false,
            }
        }
        ok &= f.sync_all().is_ok();
        if ok {
            let mut back = vec![0u8; pattern.len()];
            let mut got = 0;
            while got < back.len() {
                match f.read_at(got as u64, &mut back[got..]) {
                    Ok(n) if n > 0 => got += n,
                    _ => break,
                }
            }
            if got == back.len() {
                written = Some(back);
            }
        }
        let _ = f.set_len(u64::from(seed) * 3);
        let _ = f.set_len(9000);
        let _ = f.metadata();
    }
    let _ = fat.create_dir("/fzdir");
    let _ = fat.create_dir("/fzdir/sub");
    let _ = fat.create_file("/fzdir/sub/a file with a long name.txt").map(|mut f| f.write_at(10, b"x"));
    let _ = fat.rename("/fzdir/sub", "/moved");
    let _ = fat.rename("/fz.bin", "/moved/fz2.bin");
    let _ = fat.stats();
    // Change what the image brought along: the first few files and directories.
    for (i, (path, data)) in tree.iter().take(6).enumerate() {
        match (data.is_some(), (usize::from(seed) + i) % 4) {
            (true, 0) => drop(fat.remove_file(path)),
            (true, 1) => drop(fat.open_file(path).map(|mut f| f.write_at(u64::from(seed) * 100, &pattern[..300]))),
            (true, 2) => drop(fat.open_file(path).map(|f| f.set_len(1))),
            (false, 0) => drop(fat.remove_dir(path)),
            (false, 1) => drop(fat.create_file(&format!("{path}/new.txt"))),
            (_, _) => drop(fat.rename(path, "/renamed")),
        }
    }
    let _ = fat.read_dir("/");
    let _ = fat.sync();
    written
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, image)) = data.split_first() else { return };
    let mut image = image.to_vec();
    image.resize(image.len().next_multiple_of(512), 0);
    let disk = MemDisk::from_image(image, false);
    let Ok(fat) = FatFs::mount(disk.clone()) else { return };
    let _ = fat.describe();
    let _ = fat.stats();
    let tree = walk(&fat, &LIMITS, false);
    let written = mutate(&fat, seed, &tree);
    let expected: Vec<u8> = (0..700 + usize::from(seed) * 37).map(|i| (i * 7 + usize::from(seed)) as u8).collect();
    if let Some(back) = written {
        assert!(back == expected, "a file written with every call succeeding read back different bytes");
    }
    let _ = fat.unmount();
    drop(fat);
    // What survived a power cut after the sync mounts (or is refused) without a panic too.
    let again: Arc<MemDisk> = disk.after_power_cut();
    if let Ok(fat) = FatFs::mount(again) {
        let _ = walk(&fat, &AFTER_CUT, false);
        let _ = fat.unmount();
    }
});
