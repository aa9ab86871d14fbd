//! Just enough SQL lexing for a proxy: the leading keyword of a statement,
//! `USE db`, `KILL [QUERY] n`, the assignments of a `SET` (to replay them on
//! another server), and `CONNECTION_ID()` (to answer with the proxy's id).
//! Strings, quoted identifiers and comments are skipped, never parsed into.

/// Skips whitespace and comments; `/*! … */` and `/*M! … */` (executable
/// comments) are entered, since the server runs what they hold.
pub fn skip_noise(mut s: &[u8]) -> &[u8] {
    loop {
        match s {
            [c, rest @ ..] if c.is_ascii_whitespace() || *c == b';' => s = rest,
            [b'/', b'*', b'!', rest @ ..] | [b'/', b'*', b'M', b'!', rest @ ..] => {
                let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                s = &rest[digits..];
            }
            [b'/', b'*', rest @ ..] => match find(rest, b"*/") {
                Some(i) => s = &rest[i + 2..],
                None => return &[],
            },
            [b'-', b'-', c, ..] if c.is_ascii_whitespace() => s = skip_line(s),
            [b'#', ..] => s = skip_line(s),
            _ => return s,
        }
    }
}

fn skip_line(s: &[u8]) -> &[u8] {
    match s.iter().position(|&c| c == b'\n') {
        Some(i) => &s[i + 1..],
        None => &[],
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Splits the next word (letters, digits, `_`) off `s` after noise.
pub fn next_word(s: &[u8]) -> (&[u8], &[u8]) {
    let s = skip_noise(s);
    let n = s
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (&s[..n], &s[n..])
}

/// The statement's first keyword, upper-cased (empty if none).
pub fn first_keyword(sql: &[u8]) -> [u8; 12] {
    let (w, _) = next_word(sql);
    let mut out = [0u8; 12];
    for (o, c) in out.iter_mut().zip(w) {
        *o = c.to_ascii_uppercase();
    }
    out
}

/// Whether the statement's first keyword is `kw` (upper case).
pub fn starts_with_keyword(sql: &[u8], kw: &str) -> bool {
    let (w, _) = next_word(sql);
    w.eq_ignore_ascii_case(kw.as_bytes())
}

/// Whether the word `kw` (upper case) appears anywhere in `sql` as a whole
/// word, case-insensitively. Strings and comments are not skipped: a use
/// for conservative checks, where a false "yes" only costs caution.
pub fn contains_keyword(sql: &[u8], kw: &str) -> bool {
    let kw = kw.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
    sql.windows(kw.len()).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(kw)
            && (i == 0 || !ident(sql[i - 1]))
            && sql.get(i + kw.len()).is_none_or(|c| !ident(*c))
    })
}

/// Reads an identifier, bare or back-quoted; returns it and what follows.
fn identifier(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let s = skip_noise(s);
    if let [b'`', rest @ ..] = s {
        let mut out = Vec::new();
        let mut i = 0;
        while i < rest.len() {
            if rest[i] == b'`' {
                if rest.get(i + 1) == Some(&b'`') {
                    out.push(b'`');
                    i += 2;
                    continue;
                }
                return Some((out, &rest[i + 1..]));
            }
            out.push(rest[i]);
            i += 1;
        }
        None
    } else {
        let n = s
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'$' || **c >= 0x80)
            .count();
        (n > 0).then(|| (s[..n].to_vec(), &s[n..]))
    }
}

/// The schema of `USE db`, if that is the whole statement.
pub fn parse_use(sql: &[u8]) -> Option<Vec<u8>> {
    let (w, rest) = next_word(sql);
    if !w.eq_ignore_ascii_case(b"USE") {
        return None;
    }
    let (name, rest) = identifier(rest)?;
    skip_noise(rest).is_empty().then_some(name)
}

/// `KILL [HARD|SOFT] [CONNECTION|QUERY] <target>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill<'a> {
    /// Whether it is `KILL QUERY`, which ends the running statement but not
    /// the connection.
    pub query_only: bool,
    /// The connection named.
    pub target: KillTarget<'a>,
}

