//! The part of the STIX 2.1 patterning language a block list needs: the comparisons of a
//! pattern (`object-path op value`), and whether any are joined by `AND` or `FOLLOWEDBY` (then
//! the indicator matches only a combination, and no single value of it is an indicator alone).
//! Hand-written: no kept crate parses STIX patterns, and only the comparisons are wanted: the
//! tokenizer is tolerant (it never fails on paths with quoted parts or list indexes, qualifiers,
//! timestamps), and a comparison it cannot read is simply not one of the supported ones.

/// One comparison: `path [NOT] op value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    pub path: String,
    pub negated: bool,
    /// `=`, `!=`, `<`, `IN`, `LIKE`, `MATCHES`, `ISSUBSET`, ... (upper case).
    pub op: String,
    /// The string values (one, or several for `IN (…)`).
    pub values: Vec<String>,
}

/// A pattern's comparisons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pattern {
    pub comparisons: Vec<Comparison>,
    /// Some comparisons or observations are joined by `AND` or `FOLLOWEDBY`.
    pub conjunctive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Punct(char),
    Op(String),
    Str(String),
    Word(String),
}

/// Longest pattern read: a pattern is one indicator, and a hostile feed must not make one cost
/// more than a few hundred kilobytes of tokens.
pub const MAX_PATTERN_LEN: usize = 64 * 1024;

pub fn parse(pattern: &str) -> Result<Pattern, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
    }
    let tokens = tokenize(pattern)?;
    let mut out = Pattern::default();
    let mut i = 0;
    while let Some(token) = tokens.get(i) {
        i += 1;
        let Token::Word(word) = token else {
            continue;
        };
        if word.eq_ignore_ascii_case("AND") || word.eq_ignore_ascii_case("FOLLOWEDBY") {
            out.conjunctive = true;
        } else if word.contains(':')
            && let Some((cmp, next)) = comparison(word, &tokens, i)
        {
            out.comparisons.push(cmp);
            i = next;
        }
    }
    Ok(out)
}

/// The comparison whose path is `path`, its operator and value starting at `tokens[i]`.
fn comparison(path: &str, tokens: &[Token], mut i: usize) -> Option<(Comparison, usize)> {
    // A path goes on with quoted parts and what follows them: `file:hashes.'SHA-256'`.
    let mut path = path.to_owned();
    loop {
        match tokens.get(i) {
            Some(Token::Str(s)) if path.ends_with('.') => path.push_str(&format!("'{s}'")),
            Some(Token::Word(w)) if w.starts_with('.') => path.push_str(w),
            _ => break,
        }
        i += 1;
    }
    let mut negated = false;
    if matches!(tokens.get(i), Some(Token::Word(w)) if w.eq_ignore_ascii_case("NOT")) {
        negated = true;
        i += 1;
    }
    let op = match tokens.get(i)? {
        Token::Op(op) => op.clone(),
        Token::Word(w) => w.to_ascii_uppercase(),
        _ => return None,
    };
    i += 1;
    let mut values = Vec::new();
    match tokens.get(i)? {
        Token::Str(s) => {
            values.push(s.clone());
            i += 1;
        }
        Token::Punct('(') => {
            i += 1;
            while let Some(t) = tokens.get(i) {
                i += 1;
                match t {
                    Token::Str(s) => values.push(s.clone()),
                    Token::Punct(')') => break,
                    _ => {}
                }
            }
        }
        _ => i += 1,
    }
    let cmp = Comparison {
        path,
        negated,
        op,
        values,
    };
    Some((cmp, i))
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            c if c.is_whitespace() => {}
            '[' | ']' | '(' | ')' | ',' => tokens.push(Token::Punct(ch)),
            '=' | '!' | '<' | '>' => {
                let mut op = ch.to_string();
                if chars.peek() == Some(&'=') {
                    op.push('=');
                    chars.next();
                }
                tokens.push(Token::Op(op));
            }
            '\'' => tokens.push(Token::Str(string(&mut chars)?)),
            _ => {
                let mut word = ch.to_string();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "[]()=!<>,'".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

/// A quoted string after its opening quote: `\'` and `\\` are escapes.
fn string(chars: &mut impl Iterator<Item = char>) -> Result<String, String> {
    let mut s = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\'' => return Ok(s),
            '\\' => s.push(chars.next().ok_or("unterminated string")?),
            _ => s.push(c),
        }
    }
    Err("unterminated string in the pattern".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(p: &Pattern) -> Vec<(&str, &str, &str)> {
        p.comparisons
            .iter()
            .flat_map(|c| {
                c.values
                    .iter()
                    .map(move |v| (c.path.as_str(), c.op.as_str(), v.as_str()))
            })
            .collect()
    }

    #[test]
    fn single_and_or() {
        let p = parse("[domain-name:value = 'a.example']").unwrap();
        assert_eq!(values(&p), [("domain-name:value", "=", "a.example")]);
        assert!(!p.conjunctive);
        let p = parse(
            "[ipv4-addr:value = '192.0.2.1' OR ipv4-addr:value ISSUBSET '198.51.100.0/24'] \
             OR [url:value='http://x.example/it\\'s']",
        )
        .unwrap();
        assert_eq!(
            values(&p),
            [
                ("ipv4-addr:value", "=", "192.0.2.1"),
                ("ipv4-addr:value", "ISSUBSET", "198.51.100.0/24"),
                ("url:value", "=", "http://x.example/it's"),
            ]
        );
        assert!(!p.conjunctive);
    }

    #[test]
    fn conjunctions_sets_negations_qualifiers() {
        let p =
            parse("[domain-name:value = 'a.example' AND network-traffic:dst_port = 443]").unwrap();
        assert!(p.conjunctive);
        let p = parse("([domain-name:value IN ('a.example', 'b.example')]) WITHIN 300 SECONDS")
            .unwrap();
        assert_eq!(p.comparisons[0].values, ["a.example", "b.example"]);
        let p = parse("[domain-name:value NOT = 'a.example']").unwrap();
        assert!(p.comparisons[0].negated);
        let p = parse("[file:hashes.'SHA-256' = 'ab'] START t'2020-01-01T00:00:00Z' STOP t'2021-01-01T00:00:00Z'")
            .unwrap();
        assert_eq!(p.comparisons.len(), 1);
        assert_eq!(p.comparisons[0].path, "file:hashes.'SHA-256'");
        assert!(parse("[domain-name:value = 'a.example").is_err());
        assert_eq!(parse("").unwrap(), Pattern::default());
    }
}
