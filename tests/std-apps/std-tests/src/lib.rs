//! Unit tests that run inside a Zirvium VM: `images run --test tests/std-apps/std-tests` builds this crate's
//! libtest harness for x86_64-unknown-hermit and boots it; libtest prints `test result: ok. N passed` and the VM
//! exits 0 (tests/tests/std.rs checks both).

/// Sums `0..n` on `threads` threads through a channel.
pub fn parallel_sum(n: u64, threads: u64) -> u64 {
    let (tx, rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send((t..n).step_by(threads as usize).sum::<u64>()).unwrap())
        })
        .collect();
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    rx.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn threads_and_channels() {
        assert_eq!(parallel_sum(10_000, 4), 10_000 * 9_999 / 2);
    }

    #[test]
    fn files_in_tmp() {
        std::fs::write("/tmp/std-tests.txt", b"libtest in a VM").unwrap();
        assert_eq!(std::fs::read_to_string("/tmp/std-tests.txt").unwrap(), "libtest in a VM");
        std::fs::remove_file("/tmp/std-tests.txt").unwrap();
        assert!(std::fs::metadata("/tmp/std-tests.txt").is_err());
    }

    #[test]
    fn sleep_and_monotonic_time() {
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t0.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn mutex_and_condvar_across_threads() {
        let pair = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let p = pair.clone();
        let t = std::thread::spawn(move || {
            *p.0.lock().unwrap() = true;
            p.1.notify_one();
        });
        let ready = pair.1.wait_while(pair.0.lock().unwrap(), |r| !*r).unwrap();
        assert!(*ready);
        drop(ready);
        t.join().unwrap();
    }
}
