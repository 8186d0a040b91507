//! A bordered text table in patronictl's look: `+---+` rules, `|` separators, an optional title
//! set into the top rule (`+ Cluster: demo (7412…) ---+----+`), multi-line cells (then every row
//! gets a rule below it); and the same rows as patronictl's `tsv`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) title: Option<String>,
    pub(crate) columns: Vec<(String, Align)>,
    pub(crate) rows: Vec<Vec<String>>,
}

fn width(s: &str) -> usize {
    s.chars().count()
}

impl Table {
    pub(crate) fn render(&self) -> String {
        let n = self.columns.len();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(n) {
                for line in cell.split('\n') {
                    widths[i] = widths[i].max(width(line));
                }
            }
        }
        let title = self.title.as_ref().map(|t| format!("+ {t} "));
        let rule = |widths: &[usize]| {
            let mut s = String::from("+");
            for w in widths {
                s.push_str(&"-".repeat(w + 2));
                s.push('+');
            }
            s
        };
        // The title sits in the top rule, which must be long enough to hold it.
        if let Some(t) = &title {
            let full = rule_len(&widths);
            if let Some(last) = widths.last_mut()
                && width(t) + 1 > full
            {
                *last += width(t) + 1 - full;
            }
        }
        let hrule = rule(&widths);
        let mut out = String::new();
        match &title {
            Some(t) => {
                out.push_str(t);
                out.extend(hrule.chars().skip(width(t)));
            }
            None => out.push_str(&hrule),
        }
        out.push('\n');
        let header: Vec<String> = self.columns.iter().map(|(h, _)| h.clone()).collect();
        push_row(&mut out, &header, &widths, &vec![Align::Left; n]);
        out.push_str(&hrule);
        out.push('\n');
        let aligns: Vec<Align> = self.columns.iter().map(|(_, a)| *a).collect();
        let multiline = self.rows.iter().flatten().any(|c| c.contains('\n'));
        for (i, row) in self.rows.iter().enumerate() {
            push_row(&mut out, row, &widths, &aligns);
            if multiline && i + 1 < self.rows.len() {
                out.push_str(&hrule);
                out.push('\n');
            }
        }
        out.push_str(&hrule);
        out.push('\n');
        out
    }
}

/// patronictl's `tsv`: a header line (if there are columns), then one line per row, the cells
/// joined by `delimiter` as they are (no quoting, as patronictl writes them).
pub(crate) fn tsv(columns: &[String], rows: &[Vec<String>], delimiter: &str) -> String {
    let mut out = String::new();
    let header = (!columns.is_empty()).then_some(columns);
    for line in header.into_iter().chain(rows.iter().map(Vec::as_slice)) {
        out.push_str(&line.join(delimiter));
        out.push('\n');
    }
    out
}

/// Length of a rule over columns of these widths.
fn rule_len(widths: &[usize]) -> usize {
    1 + widths.iter().map(|w| w + 3).sum::<usize>()
}

fn push_row(out: &mut String, row: &[String], widths: &[usize], aligns: &[Align]) {
    let lines: Vec<Vec<&str>> = widths
        .iter()
        .enumerate()
        .map(|(i, _)| {
            row.get(i)
                .map(|c| c.split('\n').collect())
                .unwrap_or_default()
        })
        .collect();
    let height = lines.iter().map(Vec::len).max().unwrap_or(1).max(1);
    for l in 0..height {
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            let cell = lines[i].get(l).copied().unwrap_or("");
            let pad = w - width(cell);
            match aligns[i] {
                Align::Left => {
                    out.push(' ');
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad + 1));
                }
                Align::Right => {
                    out.push_str(&" ".repeat(pad + 1));
                    out.push_str(cell);
                    out.push(' ');
                }
            }
            out.push('|');
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_in_the_top_rule_and_alignment() {
        let t = Table {
            title: Some("Cluster: demo (123)".into()),
            columns: vec![
                ("Member".into(), Align::Left),
                ("TL".into(), Align::Right),
                ("Lag".into(), Align::Right),
            ],
            rows: vec![
                vec!["pg1".into(), "1".into(), "".into()],
                vec!["pg2".into(), "12".into(), "0".into()],
            ],
        };
        let want = "\
+ Cluster: demo (123) +
| Member | TL | Lag   |
+--------+----+-------+
| pg1    |  1 |       |
| pg2    | 12 |     0 |
+--------+----+-------+
";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn tsv_header_and_rows() {
        let cols = vec!["Member".to_string(), "TL".to_string()];
        let rows = vec![vec!["pg1".to_string(), "1".to_string()]];
        assert_eq!(tsv(&cols, &rows, "\t"), "Member\tTL\npg1\t1\n");
        assert_eq!(tsv(&[], &rows, ";"), "pg1;1\n");
    }

    #[test]
    fn short_title_and_multiline_cells() {
        let t = Table {
            title: Some("T".into()),
            columns: vec![("Member".into(), Align::Left), ("Tags".into(), Align::Left)],
            rows: vec![
                vec!["pg1".into(), "a: 1\nb: 2".into()],
                vec!["pg2".into(), "".into()],
            ],
        };
        let want = "\
+ T -----+------+
| Member | Tags |
+--------+------+
| pg1    | a: 1 |
|        | b: 2 |
+--------+------+
| pg2    |      |
+--------+------+
";
        assert_eq!(t.render(), want);
    }
}
