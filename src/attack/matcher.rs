//! A small typed match language over Ethernet frames, in the spirit of pcap
//! filters: `udp dst port 4433 and src node s-temp`, `arp`,
//! `payload[0:2] == 0x5442`. The full language is in `docs/attacks.md`.
//!
//! Text is parsed once into a tree ([`Matcher::parse`]); every word is
//! checked then (addresses, ports, byte strings, node names), so matching a
//! frame cannot fail. [`Matcher::matches`] slices the frame once with
//! `etherparse` (zero-copy, no `unsafe` here, actively maintained, and
//! lax: a truncated frame still shows the headers it has) and walks the
//! tree without allocating. A test that needs a layer the frame lacks is
//! false.
//!
//! Limits on what the text controls: at most [`MAX_FILTER_BYTES`] bytes and
//! [`MAX_NESTING`] nested `(` or `not`, so parsing and matching recurse a
//! bounded depth.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use super::packet::{FrameView, parse_hex, parse_mac};

/// Longest filter text accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 4096;
/// Deepest nesting of `(` and `not` accepted.
pub const MAX_NESTING: usize = 64;
/// Largest `payload[N]` offset: no frame payload is longer.
pub const MAX_PAYLOAD_OFFSET: usize = 65_535;

/// Why a filter text was rejected. `Display` is one line,
/// `LINE:COL: MESSAGE`, where the message says what was found and what was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct MatchError {
    /// 1-based line of the offending token within the text.
    pub line: usize,
    /// 1-based column (in characters) of the offending token in its line.
    pub col: usize,
    pub message: String,
}

/// A compiled filter. Cloning copies the tree; `Debug` and `Serialize` show
/// the text it was parsed from.
#[derive(Clone)]
pub struct Matcher {
    source: String,
    expr: Expr,
}

impl Matcher {
    /// Parses `text`; `resolve` maps node names to their addresses (`None`:
    /// no such node). Empty or blank text matches every frame.
    pub fn parse(
        text: &str,
        resolve: &dyn Fn(&str) -> Option<Vec<IpAddr>>,
    ) -> Result<Matcher, MatchError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(MatchError {
                line: 1,
                col: 1,
                message: format!(
                    "filter is {} bytes long; at most {MAX_FILTER_BYTES} bytes are allowed",
                    text.len()
                ),
            });
        }
        let tokens = lex(text).map_err(|(at, message)| error_at(text, at, message))?;
        let mut p = Parser {
            text,
            tokens,
            pos: 0,
            depth: 0,
            resolve,
        };
        let expr = p.parse_filter()?;
        Ok(Matcher {
            source: text.to_string(),
            expr,
        })
    }

    /// A matcher that matches every frame (source `any`).
    pub fn any() -> Matcher {
        Matcher {
            source: "any".to_string(),
            expr: Expr::Any,
        }
    }

    /// Whether `frame` (an Ethernet frame) passes the filter. Never panics,
    /// whatever the bytes.
    pub fn matches(&self, frame: &[u8]) -> bool {
        if let Expr::Any = self.expr {
            return true;
        }
        self.expr.eval(&FrameView::new(frame))
    }

    /// The text this matcher was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Matcher").field(&self.source).finish()
    }
}

impl serde::Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// The compiled tree. `And` and `Or` hold at least two children.
#[derive(Debug, Clone)]
enum Expr {
    Any,
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Test(Test),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Src,
    Dst,
    Either,
}

