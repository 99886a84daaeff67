//! A plain-text table: a header row and columns padded to their widest
//! cell, two spaces apart, numbers right-aligned. No trailing spaces.

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Rows of cells under a header.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named `header`, left-aligned.
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            align: vec![Align::Left; header.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns the columns at `columns` (numbers).
    pub fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            self.align[c] = Align::Right;
        }
        self
    }

    /// Adds a row; missing cells are empty, extra cells are an error of the
    /// caller.
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert!(cells.len() <= self.header.len(), "more cells than columns");
        self.rows.push(cells);
    }

    /// The table as lines, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (c, (&w, align)) in widths.iter().zip(&self.align).enumerate() {
                let cell = row.get(c).map_or("", String::as_str);
                let pad = w - width(cell);
                if c > 0 {
                    line.push_str("  ");
                }
                match align {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Characters on screen (the cells are ASCII or plain Unicode text).
fn width(text: &str) -> usize {
    text.chars().count()
}

/// `key: value` lines with the values lined up.
pub fn pairs(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in rows {
        let line = format!("{key}:{}  {value}", " ".repeat(w - width(key)));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
