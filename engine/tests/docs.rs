//! The README's error table is the documented contract: it must list every id the code can
//! return, with the same code and message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use latchkey_engine::ErrorId;

#[test]
fn readme_documents_every_error_id() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md at the workspace root");
    for id in ErrorId::ALL {
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", id.id())))
            .unwrap_or_else(|| panic!("README has no row for {}", id.id()));
        let code = format!("({})", id.code().number());
        assert!(
            row.contains(&code),
            "{}: code {code} missing in {row}",
            id.id()
        );
        assert!(
            row.contains(id.message()),
            "{}: message differs in {row}",
            id.id()
        );
    }
    // An error row: an id, then a code cell such as `FailedPrecondition (9)`.
    let is_code = |cell: &str| {
        cell.trim()
            .strip_suffix(')')
            .and_then(|c| c.split_once(" ("))
            .is_some_and(|(name, number)| {
                name.chars().all(|c| c.is_ascii_alphabetic())
                    && number.chars().all(|c| c.is_ascii_digit())
            })
    };
    let rows = readme
        .lines()
        .filter(|l| l.starts_with("| `") && l.split('|').nth(2).is_some_and(is_code))
        .count();
    assert_eq!(
        rows,
        ErrorId::ALL.len(),
        "README lists ids the code does not have"
    );
}
