//! Where a key's value is in the configuration text, as the TOML parser saw it
//! (spans), so that a check across values still reports `FILE:LINE:COL`.

use toml::de::{DeTable, DeValue};

/// The parsed document with its spans.
pub struct Positions<'t> {
    text: &'t str,
    root: Option<DeValue<'t>>,
}

impl<'t> Positions<'t> {
    /// Parses `text` once more, keeping spans (a document that does not parse
    /// has no positions; its syntax error is reported by the parser first).
    pub fn new(text: &'t str) -> Positions<'t> {
        let root = DeTable::parse(text)
            .ok()
            .map(|t| DeValue::Table(t.into_inner()));
        Positions { text, root }
    }

    /// The line and column of `path`, a dotted path of keys and array indices
    /// such as `"metrics.interval"` or `"tls.target.2.name"`: where its key is
    /// written (`key = value`), or for an array element where the element is.
    /// When the key is not written, the nearest table that is (e.g. the
    /// `[[tls.target]]` header) is named instead.
    pub fn at(&self, path: &str) -> Option<(usize, usize)> {
        let mut value = self.root.as_ref()?;
        let mut span = None;
        for part in path.split('.') {
            let next = match (part.parse::<usize>(), value) {
                (Ok(i), DeValue::Array(a)) => a.get(i).map(|v| (v.span(), v)),
                (_, DeValue::Table(t)) => t.get_key_value(part).map(|(k, v)| (k.span(), v)),
                _ => None,
            };
            match next {
                Some((at, v)) => {
                    span = Some(at);
                    value = v.get_ref();
                }
                None => break,
            }
        }
        span.map(|s| line_col(self.text, s.start))
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_in_two_sections_is_told_apart() {
        let text =
            "[[tls.target]]\nname = \"a\"\ninterval = \"5m\"\n\n[metrics]\ninterval = \"0s\"\n";
        let p = Positions::new(text);
        assert_eq!(p.at("metrics.interval"), Some((6, 1)));
        assert_eq!(p.at("tls.target.0.interval"), Some((3, 1)));
        // A key not written: the table that holds it.
        assert_eq!(p.at("tls.target.0.timeout").map(|(l, _)| l), Some(1));
        assert_eq!(p.at("caa.interval"), None);
    }

    #[test]
    fn offsets_are_characters() {
        assert_eq!(line_col("a\nxé = 1", 5), (2, 3));
    }
}
