//! Architecture support. Only x86_64 exists; everything here touches hardware and is built only for the
//! bare target (`target_os = "none"`).
#![allow(unsafe_code)]

pub mod x86_64;