/// Whom a KILL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget<'a> {
    /// A connection id: a number, or `CONNECTION_ID()` for the session
    /// itself.
    Id(u64),
    /// Any other expression (`@id`, `(SELECT …)`), which the server
    /// evaluates as an integer.
    Expr(&'a [u8]),
}

/// Parses a KILL statement, `own` being the session's own id (what
/// `CONNECTION_ID()` names); `Some(Err(()))` is a KILL form the proxy
/// cannot translate (`KILL QUERY ID n`, `KILL USER u`) or one without a
/// target.
pub fn parse_kill(sql: &[u8], own: u64) -> Option<Result<Kill<'_>, ()>> {
    let (w, mut rest) = next_word(sql);
    if !w.eq_ignore_ascii_case(b"KILL") {
        return None;
    }
    let mut query_only = false;
    loop {
        let (w, r) = next_word(rest);
        if w.eq_ignore_ascii_case(b"HARD")
            || w.eq_ignore_ascii_case(b"SOFT")
            || w.eq_ignore_ascii_case(b"CONNECTION")
        {
            rest = r;
        } else if w.eq_ignore_ascii_case(b"QUERY") {
            query_only = true;
            rest = r;
        } else {
            break;
        }
    }
    let (w, r) = next_word(rest);
    if w.eq_ignore_ascii_case(b"USER") || (query_only && w.eq_ignore_ascii_case(b"ID")) {
        return Some(Err(()));
    }
    let id = if w.eq_ignore_ascii_case(b"CONNECTION_ID") {
        let args = skip_noise(r);
        let close = args.strip_prefix(b"(").map(skip_noise);
        close
            .and_then(|c| c.strip_prefix(b")"))
            .filter(|after| skip_noise(after).is_empty())
            .map(|_| own)
    } else {
        std::str::from_utf8(w)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|_| skip_noise(r).is_empty())
    };
    let target = match id {
        Some(id) => KillTarget::Id(id),
        None => {
            let expr = skip_noise(rest).trim_ascii_end();
            let expr = expr.strip_suffix(b";").unwrap_or(expr).trim_ascii_end();
            if expr.is_empty() {
                return Some(Err(()));
            }
            KillTarget::Expr(expr)
        }
    };
    Some(Ok(Kill { query_only, target }))
}

/// Whether a KILL target expression uses a table or a sequence, which
/// MariaDB refuses (1970) rather than evaluates: told by its words, a
/// subquery's `FROM` or a sequence function. A constant subquery
/// (`(SELECT 1)`) is evaluated, as by the server. Not seen: a stored
/// function call, which the server would refuse too.
pub fn kill_target_uses_tables(expr: &[u8]) -> bool {
    ["FROM", "NEXTVAL", "LASTVAL", "SETVAL", "VALUE"]
        .iter()
        .any(|k| contains_keyword(expr, k))
}

/// What a `SET` statement does to the session.
#[derive(Debug, PartialEq, Eq)]
pub enum SetEffect {
    /// Session state to keep for replay, in the statement's order.
    Session(Vec<Assignment>),
    /// Nothing to replay (`SET GLOBAL`, `SET TRANSACTION` for the next
    /// transaction only, `SET STATEMENT … FOR`, `SET PASSWORD`).
    None,
}

/// One assignment of a `SET`, as replayed on another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// What is assigned, normalised (`names`, `autocommit`, `@v`, …).
    pub key: String,
    /// The assignment's text, as the client wrote it (`@@session.x = 1`).
    pub text: Vec<u8>,
    /// A user variable given the value of an expression that is not a
    /// literal (`@id = LAST_INSERT_ID()`, `@n = NEXTVAL(s)`,
    /// `@x = (SELECT …)`): running the text again on another server could
    /// give another value or repeat a side effect, so its value is read
    /// back and replayed instead. Holds the variable as written (`@id`).
    pub capture: Option<Vec<u8>>,
}

impl Assignment {
    fn new(key: String, text: &[u8]) -> Self {
        let capture = user_variable_from_expression(&key, text);
        Self {
            key,
            text: text.to_vec(),
            capture,
        }
    }
}