impl Dir {
    /// Whether `test` holds for the source, the destination or either.
    fn check<T: Copy>(self, (src, dst): (T, T), test: impl Fn(T) -> bool) -> bool {
        match self {
            Dir::Src => test(src),
            Dir::Dst => test(dst),
            Dir::Either => test(src) || test(dst),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Eth,
    Arp,
    Ip,
    Ip6,
    Udp,
    Tcp,
    Icmp,
    Icmp6,
}

impl Proto {
    fn from_word(w: &str) -> Option<Proto> {
        Some(match w {
            "eth" => Proto::Eth,
            "arp" => Proto::Arp,
            "ip" => Proto::Ip,
            "ip6" => Proto::Ip6,
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            "icmp" => Proto::Icmp,
            "icmp6" => Proto::Icmp6,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: Ord>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }

    fn is_order(self) -> bool {
        !matches!(self, Cmp::Eq | Cmp::Ne)
    }
}

#[derive(Debug, Clone)]
enum Test {
    Proto(Proto),
    Host(Dir, IpAddr),
    Net(Dir, IpNet),
    /// A node's addresses.
    Node(Dir, Box<[IpAddr]>),
    /// Inclusive range of UDP or TCP ports.
    Port(Dir, u16, u16),
    Len(Cmp, usize),
    /// `payload[offset..offset + bytes.len()] CMP bytes`; order comparisons
    /// only for one byte.
    PayloadAt {
        offset: usize,
        cmp: Cmp,
        bytes: Box<[u8]>,
    },
    /// Non-empty byte string somewhere in the payload.
    Contains(Box<[u8]>),
    EtherAddr(Dir, [u8; 6]),
    EtherProto(u16),
}

impl Expr {
    fn eval(&self, v: &FrameView) -> bool {
        match self {
            Expr::Any => true,
            Expr::Not(e) => !e.eval(v),
            Expr::And(es) => es.iter().all(|e| e.eval(v)),
            Expr::Or(es) => es.iter().any(|e| e.eval(v)),
            Expr::Test(t) => t.eval(v),
        }
    }
}

impl Test {
    fn eval(&self, v: &FrameView) -> bool {
        match self {
            Test::Proto(p) => match p {
                Proto::Eth => v.macs.is_some(),
                Proto::Arp => v.arp,
                Proto::Ip => v.ipv6 == Some(false),
                Proto::Ip6 => v.ipv6 == Some(true),
                Proto::Udp => v.ip_proto == Some(17),
                Proto::Tcp => v.ip_proto == Some(6),
                Proto::Icmp => v.ip_proto == Some(1),
                Proto::Icmp6 => v.ip_proto == Some(58),
            },
            Test::Host(d, a) => v.addrs.is_some_and(|x| d.check(x, |ip| ip == *a)),
            Test::Net(d, n) => v.addrs.is_some_and(|x| d.check(x, |ip| n.contains(&ip))),
            Test::Node(d, addrs) => v
                .addrs
                .is_some_and(|x| d.check(x, |ip| addrs.contains(&ip))),
            Test::Port(d, lo, hi) => v
                .ports
                .is_some_and(|x| d.check(x, |p| (*lo..=*hi).contains(&p))),
            Test::Len(cmp, n) => cmp.holds(v.len, *n),
            Test::PayloadAt { offset, cmp, bytes } => {
                let Some(got) = v
                    .payload
                    .and_then(|p| p.get(*offset..offset.checked_add(bytes.len())?))
                else {
                    return false;
                };
                cmp.holds(got, &bytes[..])
            }
            Test::Contains(needle) => v
                .payload
                .is_some_and(|p| p.windows(needle.len()).any(|w| w == &needle[..])),
            Test::EtherAddr(d, mac) => v.macs.is_some_and(|x| d.check(x, |m| m == *mac)),
            Test::EtherProto(t) => v.ether_type == Some(*t),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Word(&'a str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    /// `!`
    Bang,
    /// `&&`
    AndAnd,
    /// `||`
    OrOr,
    Cmp(Cmp),
    End,
}

impl Tok<'_> {
    /// How the token is named in messages.
    fn describe(&self) -> String {
        let s = match self {
            Tok::Word(w) => w,
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Bang => "!",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::Cmp(c) => match c {
                Cmp::Eq => "==",
                Cmp::Ne => "!=",
                Cmp::Lt => "<",
                Cmp::Le => "<=",
                Cmp::Gt => ">",
                Cmp::Ge => ">=",
            },
            Tok::End => return "the end of the filter".to_string(),
        };
        format!("`{s}`")
    }

    fn is_and(&self) -> bool {
        matches!(self, Tok::AndAnd | Tok::Word("and"))
    }

    fn is_or(&self) -> bool {
        matches!(self, Tok::OrOr | Tok::Word("or"))
    }

    /// Whether an expression can start here (an unknown word can: it gets
    /// its own error).
    fn starts_expr(&self) -> bool {
        match self {
            Tok::Word(w) => *w != "and" && *w != "or",
            Tok::LParen | Tok::Bang => true,
            _ => false,
        }
    }
}

/// A token and the byte offset where it starts.
type Spanned<'a> = (Tok<'a>, usize);

/// Characters that end a word: they are tokens of their own.
fn is_punct(c: char) -> bool {
    matches!(c, '(' | ')' | '[' | ']' | '!' | '=' | '<' | '>' | '&' | '|')
}

/// Splits `text` into tokens, ending with [`Tok::End`] at `text.len()`.
/// Errors are a byte offset and a message.
fn lex(text: &str) -> Result<Vec<Spanned<'_>>, (usize, String)> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut next_is = |want: char| chars.next_if(|&(_, n)| n == want).is_some();
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '!' if next_is('=') => Tok::Cmp(Cmp::Ne),
            '!' => Tok::Bang,
            '=' if next_is('=') => Tok::Cmp(Cmp::Eq),
            '<' if next_is('=') => Tok::Cmp(Cmp::Le),
            '<' => Tok::Cmp(Cmp::Lt),
            '>' if next_is('=') => Tok::Cmp(Cmp::Ge),
            '>' => Tok::Cmp(Cmp::Gt),
            '&' if next_is('&') => Tok::AndAnd,
            '|' if next_is('|') => Tok::OrOr,
            '=' | '&' | '|' => {
                let hint = match c {
                    '=' => "`==` to compare",
                    '&' => "`&&` or `and`",
                    _ => "`||` or `or`",
                };
                return Err((at, format!("unexpected `{c}`; expected {hint}")));
            }
            _ => {
                let mut end = at + c.len_utf8();
                while let Some((i, n)) = chars.next_if(|&(_, n)| !n.is_whitespace() && !is_punct(n))
                {
                    end = i + n.len_utf8();
                }
                Tok::Word(&text[at..end])
            }
        };
        out.push((tok, at));
    }
    out.push((Tok::End, text.len()));
    Ok(out)
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

fn error_at(text: &str, at: usize, message: impl Into<String>) -> MatchError {
    let (line, col) = line_col(text, at);
    MatchError {
        line,
        col,
        message: message.into(),
    }
}

const PRIMARIES: &str = "a protocol (eth, arp, ip, ip6, udp, tcp, icmp, icmp6), host, net, node, port, len, payload, ether, not, any or `(`";
const COMPARISONS: &str = "a comparison (==, !=, <, <=, >, >=)";

struct Parser<'a, 'r> {
    text: &'a str,
    /// Never empty: ends with [`Tok::End`].
    tokens: Vec<Spanned<'a>>,
    pos: usize,
    /// `(` and `not` currently open.
    depth: usize,
    resolve: &'r dyn Fn(&str) -> Option<Vec<IpAddr>>,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Spanned<'a> {
        self.tokens
            .get(self.pos)
            .or(self.tokens.last())
            .copied()
            .unwrap_or((Tok::End, self.text.len()))
    }

    /// Returns the current token and moves past it (never past the end).
    fn bump(&mut self) -> Spanned<'a> {
        let t = self.peek();
        if t.0 != Tok::End {
            self.pos += 1;
        }
        t
    }

    fn err(&self, at: usize, message: impl Into<String>) -> MatchError {
        error_at(self.text, at, message)
    }

    /// An error at the current token: `expected WHAT, found TOKEN`.
    fn expected(&self, what: &str) -> MatchError {
        let (tok, at) = self.peek();
        self.err(at, format!("expected {what}, found {}", tok.describe()))
    }

    fn parse_filter(&mut self) -> Result<Expr, MatchError> {
        if self.peek().0 == Tok::End {
            return Ok(Expr::Any);
        }
        let expr = self.parse_or()?;
        match self.peek() {
            (Tok::End, _) => Ok(expr),
            (Tok::RParen, at) => Err(self.err(at, "unexpected `)`; no `(` is open")),
            (tok, at) => Err(self.err(
                at,
                format!(
                    "unexpected {}; expected `and`, `or` or the end of the filter",
                    tok.describe()
                ),
            )),
        }
    }

    /// Checks that an expression starts after the operator just read.
    fn operand_after(&self, op: &Tok) -> Result<(), MatchError> {
        if self.peek().0.starts_expr() {
            Ok(())
        } else {
            let op = op.describe();
            Err(self.expected(&format!("an expression after {op}")))
        }
    }

    fn parse_or(&mut self) -> Result<Expr, MatchError> {
        let mut terms = vec![self.parse_and()?];
        while self.peek().0.is_or() {
            let (op, _) = self.bump();
            self.operand_after(&op)?;
            terms.push(self.parse_and()?);
        }
        Ok(flatten(terms, Expr::Or))
    }

    fn parse_and(&mut self) -> Result<Expr, MatchError> {
        let mut terms = vec![self.parse_unary()?];
        loop {
            let (tok, _) = self.peek();
            if tok.is_and() {
                self.bump();
                self.operand_after(&tok)?;
            } else if !tok.starts_expr() {
                break;
            }
            terms.push(self.parse_unary()?);
        }
        Ok(flatten(terms, Expr::And))
    }

    fn parse_unary(&mut self) -> Result<Expr, MatchError> {
        let (tok, at) = self.peek();
        let nests = matches!(tok, Tok::Bang | Tok::LParen | Tok::Word("not"));
        if !nests {
            return self.parse_primary();
        }
        if self.depth >= MAX_NESTING {
            return Err(self.err(
                at,
                format!("nesting is deeper than {MAX_NESTING} levels of `(` and `not`"),
            ));
        }
        self.depth += 1;
        let result = if tok == Tok::LParen {
            self.parse_parens()
        } else {
            self.bump();
            self.operand_after(&tok)
                .and_then(|()| self.parse_unary())
                .map(|e| match e {
                    Expr::Not(inner) => *inner,
                    e => Expr::Not(Box::new(e)),
                })
        };
        self.depth -= 1;
        result
    }

    fn parse_parens(&mut self) -> Result<Expr, MatchError> {
        let (open, at) = self.bump();
        self.operand_after(&open)?;
        let expr = self.parse_or()?;
        let (line, col) = line_col(self.text, at);
        match self.peek() {
            (Tok::RParen, _) => {
                self.bump();
                Ok(expr)
            }
            (Tok::End, end) => Err(self.err(end, format!("unclosed `(` opened at {line}:{col}"))),
            _ => Err(self.expected(&format!("`)` to close the `(` opened at {line}:{col}"))),
        }
    }

    fn parse_primary(&mut self) -> Result<Expr, MatchError> {
        let (tok, at) = self.peek();
        let Tok::Word(word) = tok else {
            return Err(self.expected("an expression"));
        };
        if let Some(p) = Proto::from_word(word) {
            self.bump();
            return Ok(Expr::Test(Test::Proto(p)));
        }
        let test = match word {
            "any" => {
                self.bump();
                return Ok(Expr::Any);
            }
            "and" | "or" => return Err(self.expected("an expression")),
            "src" | "dst" => {
                self.bump();
                let dir = if word == "src" { Dir::Src } else { Dir::Dst };
                match self.peek().0 {
                    Tok::Word("host" | "net" | "node" | "port") => self.addressed(dir)?,
                    _ => {
                        return Err(
                            self.expected(&format!("host, net, node or port after `{word}`"))
                        );
                    }
                }
            }
            "host" | "net" | "node" | "port" => self.addressed(Dir::Either)?,
            "len" => {
                self.bump();
                let cmp = self.comparison("`len`")?;
                let (n, at) = self.word("a frame length in bytes")?;
                let n = decimal::<usize>(n).ok_or_else(|| {
                    self.err(at, format!("expected a frame length in bytes, found `{n}`"))
                })?;
                Test::Len(cmp, n)
            }
            "payload" => {
                self.bump();
                self.payload()?
            }
            "ether" => {
                self.bump();
                self.ether()?
            }
            _ => {
                return Err(self.err(at, format!("unknown word `{word}`; expected {PRIMARIES}")));
            }
        };
        Ok(Expr::Test(test))
    }

    /// The next token as a word, moving past it; else `expected WHAT`.
    fn word(&mut self, what: &str) -> Result<(&'a str, usize), MatchError> {
        match self.peek() {
            (Tok::Word(w), at) => {
                self.bump();
                Ok((w, at))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn comparison(&mut self, after: &str) -> Result<Cmp, MatchError> {
        match self.peek().0 {
            Tok::Cmp(c) => {
                self.bump();
                Ok(c)
            }
            _ => Err(self.expected(&format!("{COMPARISONS} after {after}"))),
        }
    }

    /// `host ADDR`, `net CIDR`, `node NAME` or `port N[-M]`, at the keyword.
    fn addressed(&mut self, dir: Dir) -> Result<Test, MatchError> {
        let (keyword, _) = self.word("host, net, node or port")?;
        match keyword {
            "host" => {
                let what = "an IP address like 10.0.1.5 or fd00::1";
                let (w, at) = self.word(what)?;
                let addr = w
                    .parse::<IpAddr>()
                    .map_err(|_| self.err(at, format!("expected {what}, found `{w}`")))?;
                Ok(Test::Host(dir, addr))
            }
            "net" => {
                let what = "a network like 10.0.0.0/16 or fd00::/64";
                let (w, at) = self.word(what)?;
                let net = w
                    .parse::<IpNet>()
                    .map_err(|_| self.err(at, format!("expected {what}, found `{w}`")))?;
                if net.trunc() != net {
                    return Err(self.err(
                        at,
                        format!("network `{w}` has host bits set; expected {}", net.trunc()),
                    ));
                }
                Ok(Test::Net(dir, net))
            }
            "node" => {
                let (name, at) = self.word("a node name")?;
                let addrs = (self.resolve)(name)
                    .ok_or_else(|| self.err(at, format!("unknown node `{name}`")))?;
                Ok(Test::Node(dir, addrs.into_boxed_slice()))
            }
            _ => {
                let what = "a port number (0-65535)";
                let (w, at) = self.word(what)?;
                let port = |s: &str| decimal::<u16>(s);
                let bad = |s: &str| self.err(at, format!("expected {what}, found `{s}`"));
                let (lo, hi) = match w.split_once('-') {
                    None => {
                        let p = port(w).ok_or_else(|| bad(w))?;
                        (p, p)
                    }
                    Some((a, b)) => {
                        let lo = port(a).ok_or_else(|| bad(a))?;
                        let hi = port(b).ok_or_else(|| {
                            self.err(
                                at,
                                format!("expected a port range like 1000-2000, found `{w}`"),
                            )
                        })?;
                        if lo > hi {
                            return Err(self.err(
                                at,
                                format!(
                                    "port range `{w}` is empty; expected LOW-HIGH with LOW <= HIGH"
                                ),
                            ));
                        }
                        (lo, hi)
                    }
                };
                if let (Tok::Word(next), next_at) = self.peek()
                    && next.starts_with('-')
                {
                    return Err(self.err(
                        next_at,
                        format!("expected a port range written without spaces, like 1000-2000, found `{next}`"),
                    ));
                }
                Ok(Test::Port(dir, lo, hi))
            }
        }
    }

    /// After `payload`: `[N]` or `[N:LEN]` then a comparison and a byte
    /// string, or `contains` and a byte string.
    fn payload(&mut self) -> Result<Test, MatchError> {
        match self.peek().0 {
            Tok::LBracket => {}
            Tok::Word("contains") => {
                self.bump();
                let (bytes, _) = self.hex()?;
                return Ok(Test::Contains(bytes.into_boxed_slice()));
            }
            _ => return Err(self.expected("`[` or `contains` after `payload`")),
        }
        self.bump();
        let index_at = self.peek().1;
        let mut index = String::new();
        while let Tok::Word(w) = self.peek().0 {
            index.push_str(w);
            self.bump();
            if index.len() > 32 {
                break;
            }
        }
        if self.peek().0 != Tok::RBracket {
            return Err(self.expected("`]` to close `payload[`"));
        }
        self.bump();
        let what = "an offset like `payload[4]` or an offset and length like `payload[0:2]`";
        let bad = || {
            let found = if index.is_empty() {
                "nothing".to_string()
            } else {
                format!("`{index}`")
            };
            self.err(index_at, format!("expected {what}, found {found}"))
        };
        let (offset, len) = match index.split_once(':') {
            None => (decimal::<usize>(&index).ok_or_else(bad)?, None),
            Some((o, l)) => (
                decimal::<usize>(o).ok_or_else(bad)?,
                Some(decimal::<usize>(l).ok_or_else(bad)?),
            ),
        };
        if offset > MAX_PAYLOAD_OFFSET {
            return Err(self.err(
                index_at,
                format!("payload offset {offset} is too large; at most {MAX_PAYLOAD_OFFSET}"),
            ));
        }
        if len == Some(0) {
            return Err(self.err(index_at, "expected a length of at least 1 byte, found 0"));
        }
        let indexed = format!("payload[{index}]");
        let (cmp_tok, cmp_at) = self.peek();
        let cmp = self.comparison(&format!("`{indexed}`"))?;
        let (bytes, hex_at) = self.hex()?;
        let n = bytes.len();
        if let Some(len) = len
            && len != n
        {
            return Err(self.err(
                hex_at,
                format!(
                    "`{indexed}` is {len} byte{} but the byte string is {n} byte{}; expected {len}",
                    plural(len),
                    plural(n)
                ),
            ));
        }
        if n > 1 && cmp.is_order() {
            return Err(self.err(
                cmp_at,
                format!(
                    "{} compares one byte; for {n} bytes only == and != are allowed",
                    cmp_tok.describe()
                ),
            ));
        }
        Ok(Test::PayloadAt {
            offset,
            cmp,
            bytes: bytes.into_boxed_slice(),
        })
    }

    /// A `0x` byte string, at least one byte.
    fn hex(&mut self) -> Result<(Vec<u8>, usize), MatchError> {
        let what = "a hex byte string like 0xdeadbeef";
        let (w, at) = self.word(what)?;
        if !w.starts_with("0x") {
            return Err(self.err(at, format!("expected {what}, found `{w}`")));
        }
        let bytes = parse_hex(w).map_err(|e| self.err(at, e.to_string()))?;
        Ok((bytes, at))
    }

    /// After `ether`: `src|dst|host MAC` or `proto N`.
    fn ether(&mut self) -> Result<Test, MatchError> {
        let (w, w_at) = self.word("src, dst, host or proto after `ether`")?;
        let dir = match w {
            "src" => Dir::Src,
            "dst" => Dir::Dst,
            "host" => Dir::Either,
            "proto" => {
                let what = "an EtherType (0-65535 or 0x0000-0xffff)";
                let (n, at) = self.word(what)?;
                let t = match n.strip_prefix("0x") {
                    Some(h)
                        if !h.is_empty()
                            && h.len() <= 4
                            && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        u16::from_str_radix(h, 16).ok()
                    }
                    Some(_) => None,
                    None => decimal::<u16>(n),
                }
                .ok_or_else(|| self.err(at, format!("expected {what}, found `{n}`")))?;
                return Ok(Test::EtherProto(t));
            }
            _ => {
                return Err(self.err(
                    w_at,
                    format!("expected src, dst, host or proto after `ether`, found `{w}`"),
                ));
            }
        };
        let what = "a MAC address like 02:7c:00:00:01:00";
        let (m, at) = self.word(what)?;
        let mac =
            parse_mac(m).map_err(|_| self.err(at, format!("expected {what}, found `{m}`")))?;
        Ok(Test::EtherAddr(dir, mac))
    }
}

/// One term as itself, more as an `And` or `Or`.
fn flatten(mut terms: Vec<Expr>, join: fn(Vec<Expr>) -> Expr) -> Expr {
    if terms.len() == 1
        && let Some(only) = terms.pop()
    {
        return only;
    }
    join(terms)
}

/// A number written in decimal digits only (no sign, no spaces).
fn decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attack::packet::{arp_reply, build_udp};
    use etherparse::PacketBuilder;
    use std::net::Ipv4Addr;

    const A: [u8; 6] = [2, 0x7c, 0, 0, 1, 0];
    const B: [u8; 6] = [2, 0x7c, 0, 0, 2, 0];

    fn resolve(name: &str) -> Option<Vec<IpAddr>> {
        match name {
            "s-temp" => Some(vec![
                "10.0.1.5".parse().unwrap(),
                "fd00::5".parse().unwrap(),
            ]),
            "plc" => Some(vec!["10.0.2.7".parse().unwrap()]),
            "ñandú" => Some(vec![]),
            _ => None,
        }
    }

    fn m(text: &str) -> Matcher {
        Matcher::parse(text, &resolve).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        match Matcher::parse(text, &resolve) {
            Ok(m) => panic!("{text} parsed: {:?}", m.expr),
            Err(e) => e.to_string(),
        }
    }

    /// 10.0.1.5:4000 -> 10.0.2.7:4433, A -> B.
    fn udp4(payload: &[u8]) -> Vec<u8> {
        build_udp(
            A,
            B,
            "10.0.1.5:4000".parse().unwrap(),
            "10.0.2.7:4433".parse().unwrap(),
            payload,
        )
        .unwrap()
    }

    /// [fd00::5]:53 -> [fd00::9]:5353.
    fn udp6(payload: &[u8]) -> Vec<u8> {
        build_udp(
            A,
            B,
            "[fd00::5]:53".parse().unwrap(),
            "[fd00::9]:5353".parse().unwrap(),
            payload,
        )
        .unwrap()
    }

    /// 10.0.1.5:40000 -> 10.0.2.7:80.
    fn tcp4(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 1, 5], [10, 0, 2, 7], 64)
            .tcp(40000, 80, 1, 64240)
            .write(&mut f, payload)
            .unwrap();
        f
    }

    fn icmp4() -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([10, 0, 1, 5], [10, 0, 2, 7], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut f, b"ping")
            .unwrap();
        f
    }

