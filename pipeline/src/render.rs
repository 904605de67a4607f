//! `dag` output: plain text, Graphviz dot, or Mermaid (renders on GitHub).

use std::fmt::Write;

use crate::spec::Pipeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
}

pub fn render_dag(pipeline: &Pipeline, format: DagFormat) -> String {
    let stages = &pipeline.stages;
    let graph = &pipeline.graph;
    let mut out = String::new();
    match format {
        DagFormat::Text => {
            for &i in &graph.order {
                let stage = &stages[i];
                let _ = write!(out, "{} [{}]", stage.name, stage.kind);
                if !graph.upstream[i].is_empty() {
                    let ups: Vec<&str> = graph.upstream[i]
                        .iter()
                        .map(|&j| stages[j].name.as_str())
                        .collect();
                    let _ = write!(out, " <- {}", ups.join(", "));
                }
                out.push('\n');
            }
        }
        DagFormat::Dot => {
            out.push_str("digraph pipeline {\n  rankdir=LR;\n  node [shape=box];\n");
            for stage in stages {
                let _ = writeln!(
                    out,
                    "  \"{}\" [label=\"{}\\n({})\"];",
                    stage.name, stage.name, stage.kind
                );
            }
            for (i, downs) in graph.downstream.iter().enumerate() {
                for &d in downs {
                    let _ = writeln!(out, "  \"{}\" -> \"{}\";", stages[i].name, stages[d].name);
                }
            }
            out.push_str("}\n");
        }
        DagFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for (i, stage) in stages.iter().enumerate() {
                let _ = writeln!(out, "  s{i}[\"{} ({})\"]", stage.name, stage.kind);
            }
            for (i, downs) in graph.downstream.iter().enumerate() {
                for &d in downs {
                    let _ = writeln!(out, "  s{i} --> s{d}");
                }
            }
        }
    }
    out
}
