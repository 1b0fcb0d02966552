//! Source-code-like text: Rust-flavoured items built from a token vocabulary.
//!
//! Real code compresses well because a file keeps reusing a few local names and the project
//! keeps reusing keywords, types and helper names with a skewed (Zipf-like) frequency. The
//! generator imitates exactly that: a per-file set of locals, project-wide identifiers chosen
//! with [`Rng::skewed`], and a few templates for statements, so zstd sees 3-5x like on code.

use super::Rng;

const WORDS: &[&str] = &[
    "access", "account", "active", "adapter", "addr", "alloc", "apply", "arena", "args", "async",
    "atomic", "backend", "batch", "block", "bound", "buffer", "build", "bytes", "cache", "call",
    "cancel", "capacity", "chain", "channel", "check", "chunk", "client", "clone", "close",
    "codec", "commit", "config", "conn", "context", "count", "cursor", "data", "decode", "delta",
    "depth", "digest", "dirty", "done", "draw", "encode", "entry", "error", "event", "extent",
    "field", "file", "filter", "flag", "flush", "format", "frame", "handle", "hash", "header",
    "heap", "hint", "index", "inner", "input", "item", "iter", "job", "key", "kind", "label",
    "layout", "len", "level", "limit", "line", "list", "load", "local", "lock", "map", "mark",
    "merge", "meta", "mode", "node", "offset", "open", "order", "output", "owner", "pack", "page",
    "parse", "path", "peer", "pending", "pool", "pos", "prefix", "queue", "range", "read", "ready",
    "record", "ref", "region", "remote", "reply", "request", "reset", "result", "retry", "root",
    "row", "rule", "scan", "schema", "scope", "seed", "segment", "send", "seq", "server",
    "session", "shard", "size", "slot", "snapshot", "source", "span", "state", "status", "step",
    "store", "stream", "sum", "table", "target", "task", "token", "total", "trace", "tree",
    "value", "version", "view", "window", "worker", "write",
];

const KEYWORD_TYPES: &[&str] = &[
    "usize",
    "u64",
    "u32",
    "u8",
    "i64",
    "bool",
    "String",
    "&str",
    "Vec<u8>",
    "Option<usize>",
    "&[u8]",
    "Duration",
    "PathBuf",
];

const OPS: &[&str] = &["==", "!=", "<", ">", "<=", ">=", "+", "-", "*", "&&"];

/// Project-wide names: identifiers and types.
#[derive(Debug, Clone)]
pub struct Vocab {
    idents: Vec<String>,
    types: Vec<String>,
}

impl Vocab {
    /// A vocabulary of a few thousand names built from [`WORDS`].
    pub fn new(rng: &mut Rng) -> Self {
        let idents = (0..2500)
            .map(|_| {
                let n = 1 + rng.index(3);
                (0..n)
                    .map(|_| WORDS[rng.index(WORDS.len())])
                    .collect::<Vec<_>>()
                    .join("_")
            })
            .collect();
        let types = (0..400)
            .map(|_| {
                let n = 1 + rng.index(2);
                (0..n)
                    .map(|_| camel(WORDS[rng.index(WORDS.len())]))
                    .collect::<String>()
            })
            .collect();
        Vocab { idents, types }
    }

    /// One plain word, for file and directory names.
    pub fn word(&self, rng: &mut Rng) -> &'static str {
        WORDS[rng.index(WORDS.len())]
    }

    fn ident(&self, rng: &mut Rng) -> &str {
        &self.idents[rng.skewed(self.idents.len())]
    }

    fn ty(&self, rng: &mut Rng) -> &str {
        if rng.chance(35) {
            KEYWORD_TYPES[rng.skewed(KEYWORD_TYPES.len())]
        } else {
            &self.types[rng.skewed(self.types.len())]
        }
    }
}

fn camel(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// Generates the text of one file: it keeps a handful of local names that recur in it.
#[derive(Debug)]
pub struct TextGen<'a> {
    vocab: &'a Vocab,
    locals: Vec<String>,
    out: Vec<u8>,
}

impl<'a> TextGen<'a> {
    /// A generator for one file, with its own locals.
    pub fn new(vocab: &'a Vocab, rng: &mut Rng) -> Self {
        let n = 6 + rng.index(16);
        let locals = (0..n).map(|_| vocab.ident(rng).to_string()).collect();
        TextGen {
            vocab,
            locals,
            out: Vec::new(),
        }
    }

    /// A whole file of about `len` bytes, ending at a line boundary when possible.
    pub fn file(mut self, rng: &mut Rng, len: usize) -> Vec<u8> {
        let c = self.comment(rng, 12);
        self.line(0, &format!("//! {c}"));
        for _ in 0..2 + rng.index(6) {
            let (a, b) = (
                self.vocab.ident(rng).to_string(),
                self.vocab.ty(rng).to_string(),
            );
            self.line(0, &format!("use crate::{a}::{b};"));
        }
        self.line(0, "");
        while self.out.len() < len {
            self.item(rng);
        }
        let cut = self.out[..len]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(len, |i| i + 1);
        self.out.truncate(cut);
        self.out
    }

