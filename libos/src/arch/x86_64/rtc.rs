//! CMOS real-time clock (MC146818 at I/O ports 0x70/0x71): the wall clock when the platform has none.
//! Source: Motorola MC146818A datasheet (registers 0x00–0x09, status A bit 7 update-in-progress, status B
//! bit 2 binary mode, bit 1 24-hour mode); century from register 0x32 (ACPI FADT default).

use super::cpu::{inb, outb};

fn reg(r: u8) -> u8 {
    outb(0x70, r | 0x80); // keep NMI masked while selecting
    inb(0x71)
}

/// The RTC's time as Unix seconds (UTC), or `None` when no RTC answers sanely.
pub fn unix_seconds() -> Option<u64> {
    let read = || {
        // Wait out an update in progress (bounded: an absent RTC reads 0xFF forever).
        for _ in 0..100_000 {
            if reg(0x0A) & 0x80 == 0 {
                break;
            }
        }
        [reg(0x00), reg(0x02), reg(0x04), reg(0x07), reg(0x08), reg(0x09), reg(0x32)]
    };
    // Read until two consecutive reads agree, so a tick between fields cannot tear the value.
    let mut a = read();
    for _ in 0..5 {
        let b = read();
        if a == b {
            break;
        }
        a = b;
    }
    if a.iter().all(|&v| v == 0xff) {
        return None;
    }
    let status_b = reg(0x0B);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| if bcd { (v & 0x0f) + (v >> 4) * 10 } else { v };
    let [s, mi, h, d, mo, y, c] = a;
    let pm = h & 0x80 != 0;
    let mut hour = conv(h & 0x7f);
    if status_b & 0x02 == 0 && pm {
        hour = (hour % 12) + 12;
    }
    let century = if c == 0 || c == 0xff { 20 } else { u64::from(conv(c)) };
    let year = century * 100 + u64::from(conv(y));
    let (sec, min, day, month) = (conv(s), conv(mi), conv(d), conv(mo));
    if sec > 59 || min > 59 || hour > 23 || day == 0 || day > 31 || month == 0 || month > 12 {
        return None;
    }
    let days = crate::time::days_from_civil(year as i64, u32::from(month), u32::from(day));
    let secs = days * 86400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec);
    u64::try_from(secs).ok()
}