/// For `@v = <expr>` where `<expr>` is not a literal: `@v` as written.
fn user_variable_from_expression(key: &str, text: &[u8]) -> Option<Vec<u8>> {
    if !key.starts_with('@') || key.starts_with("@@") {
        return None;
    }
    let at = text.iter().position(|&c| c == b'=' || c == b':')?;
    let target = trim(&text[..at]);
    let value = match &text[at..] {
        [b':', b'=', rest @ ..] | [b'=', rest @ ..] => trim(rest),
        _ => return Some(target.to_vec()),
    };
    (!is_literal(value)).then(|| target.to_vec())
}

/// Whether `v` is one plain literal: a number, a quoted string, a hex or
/// bit literal, `NULL`, `TRUE` or `FALSE`. Anything else (a function, a
/// subquery, another variable, an introducer) is not.
fn is_literal(v: &[u8]) -> bool {
    let word = |w: &str| v.eq_ignore_ascii_case(w.as_bytes());
    if word("NULL") || word("TRUE") || word("FALSE") {
        return true;
    }
    let quoted = |q: u8, body: &[u8]| {
        // One string: no unescaped quote inside (a doubled one is fine).
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'\\' => i += 2,
                c if c == q && body.get(i + 1) == Some(&q) => i += 2,
                c if c == q => return false,
                _ => i += 1,
            }
        }
        i == body.len()
    };
    match v {
        [q @ (b'\'' | b'"'), body @ .., last] if last == q => quoted(*q, body),
        [b'x' | b'X' | b'b' | b'B', b'\'', body @ .., b'\''] => {
            body.iter().all(|c| c.is_ascii_hexdigit())
        }
        [b'0', b'x' | b'b', rest @ ..] => {
            !rest.is_empty() && rest.iter().all(|c| c.is_ascii_hexdigit())
        }
        [first, ..] => {
            (first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.'))
                && v.iter().any(u8::is_ascii_digit)
                && v.iter()
                    .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
        }
        [] => false,
    }
}

