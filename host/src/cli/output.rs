//! Aligned tables for people; JSON goes through serde directly.

/// `text` as a terminal may show it: control characters (ESC sequences,
/// OSC titles, carriage returns, NULs), which names and log lines may
/// hold, are written as `\x1b`-style escapes instead of acting on the
/// terminal. Tabs stay.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            shown.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| visible(cell).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The wire name of an enum value (`NOT_READY`), for table cells.
pub fn enum_text(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// Parses `key=value` pairs; the value is JSON when it parses as JSON, text
/// otherwise. `env.KEY=value` sets one key of the `env` object.
pub fn parse_pairs(
    field: &str,
    pairs: &[String],
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{field}: expected key=value, got {pair:?}"))?;
        if key.is_empty() {
            anyhow::bail!("{field}: empty key in {pair:?}");
        }
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        match key.split_once('.') {
            Some((outer, inner)) => {
                let entry = map
                    .entry(outer.to_string())
                    .or_insert_with(|| serde_json::json!({}));
                let object = entry.as_object_mut().ok_or_else(|| {
                    anyhow::anyhow!("{field}: `{outer}` is both a value and an object")
                })?;
                object.insert(inner.to_string(), value);
            }
            None => {
                map.insert(key.to_string(), value);
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(visible("plain\ttab"), "plain\ttab");
        assert_eq!(
            visible("\u{1b}]0;owned\u{7}x\u{0}\r"),
            "\\x1b]0;owned\\x07x\\x00\\x0d"
        );
        assert_eq!(visible("\u{9b}31m"), "\\x9b31m", "C1 controls too");
    }
}
