//! Operator-facing config errors: every problem carries `FILE:LINE:COL: key.path: message`.

use std::fmt;
use std::ops::Range;

/// One problem in the config file, positioned for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the operator named it (`<built-in>` for the default config).
    pub file: String,
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// Dotted key path, e.g. `mail.user[1].password`.
    pub path: String,
    /// What is wrong, ending with what was expected where that helps.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() { "(top level)" } else { &self.path };
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, path, self.message)
    }
}

/// Every problem found in one config file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Collects errors while a file is validated; turns byte spans into line and column.
pub(crate) struct Diagnostics<'a> {
    file: &'a str,
    source: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(file: &'a str, source: &'a str) -> Self {
        Self { file, source, errors: Vec::new() }
    }

    /// Records a problem at `span` (a byte range of the source) for key `path`.
    ///
    /// Every config message is built here, so this is where secrets are kept out of them:
    /// when the key is a secret ([`crate::secret::is_secret_key`]) the message loses every
    /// quoted value and every copy of the offending text, whoever wrote the message (our
    /// validation, serde's "invalid type: integer `246810`" or the TOML parser).
    pub(crate) fn error(&mut self, span: Range<usize>, path: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_column(self.source, span.start);
        let path = path.into();
        let mut message = message.into();
        let key = if path.is_empty() { key_on_line(self.source, span.start) } else { last_key(&path) };
        if crate::secret::is_secret_key(key) {
            let offending = self.source.get(span.clone()).unwrap_or_default();
            let value = if path.is_empty() { value_on_line(self.source, span.start) } else { offending };
            message = crate::secret::redact(&message, value);
        }
        self.errors.push(ConfigError { file: self.file.to_owned(), line, column, path, message });
    }

    pub(crate) fn source(&self) -> &'a str {
        self.source
    }

    pub(crate) fn file(&self) -> &'a str {
        self.file
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    pub(crate) fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|error| (error.line, error.column));
        self.errors.dedup();
        Err(ConfigErrors(self.errors))
    }
}

/// The key a dotted path ends in: `conference.room[0].pin` gives `pin`, `a.sites[2]` gives `sites`.
fn last_key(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last).trim_matches('"')
}

/// For errors without a path (TOML syntax): the key written on the line at `offset`.
fn key_on_line(source: &str, offset: usize) -> &str {
    let line = line_at(source, offset);
    line.split_once('=').map_or("", |(key, _)| last_key(key.trim()))
}

/// For errors without a path: everything after the `=` on the line at `offset`.
fn value_on_line(source: &str, offset: usize) -> &str {
    line_at(source, offset).split_once('=').map_or("", |(_, value)| value)
}

fn line_at(source: &str, offset: usize) -> &str {
    let offset = offset.min(source.len());
    let start = source.get(..offset).and_then(|before| before.rfind('\n')).map_or(0, |index| index + 1);
    let end = source[start..].find('\n').map_or(source.len(), |index| start + index);
    &source[start..end]
}

/// 1-based line and character column of byte `offset` in `source`.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_not_bytes() {
        let source = "a = 1\ntitle = \"Họp\" x\n";
        let offset = source.find('x').unwrap();
        assert_eq!(line_column(source, offset), (2, 15));
        assert_eq!(line_column(source, 0), (1, 1));
        assert_eq!(line_column(source, 10_000), (3, 1));
    }
}
