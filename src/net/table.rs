//! Counters as an aligned text table for a terminal (`lancet stats`): any serializable counter set
//! (a VM's published counters, and whatever typed struct replaces them) becomes sections, one per
//! nested struct, of `name  value` rows whose values line up in one column; a list of records
//! becomes a small table with a header row. Empty (`None`) entries are left out.

use serde::Serialize;
use serde_json::Value;

/// Spaces per nesting level.
const INDENT: usize = 2;
/// Spaces between a name and its value column, and between a list's columns.
const GAP: usize = 2;

enum Row {
    /// A nested struct's name.
    Section { depth: usize, name: String },
    /// One counter.
    Counter {
        depth: usize,
        name: String,
        value: String,
    },
    /// A list of records: one line of already aligned columns.
    Line { depth: usize, text: String },
}

/// A scalar as text (strings without quotes); `None` for objects and arrays.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if !n.is_u64() && !n.is_i64() => format!("{f:.1}"),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

fn walk(name: &str, v: &Value, depth: usize, rows: &mut Vec<Row>) {
    match v {
        Value::Null => {}
        Value::Object(map) => {
            if !name.is_empty() {
                rows.push(Row::Section {
                    depth,
                    name: name.to_string(),
                });
            }
            let inner = if name.is_empty() { depth } else { depth + 1 };
            for (k, v) in map {
                walk(k, v, inner, rows);
            }
        }
        Value::Array(items) if items.iter().all(|i| scalar(i).is_some()) => {
            let values: Vec<String> = items.iter().filter_map(scalar).collect();
            rows.push(Row::Counter {
                depth,
                name: name.to_string(),
                value: values.join(" "),
            });
        }
        Value::Array(items) => {
            rows.push(Row::Section {
                depth,
                name: format!("{name} ({})", items.len()),
            });
            records(items, depth + 1, rows);
        }
        _ => rows.push(Row::Counter {
            depth,
            name: name.to_string(),
            value: scalar(v).unwrap_or_default(),
        }),
    }
}

/// A list of records as a header line and one line per record, columns aligned.
fn records(items: &[Value], depth: usize, rows: &mut Vec<Row>) {
    let mut header: Vec<String> = Vec::new();
    for item in items {
        if let Value::Object(map) = item {
            for k in map.keys() {
                if !header.contains(k) {
                    header.push(k.clone());
                }
            }
        }
    }
    let cell = |item: &Value, key: &str| match item {
        Value::Object(map) => map.get(key).and_then(scalar).unwrap_or_default(),
        other => scalar(other).unwrap_or_default(),
    };
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|item| header.iter().map(|k| cell(item, k)).collect())
        .collect();
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| body.iter().map(|r| r[i].len()).fold(h.len(), usize::max))
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(&" ".repeat(GAP))
            .trim_end()
            .to_string()
    };
    rows.push(Row::Line {
        depth,
        text: line(&header),
    });
    for r in &body {
        rows.push(Row::Line {
            depth,
            text: line(r),
        });
    }
}

/// `counters` as a table, every line indented by `indent` spaces.
pub fn counters_table(counters: &impl Serialize, indent: usize) -> String {
    let value = serde_json::to_value(counters).unwrap_or(Value::Null);
    let mut rows = Vec::new();
    walk("", &value, 0, &mut rows);
    let name_width = rows
        .iter()
        .filter_map(|r| match r {
            Row::Counter { depth, name, .. } => Some(depth * INDENT + name.len()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let value_width = rows
        .iter()
        .filter_map(|r| match r {
            Row::Counter { value, .. } => Some(value.len()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for row in rows {
        let line = match row {
            Row::Section { depth, name } => format!("{}{name}", " ".repeat(depth * INDENT)),
            Row::Counter { depth, name, value } => {
                let left = format!("{}{name}", " ".repeat(depth * INDENT));
                format!(
                    "{left:<name_width$}{}{value:>value_width$}",
                    " ".repeat(GAP)
                )
            }
            Row::Line { depth, text } => format!("{}{text}", " ".repeat(depth * INDENT)),
        };
        out.push_str(&" ".repeat(indent));
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_counters_become_aligned_sections() {
        let counters = serde_json::json!({
            "backend": "xdp",
            "counters": {
                "rx_frames": 3,
                "tx_bytes": 123456,
                "drops": { "tx_spoofed": 1, "rx_ring_full": 0 },
            },
            "mirror": null,
            "pcap": [3, 2, 0, 0],
            "learning": {
                "addresses": [{ "addr": "10.77.0.10", "idle_s": 1.25 }],
                "steered": 1,
            },
        });
        let table = counters_table(&counters, 4);
        assert!(!table.contains(['{', '}', '"']), "no JSON left:\n{table}");
        assert!(!table.contains("mirror"), "None is left out:\n{table}");
        let lines: Vec<&str> = table.lines().collect();
        let row = |name: &str| {
            *lines
                .iter()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in:\n{table}"))
        };
        assert!(row("counters").trim() == "counters");
        assert!(row("drops").starts_with("      drops"), "{table}");
        assert!(row("tx_spoofed").trim_end().ends_with(" 1"), "{table}");
        assert_eq!(
            row("pcap").split_whitespace().collect::<Vec<_>>(),
            ["pcap", "3", "2", "0", "0"]
        );
        // Values end in one column, whatever the nesting.
        let ends: Vec<usize> = ["backend", "rx_frames", "tx_bytes", "tx_spoofed", "steered"]
            .iter()
            .map(|n| row(n).len())
            .collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{table}");
        // A list of records: a header, then a row per record.
        let header = lines
            .iter()
            .position(|l| l.contains("addr") && l.contains("idle_s"))
            .unwrap();
        assert!(lines[header + 1].contains("10.77.0.10") && lines[header + 1].contains("1.2"));
    }
}
