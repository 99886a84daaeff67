//! Turning answers into output: aligned tables, readable numbers and
//! times, and the choice between text and `--json`.

pub mod format;
pub mod output;
pub mod table;

pub use output::{Output, View};
pub use table::Table;
