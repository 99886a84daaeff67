//! The kernel/user ABI of fraiseql-edge.
//!
//! Every type that crosses the kernel boundary lives here, once, as a
//! `#[repr(C)]` `Copy` struct with explicit padding; the XDP program and the
//! daemon both import it. The rate math ([`bucket`]) and the client-key rules
//! ([`key`]) are plain functions so that unit tests exercise exactly the code
//! the kernel runs.
#![no_std]

pub mod abi;
pub mod bucket;
pub mod key;

pub use abi::*;
