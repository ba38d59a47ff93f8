//! A std program exercising the Hermit ABI: prints its args and `GREETING` from the environment; four threads
//! add to a `Mutex` counter and signal a `Condvar`; a `thread::sleep` that must not return early; a file
//! written, listed and read back under `/tmp`; a `HashMap` (random keys); then exits with status 7 (the test
//! checks it), or 1 on a failed check.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn check(ok: bool, what: &str) {
    if !ok {
        println!("std-hello: FAILED: {what}");
        std::process::exit(1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("std-hello: args {args:?}");
    println!("std-hello: GREETING={:?}", std::env::var("GREETING").ok());

    let state = Arc::new((Mutex::new(0u32), Condvar::new()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let state = state.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    *state.0.lock().unwrap() += 1;
                }
                state.1.notify_all();
                i * 10
            })
        })
        .collect();
    let sum: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let guard = state.1.wait_while(state.0.lock().unwrap(), |n| *n < 4000).unwrap();
    check(*guard == 4000 && sum == 60, "threads and locks");
    drop(guard);
    println!("std-hello: 4 threads counted to 4000");

    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(20));
    let slept = t0.elapsed();
    check(slept >= Duration::from_millis(20), "sleep returned early");
    println!("std-hello: slept 20 ms (measured {} us)", slept.as_micros());

    std::fs::create_dir_all("/tmp/std-hello").unwrap();
    let mut f = std::fs::File::create("/tmp/std-hello/note.txt").unwrap();
    f.write_all(b"written by std").unwrap();
    drop(f);
    let names: Vec<String> =
        std::fs::read_dir("/tmp/std-hello").unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut text = String::new();
    std::fs::File::open("/tmp/std-hello/note.txt").unwrap().read_to_string(&mut text).unwrap();
    check(names == ["note.txt"] && text == "written by std", "files");
    println!("std-hello: /tmp holds {names:?} with {text:?}");

    let mut map = HashMap::new();
    map.insert("zirvium", 1);
    check(map["zirvium"] == 1, "hashmap");
    println!(
        "std-hello: now {:?} after the epoch",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() > 0
    );
    println!("std-hello: done");
    std::process::exit(7);
}
