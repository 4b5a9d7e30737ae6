//! A small sh-like tokenizer: words with single quotes, double quotes and backslashes, and `;`, `&&`, `||`.

/// One token of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Word(String),
    /// `;`: run the next command whatever happened.
    Then,
    /// `&&`: run the next command if the last one succeeded.
    And,
    /// `||`: run the next command if the last one failed.
    Or,
}

/// Why a line could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizeError {
    #[error("syntax error: unterminated quoted string")]
    UnterminatedQuote,
}

/// Splits a command line the way `sh` would for simple commands (no expansion).
pub fn tokenize(line: &str) -> Result<Vec<Token>, TokenizeError> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    // Distinguishes an empty quoted word ('') from no word at all.
    let mut in_word = false;
    let mut chars = line.chars().peekable();

    fn finish(tokens: &mut Vec<Token>, word: &mut String, in_word: &mut bool) {
        if *in_word {
            tokens.push(Token::Word(std::mem::take(word)));
            *in_word = false;
        }
    }

    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => finish(&mut tokens, &mut word, &mut in_word),
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(other) => word.push(other),
                        None => return Err(TokenizeError::UnterminatedQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(escaped @ ('"' | '\\' | '$' | '`')) => word.push(escaped),
                            Some('\n') => {}
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(TokenizeError::UnterminatedQuote),
                        },
                        Some(other) => word.push(other),
                        None => return Err(TokenizeError::UnterminatedQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(other) => word.push(other),
                    None => word.push('\\'),
                }
            }
            ';' => {
                finish(&mut tokens, &mut word, &mut in_word);
                tokens.push(Token::Then);
            }
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                finish(&mut tokens, &mut word, &mut in_word);
                tokens.push(Token::And);
            }
            '|' if chars.peek() == Some(&'|') => {
                chars.next();
                finish(&mut tokens, &mut word, &mut in_word);
                tokens.push(Token::Or);
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    finish(&mut tokens, &mut word, &mut in_word);
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        tokenize(line)
            .expect("valid line")
            .into_iter()
            .map(|token| match token {
                Token::Word(word) => word,
                Token::Then => ";".into(),
                Token::And => "&&".into(),
                Token::Or => "||".into(),
            })
            .collect()
    }

    #[test]
    fn splits_like_sh() {
        let cases: &[(&str, &[&str])] = &[
            ("getprop ro.product.model", &["getprop", "ro.product.model"]),
            ("screencap '-p'", &["screencap", "-p"]),
            ("  echo   a\tb  ", &["echo", "a", "b"]),
            ("echo 'it'\\''s'", &["echo", "it's"]),
            (r#"echo "a \"b\" \$c \d""#, &["echo", r#"a "b" $c \d"#]),
            ("echo a\\ b", &["echo", "a b"]),
            ("echo '' x", &["echo", "", "x"]),
            (
                "input text 'hello world'",
                &["input", "text", "hello world"],
            ),
            (
                "true; false && echo x || echo y",
                &["true", ";", "false", "&&", "echo", "x", "||", "echo", "y"],
            ),
            ("echo a|b", &["echo", "a|b"]),
            ("", &[]),
        ];
        for (line, expected) in cases {
            assert_eq!(words(line), *expected, "{line}");
        }
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        for line in ["echo 'a", "echo \"a", "echo \"a\\"] {
            assert_eq!(
                tokenize(line),
                Err(TokenizeError::UnterminatedQuote),
                "{line}"
            );
        }
    }
}
