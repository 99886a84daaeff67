//! Host-side placeholder: the programs live in `main.rs` and only build for
//! `bpfel-unknown-none`. The daemon's build script depends on this crate so
//! that cargo rebuilds the object whenever the programs change.
#![no_std]
