//! Quoting of identifiers and literals in the SQL the extension generates:
//! the boundary between names and values users pass and the statements the
//! extension runs with them.

/// Quotes an identifier for generated SQL, always with double quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An identifier as a person would write it in SQL: bare when it is a plain
/// lower-case name, quoted otherwise (for messages and suggested fixes).
pub fn display_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

/// Quotes a string literal for generated SQL; a value with a backslash is
/// written as an `E'...'` literal, which reads the same whatever
/// `standard_conforming_strings` says.
pub fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads one quoted identifier the way Postgres' scanner does: the
    /// name, and what follows it. None when `sql` does not start with one.
    fn read_ident(sql: &str) -> Option<(String, &str)> {
        let mut rest = sql.strip_prefix('"')?;
        let mut name = String::new();
        loop {
            let end = rest.find('"')?;
            name.push_str(&rest[..end]);
            rest = &rest[end + 1..];
            match rest.strip_prefix('"') {
                Some(after) => {
                    name.push('"');
                    rest = after;
                }
                None => return Some((name, rest)),
            }
        }
    }

    /// Reads one string literal the way Postgres' scanner does, with
    /// `standard_conforming_strings` on or off: the value, and what follows.
    fn read_literal(sql: &str, standard_conforming_strings: bool) -> Option<(String, &str)> {
        let (escapes, body) = match sql.strip_prefix(['E', 'e']) {
            Some(body) => (true, body),
            None => (!standard_conforming_strings, sql),
        };
        let mut chars = body.strip_prefix('\'')?.char_indices().peekable();
        let start = body.len() - body.strip_prefix('\'')?.len();
        let mut value = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' if chars.peek().map(|(_, n)| *n) == Some('\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => return Some((value, &body[start + i + 1..])),
                '\\' if escapes => {
                    let (_, escaped) = chars.next()?;
                    // The generated literals escape only quotes and
                    // backslashes; any other escape would change the value.
                    match escaped {
                        '\\' | '\'' => value.push(escaped),
                        _ => return None,
                    }
                }
                _ => value.push(c),
            }
        }
        None
    }

    #[test]
    fn examples() {
        assert_eq!(quote_ident("Order"), "\"Order\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(display_ident("orders"), "orders");
        assert_eq!(display_ident("Orders"), "\"Orders\"");
        assert_eq!(display_ident("1st"), "\"1st\"");
        assert_eq!(display_ident(""), "\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(quote_literal("\\'"), "E'\\\\'''");
    }

    #[test]
    fn the_reference_readers_read_what_postgres_reads() {
        assert_eq!(read_literal("'a\\b'", true), Some(("a\\b".into(), "")));
        assert_eq!(read_literal("'a\\\\b'", false), Some(("a\\b".into(), "")));
        assert_eq!(read_literal("'it''s' x", true), Some(("it's".into(), " x")));
        assert_eq!(read_literal("'open", true), None);
        assert_eq!(read_ident("\"a\"\"b\".c"), Some(("a\"b".into(), ".c")));
    }

    /// Text without NUL, weighted towards the characters quoting is about.
    fn tricky_text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just('\''),
                Just('"'),
                Just('\\'),
                Just('E'),
                Just(' '),
                Just(';'),
                Just('$'),
                any::<char>().prop_filter("no NUL", |c| *c != '\0'),
            ],
            0..24,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        #[test]
        fn a_quoted_identifier_reads_back_as_the_same_name(name in tricky_text()) {
            let quoted = quote_ident(&name);
            prop_assert_eq!(read_ident(&quoted), Some((name.clone(), "")));
            let shown = display_ident(&name);
            let read = read_ident(&shown).map(|(n, _)| n).unwrap_or(shown.clone());
            prop_assert_eq!(read, name);
        }

        #[test]
        fn a_quoted_literal_reads_back_as_the_same_value_either_way(value in tricky_text()) {
            let quoted = quote_literal(&value);
            for standard_conforming_strings in [true, false] {
                prop_assert_eq!(
                    read_literal(&quoted, standard_conforming_strings),
                    Some((value.clone(), ""))
                );
            }
        }
    }
}
