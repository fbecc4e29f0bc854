//! The report: sections with a table, named figures and goals, rendered as
//! plain text, markdown and JSON (`target/bench-report.json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

/// A goal of the suite and how this run did against it.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What is aimed at, e.g. "≥ 200× fewer bytes than the baseline at D = 10,000".
    pub text: String,
    /// What this run measured, e.g. "294×".
    pub measured: String,
    /// Whether the measurement meets the goal. `None` when this run cannot
    /// judge it (a quick run measuring a smaller size than the goal names).
    pub met: Option<bool>,
}

impl Goal {
    /// A goal judged by `met`.
    pub fn new(text: impl Into<String>, measured: impl Into<String>, met: bool) -> Self {
        Goal {
            text: text.into(),
            measured: measured.into(),
            met: Some(met),
        }
    }

    /// A goal this run measured but cannot judge.
    pub fn unjudged(text: impl Into<String>, measured: impl Into<String>) -> Self {
        Goal {
            text: text.into(),
            measured: measured.into(),
            met: None,
        }
    }

    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not judged (quick run)",
        }
    }
}

/// One scenario's part of the report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// A short stable key (`reconnect`, `ingest`, …).
    pub id: String,
    /// The heading.
    pub title: String,
    /// What was run and how it was measured, in a sentence or three.
    pub setup: String,
    /// Column headings of the table.
    pub columns: Vec<String>,
    /// Table rows, already formatted (same length as `columns`).
    pub rows: Vec<Vec<String>>,
    /// Figures by name (bytes, seconds, ratios) for the JSON report.
    pub figures: BTreeMap<String, f64>,
    /// The goals this scenario measures.
    pub goals: Vec<Goal>,
    /// Set when the scenario failed; the rest may be partial.
    pub error: Option<String>,
}

impl Section {
    /// An empty section.
    pub fn new(id: &str, title: &str, setup: impl Into<String>) -> Self {
        Section {
            id: id.into(),
            title: title.into(),
            setup: setup.into(),
            ..Section::default()
        }
    }

    /// Sets the table's columns.
    pub fn columns(&mut self, columns: &[&str]) {
        self.columns = columns.iter().map(|c| (*c).to_owned()).collect();
    }

    /// Adds a table row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Records a figure for the JSON report.
    pub fn figure(&mut self, name: impl Into<String>, value: f64) {
        self.figures.insert(name.into(), value);
    }

    /// Adds a goal.
    pub fn goal(&mut self, goal: Goal) {
        self.goals.push(goal);
    }

    /// A section for a scenario that failed before it could report.
    pub fn failed(id: &str, title: &str, error: &anyhow::Error) -> Self {
        Section {
            id: id.into(),
            title: title.into(),
            error: Some(format!("{error:#}")),
            ..Section::default()
        }
    }

    /// The section as markdown (a heading, the setup, the table, the goals).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "#### {}\n", self.title);
        if !self.setup.is_empty() {
            let _ = writeln!(s, "{}\n", self.setup);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "**Failed:** {e}\n");
        }
        if !self.columns.is_empty() {
            let _ = writeln!(s, "| {} |", self.columns.join(" | "));
            let _ = writeln!(s, "|{}", "---|".repeat(self.columns.len()));
            for r in &self.rows {
                let _ = writeln!(s, "| {} |", r.join(" | "));
            }
            s.push('\n');
        }
        for g in &self.goals {
            let _ = writeln!(s, "- {}: **{}** ({})", g.text, g.measured, g.verdict());
        }
        if !self.goals.is_empty() {
            s.push('\n');
        }
        s
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "setup": self.setup,
            "columns": self.columns,
            "rows": self.rows,
            "figures": self.figures,
            "goals": self.goals.iter().map(|g| json!({
                "goal": g.text,
                "measured": g.measured,
                "met": g.met,
            })).collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}

/// The whole report: where and when it ran, and the sections.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The machine (CPU model, cores, memory, kernel).
    pub machine: String,
    /// When the run started, UTC, RFC 3339.
    pub date: String,
    /// The commit measured (`git describe --always --dirty`), if known.
    pub commit: String,
    /// Whether this was a `--quick` run.
    pub quick: bool,
    /// The sections, in the order run.
    pub sections: Vec<Section>,
    /// Wall time of the whole run, seconds.
    pub took_s: f64,
}

impl Report {
    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Measured {} on {} at commit `{}`{} ({:.0} s in all).\n",
            self.date,
            self.machine,
            self.commit,
            if self.quick { ", quick run" } else { "" },
            self.took_s
        );
        let goals: Vec<&Goal> = self.sections.iter().flat_map(|x| &x.goals).collect();
        if !goals.is_empty() {
            let _ = writeln!(s, "| goal | measured | |\n|---|---|---|");
            for g in goals {
                let _ = writeln!(s, "| {} | {} | {} |", g.text, g.measured, g.verdict());
            }
            s.push('\n');
        }
        for x in &self.sections {
            s.push_str(&x.markdown());
        }
        s
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        json!({
            "machine": self.machine,
            "date": self.date,
            "commit": self.commit,
            "quick": self.quick,
            "took_s": self.took_s,
            "sections": self.sections.iter().map(Section::json).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_json_carry_rows_figures_and_verdicts() {
        let mut s = Section::new("x", "X", "setup");
        s.columns(&["a", "b"]);
        s.row(["1", "2"]);
        s.figure("bytes", 42.0);
        s.goal(Goal::new("under 50", "42", true));
        s.goal(Goal::new("under 10", "42", false));
        let r = Report {
            machine: "m".into(),
            date: "d".into(),
            commit: "c".into(),
            quick: false,
            sections: vec![s],
            took_s: 1.0,
        };
        let md = r.markdown();
        assert!(md.contains("| a | b |\n|---|---|\n| 1 | 2 |"), "{md}");
        assert!(md.contains("| under 50 | 42 | met |"), "{md}");
        assert!(md.contains("| under 10 | 42 | NOT met |"), "{md}");
        let j = r.json();
        assert_eq!(j["sections"][0]["figures"]["bytes"], 42.0);
        assert_eq!(j["sections"][0]["goals"][1]["met"], false);
    }
}