/// Splits a text of several statements at the `;` that end them (outside
/// strings, quoted identifiers and comments). The last piece may be empty.
pub fn split_statements(sql: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < sql.len() {
        match &sql[i..] {
            [q @ (b'\'' | b'"' | b'`'), ..] => {
                i += 1;
                while i < sql.len() && sql[i] != *q {
                    if sql[i] == b'\\' && *q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            [b'/', b'*', rest @ ..] => {
                i += find(rest, b"*/").map_or(rest.len() + 2, |e| e + 3);
            }
            [b'-', b'-', c, ..] if c.is_ascii_whitespace() => {
                i += sql[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .unwrap_or(sql.len() - i);
            }
            [b'#', ..] => {
                i += sql[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .unwrap_or(sql.len() - i);
            }
            [b';', ..] => {
                parts.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&sql[start.min(sql.len())..]);
    parts
}

/// The `SET` statements of a statement text whose assignments the session
/// keeps, each alone (a text of several statements is split, so nothing
/// but the assignments is ever replayed). A compound statement (`BEGIN NOT
/// ATOMIC`, `IF`, `LOOP`, a stored program's body, …) runs its `SET`s only
/// on some paths, or on local variables: none of its text is kept.
pub fn session_sets(sql: &[u8]) -> Vec<&[u8]> {
    let statements = split_statements(sql);
    if statements.iter().any(|s| opens_compound(s)) {
        return Vec::new();
    }
    statements
        .into_iter()
        .filter(|s| starts_with_keyword(s, "SET"))
        .collect()
}

/// Whether a statement (a piece of a multi-statement text) opens a block
/// whose body holds `;`-separated statements.
fn opens_compound(s: &[u8]) -> bool {
    let (w, rest) = next_word(s);
    let w = w.to_ascii_uppercase();
    let opener = ["IF", "CASE", "LOOP", "WHILE", "REPEAT", "DECLARE", "FOR"];
    if opener.iter().any(|o| w == o.as_bytes()) {
        return true;
    }
    match w.as_slice() {
        b"BEGIN" => next_word(rest).0.eq_ignore_ascii_case(b"NOT"),
        b"CREATE" | b"ALTER" => contains_keyword(s, "BEGIN"),
        // A label: `name: BEGIN NOT ATOMIC …`.
        _ => !w.is_empty() && skip_noise(rest).starts_with(b":"),
    }
}

/// Splits `s` at top-level commas (outside quotes, parentheses, comments).
fn split_top_level(s: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < s.len() && s[i] != q {
                    if s[i] == b'\\' && q != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' => depth += 1,
            b')' => depth -= 1,
            b',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&s[start..]);
    parts
}

/// `s` without noise before it, and without trailing blanks, `;` and the
/// `*/` that closes an executable comment it began in (`/*!40101 SET
/// NAMES utf8mb4 */`, as mysqldump writes).
fn trim(s: &[u8]) -> &[u8] {
    let s = skip_noise(s);
    let mut s = s;
    loop {
        let end = s
            .iter()
            .rposition(|c| !c.is_ascii_whitespace() && *c != b';')
            .map_or(0, |i| i + 1);
        s = &s[..end];
        match s.strip_suffix(b"*/") {
            Some(inner) => s = inner,
            None => return s,
        }
    }
}

/// Classifies a `SET` statement (which must start with SET).
/// Only the first statement of a text of several is looked at.
pub fn parse_set(sql: &[u8]) -> SetEffect {
    let sql = split_statements(sql).into_iter().next().unwrap_or_default();
    let (w, body) = next_word(sql);
    if !w.eq_ignore_ascii_case(b"SET") {
        return SetEffect::None;
    }
    let (w2, after) = next_word(body);
    let upper = w2.to_ascii_uppercase();
    match upper.as_slice() {
        b"GLOBAL" | b"TRANSACTION" | b"STATEMENT" | b"PASSWORD" | b"DEFAULT" | b"PERSIST"
        | b"PERSIST_ONLY" => return SetEffect::None,
        b"NAMES" | b"CHARACTER" | b"CHARSET" => {
            return SetEffect::Session(vec![Assignment::new("names".into(), trim(body))]);
        }
        b"ROLE" => return SetEffect::Session(vec![Assignment::new("role".into(), trim(body))]),
        b"SESSION" | b"LOCAL" => {
            let (w3, _) = next_word(after);
            if w3.eq_ignore_ascii_case(b"TRANSACTION") {
                return SetEffect::Session(vec![Assignment::new(
                    "session transaction".into(),
                    trim(body),
                )]);
            }
        }
        _ => {}
    }
    let mut out = Vec::new();
    for part in split_top_level(body) {
        let part = trim(part);
        if part.is_empty() {
            continue;
        }
        let Some(key) = assignment_key(part) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        out.push(Assignment::new(key, part));
    }
    SetEffect::Session(out)
}

/// The normalised target of one assignment, or `None` for a global one.
fn assignment_key(a: &[u8]) -> Option<String> {
    let end = a
        .iter()
        .position(|&c| c == b'=' || c == b':')
        .unwrap_or(a.len());
    let target = String::from_utf8_lossy(&a[..end])
        .trim()
        .to_ascii_lowercase();
    let target = target.replace('`', "");
    let mut t = target.as_str();
    for p in ["session ", "local "] {
        if let Some(r) = t.strip_prefix(p) {
            t = r.trim_start();
        }
    }
    if t.starts_with("global ") || t.starts_with("@@global.") {
        return None;
    }
    for p in ["@@session.", "@@local.", "@@"] {
        if let Some(r) = t.strip_prefix(p) {
            return Some(r.trim().to_string());
        }
    }
    Some(t.trim().to_string())
}

const CONNECTION_ID: &[u8] = b"connection_id";

/// The length of a `CONNECTION_ID()` call at the front of `s`, whose first
/// word is `word_len` bytes long.
fn connection_id_call(s: &[u8], word_len: usize) -> Option<usize> {
    if !s[..word_len].eq_ignore_ascii_case(CONNECTION_ID) {
        return None;
    }
    let spaces = |t: &[u8]| t.iter().take_while(|c| c.is_ascii_whitespace()).count();
    let after = &s[word_len..];
    let ws = spaces(after);
    (after.get(ws) == Some(&b'(')).then_some(())?;
    let inner = &after[ws + 1..];
    let ws2 = spaces(inner);
    (inner.get(ws2) == Some(&b')')).then_some(word_len + ws + 1 + ws2 + 1)
}

/// Writes the value of the session's `id` in place of `call`, keeping the
/// column name when the call is a whole select item (after `SELECT` or
/// `,`, before `,`, `FROM` or the end).
fn replace_call(out: &mut Vec<u8>, call: &[u8], rest: &[u8], prev_token: &[u8], id: u32) {
    let (next, _) = next_word(rest);
    let tail = skip_noise(rest);
    let whole_item = (prev_token.eq_ignore_ascii_case(b"SELECT") || prev_token == b",")
        && (tail.is_empty() || tail[0] == b',' || next.eq_ignore_ascii_case(b"FROM"));
    let value = format!("COALESCE(CAST({id:010} AS UNSIGNED), CONNECTION_ID())");
    if whole_item {
        let named = format!("{value} AS `{}`", String::from_utf8_lossy(call));
        out.extend_from_slice(named.as_bytes());
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

/// Replaces each `CONNECTION_ID()` outside strings and comments with `id`,
/// keeping the column name when it is a whole select item. `None` when there
/// is nothing to replace.
///
/// The replacement, `COALESCE(CAST(<id in 10 digits> AS UNSIGNED),
/// CONNECTION_ID())`, has the type MariaDB gives `CONNECTION_ID()` (INT
/// UNSIGNED NOT NULL, display width 10): a bare literal would make `CREATE
/// TABLE … AS SELECT CONCAT(CONNECTION_ID())` a VARCHAR as wide as this
/// id's digits. The function stays in the text, never evaluated, so the
/// query cache still refuses to cache the statement as it would the
/// original.
///
/// DDL (`CREATE`, `ALTER`) is left alone: a column default, view, trigger
/// or stored program runs later, in whatever session uses it, so it must
/// keep the function.
pub fn rewrite_connection_id(sql: &[u8], id: u32) -> Option<Vec<u8>> {
    // Fast path: no '(' preceded by the name.
    let hit = sql.iter().enumerate().any(|(i, c)| {
        *c == b'('
            && i >= CONNECTION_ID.len()
            && sql[i - CONNECTION_ID.len()..i].eq_ignore_ascii_case(CONNECTION_ID)
    });
    if !hit || matches!(&first_keyword(sql)[..6], b"CREATE" | b"ALTER\0") {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 16);
    let mut i = 0;
    let mut changed = false;
    let mut prev_token: &[u8] = b"";
    while i < sql.len() {
        let c = sql[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let start = i;
                i += 1;
                while i < sql.len() && sql[i] != c {
                    if sql[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(sql.len());
                out.extend_from_slice(&sql[start..i]);
                prev_token = b"x";
                continue;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') && sql.get(i + 2) != Some(&b'!') => {
                let end = find(&sql[i + 2..], b"*/").map_or(sql.len(), |e| i + 2 + e + 2);
                out.extend_from_slice(&sql[i..end]);
                i = end;
                continue;
            }
            _ => {}
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let n = sql[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            let word = &sql[i..i + n];
            if let Some(consumed) = connection_id_call(&sql[i..], n) {
                replace_call(
                    &mut out,
                    &sql[i..i + consumed],
                    &sql[i + consumed..],
                    prev_token,
                    id,
                );
                i += consumed;
                changed = true;
                prev_token = b"x";
                continue;
            }
            out.extend_from_slice(word);
            prev_token = word;
            i += n;
            continue;
        }
        if !c.is_ascii_whitespace() {
            prev_token = &sql[i..i + 1];
        }
        out.push(c);
        i += 1;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keywords_skip_comments() {
        assert_eq!(&first_keyword(b"  /* hi */ select 1")[..6], b"SELECT");
        assert_eq!(&first_keyword(b"-- c\n# d\nUSE x")[..3], b"USE");
        assert_eq!(&first_keyword(b"/*!40101 SET NAMES utf8 */")[..3], b"SET");
        assert!(starts_with_keyword(b"\n rollback", "ROLLBACK"));
    }

    #[test]
    fn use_statement() {
        assert_eq!(parse_use(b"USE app"), Some(b"app".to_vec()));
        assert_eq!(parse_use(b"use `we``ird`;"), Some(b"we`ird".to_vec()));
        assert_eq!(parse_use(b"USE a b"), None);
        assert_eq!(parse_use(b"USER"), None);
    }

    #[test]
    fn kill_forms() {
        let kill = |query_only, id| {
            Some(Ok(Kill {
                query_only,
                target: KillTarget::Id(id),
            }))
        };
        let expr = |query_only, e: &'static [u8]| {
            Some(Ok(Kill {
                query_only,
                target: KillTarget::Expr(e),
            }))
        };
        type Case = (&'static [u8], Option<Result<Kill<'static>, ()>>);
        let cases: &[Case] = &[
            (b"KILL 12", kill(false, 12)),
            (b"kill query 7", kill(true, 7)),
            (b"KILL HARD CONNECTION 3;", kill(false, 3)),
            (b"KILL CONNECTION_ID()", kill(false, 99)),
            (b"kill query connection_id ( ) ;", kill(true, 99)),
            (b"KILL CONNECTION_ID", expr(false, b"CONNECTION_ID")),
            (
                b"KILL CONNECTION_ID() + 1",
                expr(false, b"CONNECTION_ID() + 1"),
            ),
            (b"KILL QUERY @id ;", expr(true, b"@id")),
            (b"KILL 1+1", expr(false, b"1+1")),
            (
                b"KILL (SELECT 1) + LASTVAL(s)",
                expr(false, b"(SELECT 1) + LASTVAL(s)"),
            ),
            (b"KILL USER bob", Some(Err(()))),
            (b"KILL QUERY ID 5", Some(Err(()))),
            (b"KILL ;", Some(Err(()))),
            (b"KILL", Some(Err(()))),
            (b"SELECT 1", None),
        ];
        for (sql, want) in cases {
            assert_eq!(
                parse_kill(sql, 99),
                *want,
                "{}",
                String::from_utf8_lossy(sql)
            );
        }
    }

    #[test]
    fn kill_targets_that_use_tables() {
        for (expr, uses) in [
            (&b"@id"[..], false),
            (b"(SELECT 1) + 1", false),
            (b"('x' IN (SELECT 1)) MOD 44", false),
            (b"(SELECT COUNT(*) FROM mysql.user)", true),
            (b"( SELECT 1 ) + LASTVAL(s)", true),
            (b"NEXT VALUE FOR s", true),
            (b"@from_id", false),
        ] {
            assert_eq!(
                kill_target_uses_tables(expr),
                uses,
                "{}",
                String::from_utf8_lossy(expr)
            );
        }
    }

    #[test]
    fn set_effects() {
        assert_eq!(parse_set(b"SET GLOBAL x=1"), SetEffect::None);
        assert_eq!(
            parse_set(b"SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
            SetEffect::None
        );
        let kept = |sql: &[u8]| match parse_set(sql) {
            SetEffect::Session(a) => a
                .into_iter()
                .map(|a| (a.key, String::from_utf8(a.text).unwrap(), a.capture))
                .collect::<Vec<_>>(),
            SetEffect::None => panic!("nothing kept"),
        };
        let plain = |k: &str, t: &str| (k.to_string(), t.to_string(), None);
        assert_eq!(
            kept(b"SET NAMES utf8mb4 COLLATE utf8mb4_bin"),
            [plain("names", "NAMES utf8mb4 COLLATE utf8mb4_bin")]
        );
        assert_eq!(
            kept(b"SET @@session.sql_mode='ANSI', @a := (1,2), autocommit=0, @@global.x=1;"),
            [
                plain("sql_mode", "@@session.sql_mode='ANSI'"),
                ("@a".into(), "@a := (1,2)".into(), Some(b"@a".to_vec())),
                plain("autocommit", "autocommit=0"),
            ]
        );
        assert_eq!(
            kept(b"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            [plain(
                "session transaction",
                "SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"
            )]
        );
        assert_eq!(
            kept(b"SET SESSION wait_timeout = 10"),
            [plain("wait_timeout", "SESSION wait_timeout = 10")]
        );
        // Only the first statement of several: never the INSERT after it.
        assert_eq!(
            kept(b"SET @a=1; INSERT INTO t VALUES (1)"),
            [plain("@a", "@a=1")]
        );
        assert_eq!(
            kept(b"SET @s = 'x;y' ; DELETE FROM t"),
            [plain("@s", "@s = 'x;y'")]
        );
    }

    /// mysqldump's `/*!40101 SET NAMES utf8mb4 */`: the assignment, not
    /// the comment's end (which made its replay fail).
    #[test]
    fn executable_comments_close_outside_the_assignment() {
        let kept = |sql: &[u8]| match parse_set(sql) {
            SetEffect::Session(a) => a.into_iter().map(|a| a.text).collect::<Vec<_>>(),
            SetEffect::None => Vec::new(),
        };
        assert_eq!(
            kept(b"/*!40101 SET NAMES utf8mb4 */"),
            [b"NAMES utf8mb4".to_vec()]
        );
        assert_eq!(
            kept(b"/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;"),
            [
                b"@OLD_SQL_MODE=@@SQL_MODE".to_vec(),
                b"SQL_MODE='NO_AUTO_VALUE_ON_ZERO'".to_vec()
            ]
        );
    }

    /// A user variable set from anything but a literal is read back, not
    /// evaluated again on another server.
    #[test]
    fn user_variables_from_expressions_are_captured() {
        let capture = |sql: &[u8]| match parse_set(sql) {
            SetEffect::Session(a) => a.into_iter().map(|a| a.capture).collect::<Vec<_>>(),
            SetEffect::None => Vec::new(),
        };
        let literal = [
            "1", "-1.5", "1e3", "'it''s'", "\"q\"", "NULL", "true", "X'0aFF'", "0x1f", "b'0101'",
            "'a\\'b'",
        ];
        for v in literal {
            let sql = format!("SET @v = {v}");
            assert_eq!(capture(sql.as_bytes()), [None], "{sql}");
        }
        let expressions = [
            "LAST_INSERT_ID()",
            "NEXTVAL(s)",
            "(SELECT MAX(id) FROM t)",
            "@w",
            "'a' 'b'",
            "_utf8mb4'x'",
            "UUID()",
            "'a' + 1",
        ];
        for v in expressions {
            let sql = format!("SET @V := {v}");
            assert_eq!(capture(sql.as_bytes()), [Some(b"@V".to_vec())], "{sql}");
        }
        // System variables are evaluated again (their expressions read
        // only the session).
        assert_eq!(
            capture(b"SET sql_mode = CONCAT(@@sql_mode, ',ANSI')"),
            [None]
        );
        assert_eq!(
            capture(b"SET @`my v` = NOW(), @x = 2"),
            [Some(b"@`my v`".to_vec()), None]
        );
    }

    fn texts(pieces: Vec<&[u8]>) -> Vec<String> {
        pieces
            .into_iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    #[test]
    fn statements_split_outside_strings_and_comments() {
        let parts = |sql: &[u8]| texts(split_statements(sql));
        assert_eq!(parts(b"SELECT 1"), ["SELECT 1"]);
        assert_eq!(parts(b"SET @a=1;INSERT 2;"), ["SET @a=1", "INSERT 2", ""]);
        assert_eq!(
            parts(b"SELECT ';', `a;b`, \"c;\\\";\" /* ; */ -- ;\n; # ;\nX"),
            ["SELECT ';', `a;b`, \"c;\\\";\" /* ; */ -- ;\n", " # ;\nX"]
        );
        assert_eq!(parts(b"SELECT 'unterminated;"), ["SELECT 'unterminated;"]);
    }

    #[test]
    fn only_plain_sets_of_a_text_are_kept() {
        let sets = |sql: &[u8]| texts(session_sets(sql));
        assert_eq!(
            sets(b"INSERT INTO t VALUES (1); SET @a=1; /* c */ SET names utf8mb4"),
            [" SET @a=1", " /* c */ SET names utf8mb4"]
        );
        assert!(sets(b"SELECT 1").is_empty());
        for compound in [
            "BEGIN NOT ATOMIC SET @a=1; SET @b=2; END",
            "IF @x THEN SET @a=1; ELSE SET @a=2; END IF",
            "lbl: LOOP SET @a=@a+1; LEAVE lbl; END LOOP",
            "CREATE PROCEDURE p() BEGIN SET @a=1; SET @b=2; END",
            "SET @c=1; WHILE @c < 3 DO SET @c=@c+1; END WHILE",
        ] {
            assert!(sets(compound.as_bytes()).is_empty(), "{compound}");
        }
        // `BEGIN` alone starts a transaction: not a block.
        assert_eq!(sets(b"BEGIN; SET @a=1"), [" SET @a=1"]);
    }

    #[test]
    fn connection_id_rewrite() {
        assert_eq!(
            rewrite_connection_id(b"SELECT CONNECTION_ID()", 42).unwrap(),
            b"SELECT COALESCE(CAST(0000000042 AS UNSIGNED), CONNECTION_ID()) AS `CONNECTION_ID()`"
                .to_vec()
        );
        assert_eq!(
            rewrite_connection_id(b"select 1, connection_id() from dual", 7).unwrap(),
            b"select 1, COALESCE(CAST(0000000007 AS UNSIGNED), CONNECTION_ID()) AS `connection_id()` from dual".to_vec()
        );
        assert_eq!(
            rewrite_connection_id(b"SELECT * FROM t WHERE id = CONNECTION_ID()", 7).unwrap(),
            b"SELECT * FROM t WHERE id = COALESCE(CAST(0000000007 AS UNSIGNED), CONNECTION_ID())"
                .to_vec()
        );
        assert_eq!(
            rewrite_connection_id(b"SELECT CONNECTION_ID()", u32::MAX).unwrap(),
            b"SELECT COALESCE(CAST(4294967295 AS UNSIGNED), CONNECTION_ID()) AS `CONNECTION_ID()`"
                .to_vec()
        );
        assert_eq!(rewrite_connection_id(b"SELECT 'CONNECTION_ID()'", 7), None);
        for ddl in [
            "CREATE TABLE t (a INT DEFAULT CONNECTION_ID())",
            "alter table t alter a set default connection_id()",
            "CREATE VIEW v AS SELECT CONNECTION_ID()",
        ] {
            assert_eq!(rewrite_connection_id(ddl.as_bytes(), 7), None, "{ddl}");
        }
        assert_eq!(rewrite_connection_id(b"SELECT 1", 7), None);
    }

    proptest! {
        #[test]
        fn lexers_never_panic(s in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = first_keyword(&s);
            let _ = parse_use(&s);
            let _ = parse_kill(&s, 1);
            let _ = parse_set(&s);
            let _ = session_sets(&s);
            let _ = rewrite_connection_id(&s, 1);
        }

        #[test]
        fn rewrite_never_panics_near_matches(prefix in "[ a-zA-Z'`,(]{0,10}", suffix in "[ a-zA-Z'`,)(]{0,10}") {
            let s = format!("{prefix}CONNECTION_ID(){suffix}");
            let _ = rewrite_connection_id(s.as_bytes(), 9);
        }
    }

    #[test]
    fn keyword_search_is_by_whole_word() {
        assert!(contains_keyword(b"select * from t for update", "FOR"));
        assert!(contains_keyword(b"SELECT a INTO @x FROM t", "INTO"));
        assert!(!contains_keyword(b"select format(1,2) from fortune", "FOR"));
        assert!(contains_keyword(b"select GET_LOCK('a', 1)", "GET_LOCK"));
        assert!(!contains_keyword(b"select get_lock_x()", "GET_LOCK"));
    }
}
