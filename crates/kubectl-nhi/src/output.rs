//! Output formats: kubectl-style tables and key/value blocks for people, JSON and YAML for tools.

use serde::Serialize;

use crate::error::PluginError;

/// The `-o/--output` format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// For people: a table (`list`) or labelled lines (`inspect`).
    #[default]
    #[value(alias = "text", alias = "wide")]
    Table,
    /// JSON, with the documented field names.
    Json,
    /// YAML, with the same fields as JSON.
    Yaml,
}

/// Serializes `value` as JSON or YAML (`None` for [`Format::Table`]).
pub fn structured<T: Serialize>(value: &T, format: Format) -> Result<Option<String>, PluginError> {
    let text = match format {
        Format::Table => return Ok(None),
        Format::Json => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| PluginError::Invalid(format!("cannot write JSON: {e}")))?,
        Format::Yaml => serde_yaml::to_string(value)
            .map_err(|e| PluginError::Invalid(format!("cannot write YAML: {e}")))?,
    };
    Ok(Some(text))
}

/// A table the way kubectl prints one: upper-case headers, columns left-aligned and separated by
/// three spaces, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Labelled lines, labels padded to one width: `Serial:      4a1f...`.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        // An empty label continues the line above.
        .map(|(k, v)| match k.is_empty() {
            true => format!("{:<width$} {v}\n", ""),
            false => format!("{:<width$} {v}\n", format!("{k}:")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_kubectl() {
        let t = table(
            &["NAME", "OWNER", "STATE"],
            &[
                vec!["checkout".into(), "payments".into(), "Ready".into()],
                vec!["ci".into(), "-".into(), "ReviewOverdue".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME       OWNER      STATE\n\
             checkout   payments   Ready\n\
             ci         -          ReviewOverdue\n"
        );
    }

    #[test]
    fn labelled_lines_align() {
        assert_eq!(
            fields(&[("Serial", "ab".into()), ("SPIFFE ID", "spiffe://x".into())]),
            "Serial:    ab\nSPIFFE ID: spiffe://x\n"
        );
    }

    #[test]
    fn json_and_yaml() {
        let v = serde_json::json!({"name": "checkout"});
        assert_eq!(structured(&v, Format::Table).unwrap(), None);
        assert_eq!(
            structured(&v, Format::Json).unwrap().unwrap(),
            "{\n  \"name\": \"checkout\"\n}\n"
        );
        assert_eq!(
            structured(&v, Format::Yaml).unwrap().unwrap(),
            "name: checkout\n"
        );
    }
}
