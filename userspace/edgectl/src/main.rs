//! edgectl: the operator CLI of fraiseql-edge.

fn main() {
    eprintln!("edgectl: not built yet");
    std::process::exit(2);
}
