//! Takes `sslmode` and `sslrootcert` out of a connection string, in either of libpq's forms:
//! a URL (`postgres://…?sslmode=verify-full&sslrootcert=/ca.pem`, values percent-encoded) or
//! key/value pairs (`host=db sslmode=verify-full sslrootcert='/my ca.pem'`). The rest is left
//! as written, for tokio-postgres to parse.

/// A connection string with its TLS parameters taken out (the last one wins, as in libpq).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Split {
    /// Everything else, as written.
    pub(super) rest: String,
    /// The `sslmode` value, decoded.
    pub(super) sslmode: Option<String>,
    /// The `sslrootcert` value, decoded.
    pub(super) sslrootcert: Option<String>,
}

pub(super) fn split(conn: &str) -> Result<Split, String> {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        split_url(conn)
    } else {
        split_key_values(conn)
    }
}

fn split_url(url: &str) -> Result<Split, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut split = Split {
        rest: base.to_string(),
        sslmode: None,
        sslrootcert: None,
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "sslmode" => split.sslmode = Some(percent_decode(value)?),
            "sslrootcert" => split.sslrootcert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    if !kept.is_empty() {
        split.rest = format!("{base}?{}", kept.join("&"));
    }
    Ok(split)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("DATABASE_URL: a '%' in the query is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "DATABASE_URL: a query value is not UTF-8".into())
}

fn split_key_values(conn: &str) -> Result<Split, String> {
    let mut split = Split {
        rest: String::new(),
        sslmode: None,
        sslrootcert: None,
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut at = 0;
    while let Some((start, key, value, end)) = next_pair(conn, at)? {
        match key {
            "sslmode" => split.sslmode = Some(value),
            "sslrootcert" => split.sslrootcert = Some(value),
            _ => kept.push(&conn[start..end]),
        }
        at = end;
    }
    split.rest = kept.join(" ");
    Ok(split)
}

/// The next `key = value` from byte `at`: (start, key, unquoted value, end), or `None` at the end.
fn next_pair(conn: &str, at: usize) -> Result<Option<(usize, &str, String, usize)>, String> {
    let skip_ws = |i: usize| {
        conn[i..]
            .find(|c: char| !c.is_whitespace())
            .map_or(conn.len(), |n| i + n)
    };
    let start = skip_ws(at);
    if start == conn.len() {
        return Ok(None);
    }
    let key_end = conn[start..]
        .find(|c: char| c == '=' || c.is_whitespace())
        .map_or(conn.len(), |n| start + n);
    let key = &conn[start..key_end];
    let eq = skip_ws(key_end);
    if !conn[eq..].starts_with('=') {
        return Err(format!("DATABASE_URL: expected '=' after {key:?}"));
    }
    let (value, end) = read_value(conn, skip_ws(eq + 1))?;
    Ok(Some((start, key, value, end)))
}

/// A value starting at `at`: quoted (`'…'`) or up to the next space, `\` escaping one char.
fn read_value(conn: &str, at: usize) -> Result<(String, usize), String> {
    let quoted = conn[at..].starts_with('\'');
    let mut value = String::new();
    let mut chars = conn[at..].char_indices().skip(usize::from(quoted));
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped)) => value.push(escaped),
                None => return Err("DATABASE_URL: a value ends with a lone '\\'".into()),
            },
            '\'' if quoted => return Ok((value, at + i + 1)),
            c if c.is_whitespace() && !quoted => return Ok((value, at + i)),
            c => value.push(c),
        }
    }
    if quoted {
        return Err("DATABASE_URL: a quoted value is not closed".into());
    }
    Ok((value, conn.len()))
}
