//! Where results go: stdout, as text for people or as one JSON document
//! (`--json`). A closed pipe (`edgectl watch | head`) ends the output
//! quietly instead of panicking.

use std::io::{self, Write};

use serde::Serialize;

use crate::exit::{Error, Exit};

/// An answer that prints as text or as JSON (its serde field names are the
/// stable `--json` interface).
pub trait View: Serialize {
    /// The text for people, ending in a newline.
    fn human(&self) -> String;
}

/// Text or JSON on stdout.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// `--json`.
    pub json: bool,
}

/// The reader of stdout went away: stop writing, exit as if done.
#[derive(Debug)]
pub struct Closed;

impl Output {
    /// Prints `view` (pretty JSON with `--json`).
    pub fn print(&self, view: &impl View) -> Result<(), Error> {
        let text = if self.json {
            let mut json = serde_json::to_string_pretty(view).map_err(encode)?;
            json.push('\n');
            json
        } else {
            view.human()
        };
        // A closed pipe after a one-shot answer is not a failure.
        let _ = write(&text);
        Ok(())
    }

    /// Prints one line of a stream (compact JSON with `--json`) and flushes.
    pub fn line(&self, view: &impl View) -> Result<Result<(), Closed>, Error> {
        let text = if self.json {
            let mut json = serde_json::to_string(view).map_err(encode)?;
            json.push('\n');
            json
        } else {
            view.human()
        };
        Ok(write(&text))
    }
}

fn write(text: &str) -> Result<(), Closed> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|_| Closed)
}

fn encode(e: serde_json::Error) -> Error {
    Error::new(Exit::Failure, format!("encoding JSON: {e}"))
}
