//! The library crates know nothing of the command line: no string in the engine's or the crypto
//! crate's sources may name an `rbackup` subcommand or a `--flag`. Advice of that kind belongs
//! to the agent (`crates/cli/src/advice.rs`), which maps the typed errors to it.
//!
//! The sources are tokenized (not grepped), so every string literal is seen — in code, in
//! `#[error(...)]` attributes and in macro arguments such as `format!` — while comments and doc
//! comments, which may well describe the agent, are not.

use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// The agent's subcommands (`rbackup --help`): "rbackup <one of these>" is a command line.
const SUBCOMMANDS: &[&str] = &[
    "vault",
    "register",
    "backup",
    "recovery-points",
    "restore",
    "check",
    "passphrase",
    "jobs",
    "job",
    "schedule",
    "run",
    "forget",
    "prune",
    "throttle",
];

/// Why `text` reads as command-line advice, if it does.
fn cli_text(text: &str) -> Option<String> {
    if text.contains("`rbackup") {
        return Some("quotes an `rbackup` command".into());
    }
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '`' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        if pair[0] == "rbackup" && SUBCOMMANDS.contains(&pair[1]) {
            return Some(format!("names the command `rbackup {}`", pair[1]));
        }
    }
    words
        .iter()
        .find(|w| {
            w.strip_prefix("--")
                .is_some_and(|f| f.starts_with(|c: char| c.is_ascii_lowercase()))
        })
        .map(|w| format!("names the flag {w}"))
}

/// Every string literal's value in `source`, outside doc comments.
fn literals(source: &str) -> Vec<String> {
    let tokens: TokenStream = source.parse().expect("the source tokenizes");
    let mut out = Vec::new();
    collect(tokens, &mut out);
    out
}

fn collect(tokens: TokenStream, out: &mut Vec<String>) {
    let mut after_pound = false;
    for tt in tokens {
        // `#` opens an attribute; `#!` an inner one.
        let pound = matches!(&tt, TokenTree::Punct(p)
            if p.as_char() == '#' || (after_pound && p.as_char() == '!'));
        match tt {
            // `///` and `//!` arrive as `#[doc = "..."]`: skip those attributes whole.
            TokenTree::Group(g)
                if after_pound && g.delimiter() == Delimiter::Bracket && is_doc(&g.stream()) => {}
            TokenTree::Group(g) => collect(g.stream(), out),
            TokenTree::Literal(lit) => match syn::Lit::new(lit) {
                syn::Lit::Str(s) => out.push(s.value()),
                syn::Lit::ByteStr(b) => out.push(String::from_utf8_lossy(&b.value()).into_owned()),
                _ => {}
            },
            _ => {}
        }
        after_pound = pound;
    }
}

fn is_doc(attr: &TokenStream) -> bool {
    matches!(attr.clone().into_iter().next(), Some(TokenTree::Ident(i)) if i == "doc")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(file, literal, why)` for each offending literal under `dirs`, and the literals seen.
fn scan(dirs: &[PathBuf]) -> (Vec<(PathBuf, String, String)>, usize) {
    let (mut found, mut seen) = (Vec::new(), 0);
    for dir in dirs {
        let mut files = Vec::new();
        rust_files(dir, &mut files);
        for file in files {
            let source = std::fs::read_to_string(&file).expect("source readable");
            for lit in literals(&source) {
                seen += 1;
                if let Some(why) = cli_text(&lit) {
                    found.push((file.clone(), lit, why));
                }
            }
        }
    }
    (found, seen)
}

#[test]
fn engine_and_crypto_sources_hold_no_command_line_text() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = [root.join("src"), root.join("../crypto/src")];
    let (found, seen) = scan(&dirs);
    // Guards against a scan that silently read nothing.
    assert!(
        seen > 200,
        "only {seen} string literals found under {dirs:?}"
    );
    let report: Vec<String> = found
        .iter()
        .map(|(f, lit, why)| format!("{}: {lit:?} {why}", f.display()))
        .collect();
    assert!(
        report.is_empty(),
        "command-line text in a library crate (advice belongs in the cli's advice.rs):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_scanner_flags_commands_and_flags_in_strings_but_not_docs_or_protocol_names() {
    let sample = r##"
        //! Run `rbackup check` to see: a module doc may describe the agent.
        /// Try `rbackup prune --wait`: so may an item's doc.
        #[error("{what} is corrupt: run `rbackup check --read-data`")]
        struct A;
        fn f() {
            let ad = b"rbackup blob v1";
            let meta = format!("rbackup meta v1/{kind}/{name}");
            let busy = format!("another {} is running; wait", "prune");
            let x = format!("{n} points: remove old ones with rbackup forget", n = 1);
            let y = r#"or choose another folder with --recovery-dir"#;
            let z = "a -- b and x--y are not flags";
        }
    "##;
    let lits = literals(sample);
    let flagged: Vec<&String> = lits.iter().filter(|l| cli_text(l).is_some()).collect();
    assert_eq!(
        flagged,
        [
            "{what} is corrupt: run `rbackup check --read-data`",
            "{n} points: remove old ones with rbackup forget",
            "or choose another folder with --recovery-dir",
        ],
        "literals seen: {lits:?}"
    );
}
