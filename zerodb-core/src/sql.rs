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
    pub query_only: bool,
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
    /// Session state to keep for replay: (key, assignment text) pairs, where
    /// the key names what is assigned (`names`, `autocommit`, `@v`, …).
    Session(Vec<(String, Vec<u8>)>),
    /// Nothing to replay (`SET GLOBAL`, `SET TRANSACTION` for the next
    /// transaction only, `SET STATEMENT … FOR`, `SET PASSWORD`).
    None,
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

fn trim(s: &[u8]) -> &[u8] {
    let s = skip_noise(s);
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace() && *c != b';')
        .map_or(0, |i| i + 1);
    &s[..end]
}

/// Classifies a `SET` statement (which must start with SET).
pub fn parse_set(sql: &[u8]) -> SetEffect {
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
            return SetEffect::Session(vec![("names".into(), trim(body).to_vec())]);
        }
        b"ROLE" => return SetEffect::Session(vec![("role".into(), trim(body).to_vec())]),
        b"SESSION" | b"LOCAL" => {
            let (w3, _) = next_word(after);
            if w3.eq_ignore_ascii_case(b"TRANSACTION") {
                return SetEffect::Session(vec![(
                    "session transaction".into(),
                    trim(body).to_vec(),
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
        out.push((key, part.to_vec()));
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
    const NAME: &[u8] = b"connection_id";
    // Fast path: no '(' preceded by the name.
    let mut hit = false;
    for (i, _) in sql.iter().enumerate().filter(|(_, c)| **c == b'(') {
        if i >= NAME.len() && sql[i - NAME.len()..i].eq_ignore_ascii_case(NAME) {
            hit = true;
            break;
        }
    }
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
            if word.eq_ignore_ascii_case(NAME) {
                let after = &sql[i + n..];
                let ws = after.iter().take_while(|c| c.is_ascii_whitespace()).count();
                if after.get(ws) == Some(&b'(') {
                    let inner = &after[ws + 1..];
                    let ws2 = inner.iter().take_while(|c| c.is_ascii_whitespace()).count();
                    if inner.get(ws2) == Some(&b')') {
                        let consumed = n + ws + 1 + ws2 + 1;
                        let (next, _) = next_word(&sql[i + consumed..]);
                        let tail = skip_noise(&sql[i + consumed..]);
                        let whole_item = (prev_token.eq_ignore_ascii_case(b"SELECT")
                            || prev_token == b",")
                            && (tail.is_empty()
                                || tail[0] == b','
                                || next.eq_ignore_ascii_case(b"FROM"));
                        let value =
                            format!("COALESCE(CAST({id:010} AS UNSIGNED), CONNECTION_ID())");
                        if whole_item {
                            out.extend_from_slice(
                                format!(
                                    "{value} AS `{}`",
                                    String::from_utf8_lossy(&sql[i..i + consumed])
                                )
                                .as_bytes(),
                            );
                        } else {
                            out.extend_from_slice(value.as_bytes());
                        }
                        i += consumed;
                        changed = true;
                        prev_token = b"x";
                        continue;
                    }
                }
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
        assert_eq!(
            parse_set(b"SET NAMES utf8mb4 COLLATE utf8mb4_bin"),
            SetEffect::Session(vec![(
                "names".into(),
                b"NAMES utf8mb4 COLLATE utf8mb4_bin".to_vec()
            )])
        );
        assert_eq!(
            parse_set(b"SET @@session.sql_mode='ANSI', @a := (1,2), autocommit=0, @@global.x=1;"),
            SetEffect::Session(vec![
                ("sql_mode".into(), b"@@session.sql_mode='ANSI'".to_vec()),
                ("@a".into(), b"@a := (1,2)".to_vec()),
                ("autocommit".into(), b"autocommit=0".to_vec()),
            ])
        );
        assert_eq!(
            parse_set(b"SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            SetEffect::Session(vec![(
                "session transaction".into(),
                b"SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE".to_vec()
            )])
        );
        assert_eq!(
            parse_set(b"SET SESSION wait_timeout = 10"),
            SetEffect::Session(vec![(
                "wait_timeout".into(),
                b"SESSION wait_timeout = 10".to_vec()
            )])
        );
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