    fn icmp6() -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv6(
                "fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                "fd00::9".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                64,
            )
            .icmpv6_echo_request(1, 1)
            .write(&mut f, b"ping6")
            .unwrap();
        f
    }

    /// 10.0.1.5 (A) claims 10.0.2.1 to 10.0.2.7 (B).
    fn arp() -> Vec<u8> {
        arp_reply(A, Ipv4Addr::new(10, 0, 1, 5), B, Ipv4Addr::new(10, 0, 2, 7))
    }

    /// Which of udp4, udp6, tcp4, icmp4, icmp6, arp the filter matches.
    fn which(text: &str) -> Vec<&'static str> {
        let matcher = m(text);
        let frames: [(&str, Vec<u8>); 6] = [
            ("udp4", udp4(b"TB\x00\x01hello")),
            ("udp6", udp6(b"dns?")),
            ("tcp4", tcp4(b"GET / HTTP/1.1")),
            ("icmp4", icmp4()),
            ("icmp6", icmp6()),
            ("arp", arp()),
        ];
        frames
            .iter()
            .filter(|(_, f)| matcher.matches(f))
            .map(|(n, _)| *n)
            .collect()
    }

    const ALL: [&str; 6] = ["udp4", "udp6", "tcp4", "icmp4", "icmp6", "arp"];

    #[test]
    fn protocols() {
        assert_eq!(which("eth"), ALL);
        assert_eq!(which("arp"), ["arp"]);
        assert_eq!(which("ip"), ["udp4", "tcp4", "icmp4"]);
        assert_eq!(which("ip6"), ["udp6", "icmp6"]);
        assert_eq!(which("udp"), ["udp4", "udp6"]);
        assert_eq!(which("tcp"), ["tcp4"]);
        assert_eq!(which("icmp"), ["icmp4"]);
        assert_eq!(which("icmp6"), ["icmp6"]);
        assert_eq!(which("ip6 and icmp6"), ["icmp6"]);
    }

    #[test]
    fn any_and_empty_match_everything() {
        assert_eq!(which("any"), ALL);
        assert_eq!(which(""), ALL);
        assert_eq!(which(" \n\t "), ALL);
        for f in [&[][..], &[0u8; 3], &[0xff; 100]] {
            assert!(m("").matches(f) && Matcher::any().matches(f));
        }
        assert_eq!(Matcher::any().source(), "any");
    }

    #[test]
    fn hosts_nets_and_nodes() {
        assert_eq!(which("host 10.0.1.5"), ["udp4", "tcp4", "icmp4", "arp"]);
        assert_eq!(which("src host 10.0.1.5"), ["udp4", "tcp4", "icmp4", "arp"]);
        assert_eq!(which("dst host 10.0.1.5"), Vec::<&str>::new());
        assert_eq!(which("dst host fd00::9"), ["udp6", "icmp6"]);
        assert_eq!(
            which("src host 10.0.1.5 and dst net 10.0.0.0/16"),
            ["udp4", "tcp4", "icmp4", "arp"]
        );
        assert_eq!(which("dst net 10.0.1.0/24"), Vec::<&str>::new());
        assert_eq!(which("net fd00::/64"), ["udp6", "icmp6"]);
        assert_eq!(which("src node s-temp"), ALL);
        assert_eq!(which("dst node s-temp"), Vec::<&str>::new());
        assert_eq!(which("node plc"), ["udp4", "tcp4", "icmp4", "arp"]);
        assert_eq!(which("dst node plc and arp"), ["arp"]);
    }

    #[test]
    fn ports() {
        assert_eq!(which("port 4433"), ["udp4"]);
        assert_eq!(which("udp dst port 4433 and src node s-temp"), ["udp4"]);
        assert_eq!(which("src port 4433"), Vec::<&str>::new());
        assert_eq!(which("port 53"), ["udp6"]);
        assert_eq!(which("udp and not port 53"), ["udp4"]);
        assert_eq!(which("tcp port 80 or udp port 1000-5000"), ["udp4", "tcp4"]);
        assert_eq!(which("port 0-65535"), ["udp4", "udp6", "tcp4"]);
        assert_eq!(which("dst port 5353-5353"), ["udp6"]);
    }

    #[test]
    fn lengths() {
        let n = udp4(b"TB\x00\x01hello").len();
        assert_eq!(n, 51);
        assert!(m("len == 51").matches(&udp4(b"TB\x00\x01hello")));
        assert!(m("len >= 51").matches(&udp4(b"TB\x00\x01hello")));
        assert!(!m("len > 51").matches(&udp4(b"TB\x00\x01hello")));
        assert!(m("len < 52 and len <= 51 and len != 50").matches(&udp4(b"TB\x00\x01hello")));
        assert!(m("len >= 300").matches(&udp4(&[0; 300])));
        assert!(m("len == 0").matches(&[]));
    }

    #[test]
    fn payload_bytes() {
        assert_eq!(
            which("udp and payload[0:2] == 0x5442 and payload[3] == 0x01"),
            ["udp4"]
        );
        assert_eq!(which("payload[0] == 0x54"), ["udp4"]);
        assert_eq!(which("payload[0] == 0x5442"), ["udp4"]);
        assert_eq!(which("payload[4:5] == 0x68656c6c6f"), ["udp4"]);
        assert_eq!(which("payload[4:5] != 0x68656c6c6f"), ["tcp4", "arp"]);
        assert_eq!(which("payload contains 0x6c6c6f"), ["udp4"]);
        assert_eq!(which("payload contains 0x70696e67"), ["icmp4", "icmp6"]);
        assert_eq!(which("payload contains 0x48545450"), ["tcp4"]);
        // ARP: the Ethernet payload; byte 7 is the low byte of the op.
        assert_eq!(which("payload[7] == 0x02"), ["arp"]);
        // One byte compares in order.
        assert_eq!(
            which(
                "payload[0] > 0x53 and payload[0] < 0x55 and payload[0] >= 0x54 and payload[0] <= 0x54"
            ),
            ["udp4"]
        );
        // Out of range: no match, whatever the comparison.
        assert_eq!(which("payload[9] != 0x00"), ["tcp4", "arp"]);
        assert_eq!(which("payload[8] == 0x6f"), ["udp4"]);
        assert_eq!(which("payload[65535] != 0x00"), Vec::<&str>::new());
        // Spaces inside the brackets are allowed.
        assert_eq!(which("payload[ 0 : 2 ] == 0x5442"), ["udp4"]);
    }

    #[test]
    fn ether() {
        assert_eq!(which("ether src 02:7c:00:00:01:00"), ALL);
        assert_eq!(which("ether dst 02:7c:00:00:01:00"), Vec::<&str>::new());
        assert_eq!(which("ether host 02:7C:00:00:02:00"), ALL);
        assert_eq!(which("ether proto 0x0806"), ["arp"]);
        assert_eq!(which("ether proto 34525"), ["udp6", "icmp6"]);
    }

    #[test]
    fn precedence_implicit_and_and_not() {
        // and binds tighter than or: udp or (tcp and icmp).
        assert_eq!(which("udp or tcp and icmp"), ["udp4", "udp6"]);
        assert_eq!(which("(udp or tcp) and ip"), ["udp4", "tcp4"]);
        assert_eq!(which("udp || tcp && ip"), ["udp4", "udp6", "tcp4"]);
        assert_eq!(which("tcp and ip or arp"), ["tcp4", "arp"]);
        // Juxtaposition is and.
        assert_eq!(which("udp port 53"), ["udp6"]);
        assert_eq!(which("ip udp"), ["udp4"]);
        assert_eq!(which("ip6 udp or arp"), ["udp6", "arp"]);
        // not binds tightest.
        assert_eq!(which("not udp and ip"), ["tcp4", "icmp4"]);
        assert_eq!(which("!udp && !tcp"), ["icmp4", "icmp6", "arp"]);
        assert_eq!(which("not (udp or tcp) ip"), ["icmp4"]);
        assert_eq!(which("not not udp"), ["udp4", "udp6"]);
        assert_eq!(which("! ! ! udp"), ["tcp4", "icmp4", "icmp6", "arp"]);
    }

    #[test]
    fn truncated_frames() {
        let full = udp4(b"TB\x00\x01hello");
        let udp = m("udp and port 4433");
        assert!(udp.matches(&full));
        // Cut inside the payload: headers still match, the payload is shorter.
        let cut = &full[..full.len() - 3];
        assert!(udp.matches(cut));
        assert!(m("payload[0:2] == 0x5442").matches(cut));
        assert!(!m("payload contains 0x6c6c6f").matches(cut));
        // Cut inside the UDP header: still UDP by the IP protocol, no ports.
        let cut = &full[..14 + 20 + 4];
        assert!(m("udp and ip and host 10.0.2.7").matches(cut));
        assert!(!m("port 4433").matches(cut));
        // Shorter than an Ethernet header: only `len` and `any` can hold.
        assert!(!m("eth").matches(&full[..13]));
        assert!(m("not eth and len == 13").matches(&full[..13]));
        for n in 0..full.len() {
            let _ = m("udp port 4433 and payload[0:2] == 0x5442 or arp").matches(&full[..n]);
        }
    }

    #[test]
    fn source_debug_and_serialize() {
        let text = "udp  port 53";
        let matcher = m(text);
        assert_eq!(matcher.source(), text);
        assert_eq!(format!("{matcher:?}"), "Matcher(\"udp  port 53\")");
        assert_eq!(serde_json::to_string(&matcher).unwrap(), "\"udp  port 53\"");
        assert_eq!(matcher.clone().source(), text);
    }

    #[test]
    fn error_messages() {
        let cases: &[(&str, &str)] = &[
            (
                "udp dst port abc",
                "1:14: expected a port number (0-65535), found `abc`",
            ),
            (
                "port 65536",
                "1:6: expected a port number (0-65535), found `65536`",
            ),
            (
                "port +53",
                "1:6: expected a port number (0-65535), found `+53`",
            ),
            (
                "port",
                "1:5: expected a port number (0-65535), found the end of the filter",
            ),
            (
                "port 2000-1000",
                "1:6: port range `2000-1000` is empty; expected LOW-HIGH with LOW <= HIGH",
            ),
            (
                "port 1000-x",
                "1:6: expected a port range like 1000-2000, found `1000-x`",
            ),
            (
                "port 1000 -2000",
                "1:11: expected a port range written without spaces, like 1000-2000, found `-2000`",
            ),
            (
                "udpp",
                "1:1: unknown word `udpp`; expected a protocol (eth, arp, ip, ip6, udp, tcp, icmp, icmp6), host, net, node, port, len, payload, ether, not, any or `(`",
            ),
            ("dst node s-tmp", "1:10: unknown node `s-tmp`"),
            (
                "udp and node",
                "1:13: expected a node name, found the end of the filter",
            ),
            ("udp and (tcp", "1:13: unclosed `(` opened at 1:9"),
            ("udp and (tcp or (arp)", "1:22: unclosed `(` opened at 1:9"),
            (
                "(udp ]",
                "1:6: expected `)` to close the `(` opened at 1:1, found `]`",
            ),
            (
                "udp and",
                "1:8: expected an expression after `and`, found the end of the filter",
            ),
            (
                "udp && )",
                "1:8: expected an expression after `&&`, found `)`",
            ),
            (
                "udp or or tcp",
                "1:8: expected an expression after `or`, found `or`",
            ),
            (
                "not",
                "1:4: expected an expression after `not`, found the end of the filter",
            ),
            (
                "!",
                "1:2: expected an expression after `!`, found the end of the filter",
            ),
            ("()", "1:2: expected an expression after `(`, found `)`"),
            ("and udp", "1:1: expected an expression, found `and`"),
            ("udp )", "1:5: unexpected `)`; no `(` is open"),
            (
                "udp ]",
                "1:5: unexpected `]`; expected `and`, `or` or the end of the filter",
            ),
            (
                "len >= 3 >= 4",
                "1:10: unexpected `>=`; expected `and`, `or` or the end of the filter",
            ),
            ("== udp", "1:1: expected an expression, found `==`"),
            ("udp = 4", "1:5: unexpected `=`; expected `==` to compare"),
            ("udp & tcp", "1:5: unexpected `&`; expected `&&` or `and`"),
            ("udp | tcp", "1:5: unexpected `|`; expected `||` or `or`"),
            (
                "src udp",
                "1:5: expected host, net, node or port after `src`, found `udp`",
            ),
            (
                "host 10.0.0.256",
                "1:6: expected an IP address like 10.0.1.5 or fd00::1, found `10.0.0.256`",
            ),
            (
                "net 10.0.0.0",
                "1:5: expected a network like 10.0.0.0/16 or fd00::/64, found `10.0.0.0`",
            ),
            (
                "net 10.0.0.1/16",
                "1:5: network `10.0.0.1/16` has host bits set; expected 10.0.0.0/16",
            ),
            (
                "len 300",
                "1:5: expected a comparison (==, !=, <, <=, >, >=) after `len`, found `300`",
            ),
            (
                "len > x",
                "1:7: expected a frame length in bytes, found `x`",
            ),
            (
                "payload",
                "1:8: expected `[` or `contains` after `payload`, found the end of the filter",
            ),
            (
                "payload[x] == 0x01",
                "1:9: expected an offset like `payload[4]` or an offset and length like `payload[0:2]`, found `x`",
            ),
            (
                "payload[] == 0x01",
                "1:9: expected an offset like `payload[4]` or an offset and length like `payload[0:2]`, found nothing",
            ),
            (
                "payload[0:2 == 0x01",
                "1:13: expected `]` to close `payload[`, found `==`",
            ),
            (
                "payload[0:0] == 0x01",
                "1:9: expected a length of at least 1 byte, found 0",
            ),
            (
                "payload[65536] == 0x01",
                "1:9: payload offset 65536 is too large; at most 65535",
            ),
            (
                "payload[0:2] 0x5442",
                "1:14: expected a comparison (==, !=, <, <=, >, >=) after `payload[0:2]`, found `0x5442`",
            ),
            (
                "payload[0:2] == 0x54",
                "1:17: `payload[0:2]` is 2 bytes but the byte string is 1 byte; expected 2",
            ),
            (
                "payload[0] < 0x5442",
                "1:12: `<` compares one byte; for 2 bytes only == and != are allowed",
            ),
            (
                "payload[0] == 5442",
                "1:15: expected a hex byte string like 0xdeadbeef, found `5442`",
            ),
            (
                "payload[0] == 0x544",
                "1:15: invalid hex byte string `0x544`: odd number of hex digits (3); expected two per byte, e.g. 0x0a",
            ),
            (
                "payload contains 0x",
                "1:18: invalid hex byte string `0x`: no hex digits; expected at least one byte, e.g. 0xdeadbeef",
            ),
            (
                "ether 02:7c:00:00:01:00",
                "1:7: expected src, dst, host or proto after `ether`, found `02:7c:00:00:01:00`",
            ),
            (
                "ether src 02:7c:00:00:01",
                "1:11: expected a MAC address like 02:7c:00:00:01:00, found `02:7c:00:00:01`",
            ),
            (
                "ether proto 0x10000",
                "1:13: expected an EtherType (0-65535 or 0x0000-0xffff), found `0x10000`",
            ),
            (
                "héllo",
                "1:1: unknown word `héllo`; expected a protocol (eth, arp, ip, ip6, udp, tcp, icmp, icmp6), host, net, node, port, len, payload, ether, not, any or `(`",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&err(text), want, "filter: {text}");
        }
    }

    #[test]
    fn error_positions_on_later_lines_count_chars() {
        assert_eq!(
            err("udp\n  and dst port abc"),
            "2:16: expected a port number (0-65535), found `abc`"
        );
        assert_eq!(
            err("udp and\n(tcp or\n  arp"),
            "3:6: unclosed `(` opened at 2:1"
        );
        // Columns count characters, not bytes: `é` is two bytes.
        assert_eq!(
            err("udp\r\nhost é"),
            "2:6: expected an IP address like 10.0.1.5 or fd00::1, found `é`"
        );
        assert_eq!(
            err("src node ñandú and port x"),
            "1:25: expected a port number (0-65535), found `x`"
        );
        assert_eq!(
            err("udp\nnot port 53 and src node s-tmp"),
            "2:26: unknown node `s-tmp`"
        );
        assert_eq!(
            err("udp and ( é"),
            "1:11: unknown word `é`; expected a protocol (eth, arp, ip, ip6, udp, tcp, icmp, icmp6), host, net, node, port, len, payload, ether, not, any or `(`"
        );
        let e = Matcher::parse("ip\n\n  udpp", &resolve).unwrap_err();
        assert_eq!((e.line, e.col), (3, 3));
    }

    #[test]
    fn limits() {
        let long = "udp ".repeat(1025);
        assert_eq!(
            err(&long),
            "1:1: filter is 4100 bytes long; at most 4096 bytes are allowed"
        );
        let fits = format!("{}udp", " ".repeat(MAX_FILTER_BYTES - 3));
        assert!(Matcher::parse(&fits, &resolve).is_ok());

        let nested = |n: usize| format!("{}udp{}", "(".repeat(n), ")".repeat(n));
        assert!(m(&nested(MAX_NESTING)).matches(&udp4(b"")));
        assert_eq!(
            err(&nested(MAX_NESTING + 1)),
            "1:65: nesting is deeper than 64 levels of `(` and `not`"
        );
        let nots = |n: usize| format!("{}udp", "not ".repeat(n));
        assert!(m(&nots(MAX_NESTING)).matches(&udp4(b"")));
        assert_eq!(
            err(&nots(MAX_NESTING + 1)),
            "1:257: nesting is deeper than 64 levels of `(` and `not`"
        );
        assert!(err(&"!(".repeat(40)).contains("nesting is deeper than 64"));
        // Long flat chains are fine: they do not nest.
        let chain = vec!["udp"; 500].join(" or ");
        assert!(m(&chain).matches(&udp4(b"")));
    }
}
