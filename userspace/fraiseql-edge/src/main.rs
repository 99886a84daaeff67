//! The `fraiseql-edge` binary; see [`fraiseql_edge::cli`].

fn main() -> std::process::ExitCode {
    fraiseql_edge::cli::main()
}
