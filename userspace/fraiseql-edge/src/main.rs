//! The `fraiseql-edge` binary; see [`fraiseql_edge::cli`].

/// A thread-caching allocator: the data path allocates on one worker and
/// frees on another (hyper's buffers follow their tasks), which glibc
/// serialises on its arena locks (`cargo xtask bench proxy` measures it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fraiseql_edge::cli::main()
}