    /// `n` statement lines, as a patch or an appended hunk would add.
    pub fn lines(mut self, rng: &mut Rng, n: usize) -> Vec<u8> {
        for _ in 0..n {
            self.simple_stmt(rng, 1);
        }
        self.out
    }

    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.extend_from_slice(b"    ");
        }
        self.out.extend_from_slice(text.as_bytes());
        self.out.push(b'\n');
    }

    fn local(&self, rng: &mut Rng) -> String {
        if rng.chance(75) {
            self.locals[rng.skewed(self.locals.len())].clone()
        } else {
            self.vocab.ident(rng).to_string()
        }
    }

    fn comment(&self, rng: &mut Rng, max: usize) -> String {
        let n = 3 + rng.index(max);
        (0..n)
            .map(|_| self.vocab.word(rng))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn number(rng: &mut Rng) -> String {
        if rng.chance(5) {
            format!("0x{:08x}", rng.next_u64() as u32)
        } else {
            rng.skewed(1000).to_string()
        }
    }

    fn expr(&self, rng: &mut Rng) -> String {
        let l = self.local(rng);
        match rng.index(8) {
            0 | 1 => l,
            2 => format!("{l}.{}()", self.vocab.ident(rng)),
            3 => format!("{}({l}, {})", self.vocab.ident(rng), Self::number(rng)),
            4 => format!("{l} {} {}", OPS[rng.index(OPS.len())], Self::number(rng)),
            5 => format!("{}::new({l})", self.vocab.ty(rng)),
            6 => format!("&{l}[{}..]", self.local(rng)),
            _ => format!("\"{}\"", self.comment(rng, 4)),
        }
    }

    fn item(&mut self, rng: &mut Rng) {
        match rng.index(10) {
            0 | 1 => self.strukt(rng),
            2 => {
                let name = self.vocab.ident(rng).to_ascii_uppercase();
                let (ty, n) = (self.vocab.ty(rng).to_string(), Self::number(rng));
                self.line(0, &format!("pub const {name}: {ty} = {n};"));
                self.line(0, "");
            }
            3 | 4 => {
                let ty = self.vocab.ty(rng).to_string();
                self.line(0, &format!("impl {ty} {{"));
                for _ in 0..1 + rng.index(4) {
                    self.function(rng, 1);
                }
                self.line(0, "}");
                self.line(0, "");
            }
            _ => self.function(rng, 0),
        }
    }

    fn strukt(&mut self, rng: &mut Rng) {
        let c = self.comment(rng, 10);
        self.line(0, &format!("/// {c}"));
        self.line(0, "#[derive(Debug, Clone, Default)]");
        let ty = self.vocab.ty(rng).to_string();
        self.line(0, &format!("pub struct {ty} {{"));
        for _ in 0..2 + rng.index(7) {
            let (f, t) = (self.local(rng), self.vocab.ty(rng).to_string());
            self.line(1, &format!("pub {f}: {t},"));
        }
        self.line(0, "}");
        self.line(0, "");
    }

    fn function(&mut self, rng: &mut Rng, depth: usize) {
        if rng.chance(60) {
            let c = self.comment(rng, 14);
            self.line(depth, &format!("/// {c}"));
        }
        let name = self.vocab.ident(rng).to_string();
        let args: Vec<String> = (0..rng.index(4))
            .map(|_| format!("{}: {}", self.local(rng), self.vocab.ty(rng)))
            .collect();
        let ret = self.vocab.ty(rng).to_string();
        let vis = if rng.chance(50) { "pub " } else { "" };
        self.line(
            depth,
            &format!(
                "{vis}fn {name}({}) -> Result<{ret}, Error> {{",
                args.join(", ")
            ),
        );
        for _ in 0..2 + rng.index(12) {
            self.stmt(rng, depth + 1);
        }
        let l = self.local(rng);
        self.line(depth + 1, &format!("Ok({l})"));
        self.line(depth, "}");
        self.line(0, "");
    }

    fn stmt(&mut self, rng: &mut Rng, depth: usize) {
        if depth > 4 || rng.chance(70) {
            return self.simple_stmt(rng, depth);
        }
        let (l, e) = (self.local(rng), self.expr(rng));
        let head = match rng.index(3) {
            0 => format!("if {l} {} {} {{", OPS[rng.index(6)], Self::number(rng)),
            1 => format!("for {l} in {e}.iter() {{"),
            _ => format!("while let Some({l}) = {e}.next() {{"),
        };
        self.line(depth, &head);
        for _ in 0..1 + rng.index(4) {
            self.stmt(rng, depth + 1);
        }
        self.line(depth, "}");
    }

    fn simple_stmt(&mut self, rng: &mut Rng, depth: usize) {
        let (l, e) = (self.local(rng), self.expr(rng));
        let text = match rng.index(7) {
            0 | 1 => format!("let {l} = {e};"),
            2 => format!("let mut {l}: {} = {e};", self.vocab.ty(rng)),
            3 => format!("{l}.{}({e})?;", self.vocab.ident(rng)),
            4 => format!("{l} += {e};"),
            5 => format!("// {}", self.comment(rng, 10)),
            _ => format!("return Err(Error::{}({e}));", camel(self.vocab.word(rng))),
        };
        self.line(depth, &text);
    }
}
