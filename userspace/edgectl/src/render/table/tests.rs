use super::{Table, pairs};

#[test]
fn columns_line_up_and_numbers_align_right() {
    let mut t = Table::new(&["ADDRESS", "PASSED", "NOTE"]).right(&[1]);
    t.row(vec!["10.0.0.1".into(), "1,234".into(), "x".into()]);
    t.row(vec!["2001:db8::1".into(), "7".into(), String::new()]);
    assert_eq!(
        t.render(),
        "ADDRESS      PASSED  NOTE\n\
         10.0.0.1      1,234  x\n\
         2001:db8::1       7\n"
    );
}

#[test]
fn header_only_and_short_rows() {
    let t = Table::new(&["A", "B"]);
    assert_eq!(t.render(), "A  B\n");
    let mut t = Table::new(&["NAME", "STATE"]);
    t.row(vec!["users".into()]);
    assert_eq!(t.render(), "NAME   STATE\nusers\n");
}

#[test]
fn width_counts_characters_not_bytes() {
    let mut t = Table::new(&["K", "V"]);
    t.row(vec!["é→".into(), "1".into()]);
    t.row(vec!["abc".into(), "2".into()]);
    assert_eq!(t.render(), "K    V\né→   1\nabc  2\n");
}

#[test]
fn pairs_align_values() {
    let text = pairs(&[
        ("version", "0.1.0".into()),
        ("ready", "yes".into()),
        ("empty", String::new()),
    ]);
    assert_eq!(text, "version:  0.1.0\nready:    yes\nempty:\n");
}
