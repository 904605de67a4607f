//! The `textrec` binary as a user runs it.

use std::process::Command;

#[test]
fn vocabulary_json_lists_the_blank_first_then_every_character_once() {
    let output = Command::new(env!("CARGO_BIN_EXE_textrec"))
        .args(["vocabulary", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let tokens: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(tokens.len(), 80);
    assert_eq!(tokens[0], "<B>");
    let mut chars: Vec<&String> = tokens[1..].iter().collect();
    assert!(chars.iter().all(|t| t.chars().count() == 1));
    chars.sort();
    chars.dedup();
    assert_eq!(chars.len(), 79, "no character twice");
    for c in ["a", "Z", "7", " ", "?", "'"] {
        assert!(tokens.iter().any(|t| t == c), "{c:?} is predicted");
    }
}
