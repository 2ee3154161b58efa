//! The Grafana dashboards (`deploy/grafana/`), checked offline: each is a
//! provisionable dashboard whose Prometheus datasource is a variable used
//! by every panel and query; panels have unique ids, a title and a
//! one-line description, and sit inside the 24-column grid without
//! overlapping; every query reads metrics the catalogue lists or series
//! the shipped rules record; and the dashboards ship as a ConfigMap
//! labelled for Grafana's sidecar (`kubectl kustomize deploy/grafana`).
//! `prometheus.rs` runs every query against a real Prometheus.

use serde_json::Value;
use std::collections::BTreeSet;

pub const FILES: [&str; 3] = [
    "consentry-pipeline.json",
    "consentry-privacy-drift.json",
    "consentry-vault-access.json",
];

/// One panel's queries, as Grafana sends them (`$__rate_interval`
/// unexpanded).
pub struct Panel {
    pub dashboard: String,
    pub title: String,
    pub exprs: Vec<String>,
}

pub fn shipped() -> Vec<(String, Value)> {
    let dir = consentry_testkit::root().join("deploy/grafana");
    FILES
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            (
                f.to_string(),
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}")),
            )
        })
        .collect()
}

pub fn panels() -> Vec<Panel> {
    shipped()
        .into_iter()
        .flat_map(|(file, d)| {
            d["panels"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |p| Panel {
                    dashboard: file.clone(),
                    title: p["title"].as_str().unwrap_or_default().to_string(),
                    exprs: p["targets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|t| t["expr"].as_str().map(String::from))
                        .collect(),
                })
        })
        .collect()
}

/// The metrics the process exports that a PromQL expression reads (a
/// histogram's `_bucket`, `_count` and `_sum` by its own name), and the
/// recorded series (`level:consentry_…:operations`) it reads: for the
/// dashboards' and the rules' checks alike.
pub fn series_read(expr: &str) -> (Vec<String>, Vec<String>) {
    let metric = regex::Regex::new(r"(?:^|[^:a-z_])(consentry_[a-z_]+)").expect("regex");
    let recorded = regex::Regex::new(r"[a-z_]+:consentry_[a-z_]+:[a-z0-9]+").expect("regex");
    let exported = metric
        .captures_iter(expr)
        .map(|m| {
            m[1].trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum")
                .to_string()
        })
        .collect();
    let records = recorded
        .find_iter(expr)
        .map(|r| r.as_str().to_string())
        .collect();
    (exported, records)
}

/// A query as Prometheus takes it: Grafana's interval variables expanded.
pub fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
}

fn uses_the_datasource_variable(v: &Value) -> bool {
    v["type"] == "prometheus" && v["uid"] == "${datasource}"
}

/// Brackets, braces, parentheses and quotes that close in order.
fn balanced(expr: &str) -> bool {
    let mut open = Vec::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(want) {
                    return false;
                }
            }
            _ => {}
        }
    }
    open.is_empty() && !quoted
}

#[test]
fn balanced_catches_what_does_not_close() {
    assert!(balanced(r#"sum by (a) (rate(x{y="(]"}[1m]))"#));
    for bad in ["sum(rate(x[1m])", "x{a=\"b}", "rate(x[1m)]"] {
        assert!(!balanced(bad), "{bad}");
    }
}

#[test]
fn every_dashboard_is_provisionable_and_every_panel_titled_placed_and_sourced() {
    let root = consentry_testkit::root();
    let catalogue = std::fs::read_to_string(root.join("docs/metrics.md")).expect("catalogue");
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/consentry-rules.yaml"))
        .expect("rules");
    let mut uids = BTreeSet::new();
    let mut panels_seen = 0;
    for (file, d) in shipped() {
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(uid.starts_with("consentry-"), "{file}: uid {uid}");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} twice");
        assert!(
            d["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Consentry: ")),
            "{file}"
        );
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: no Prometheus datasource variable"
        );
        let panels = d["panels"].as_array().expect("panels");
        assert!(panels.len() >= 6, "{file}: {} panels", panels.len());
        let mut ids = BTreeSet::new();
        let mut cells: BTreeSet<(i64, i64)> = BTreeSet::new();
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default();
            let id = p["id"].as_i64().expect("a numeric id");
            assert!(ids.insert(id), "{file}: panel id {id} twice");
            assert!(!title.trim().is_empty(), "{file}: panel {id} has no title");
            let description = p["description"].as_str().unwrap_or_default();
            assert!(
                description.len() > 20 && !description.contains('\n'),
                "{file}: {title}: a one-line description"
            );
            let g = &p["gridPos"];
            let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_i64().expect("gridPos"));
            assert!(
                x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24,
                "{file}: {title} outside the grid"
            );
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(
                        cells.insert((cx, cy)),
                        "{file}: {title} overlaps another panel"
                    );
                }
            }
            assert!(
                uses_the_datasource_variable(&p["datasource"]),
                "{file}: {title}: datasource is not ${{datasource}}"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for t in targets {
                assert!(
                    uses_the_datasource_variable(&t["datasource"]),
                    "{file}: {title}: a query's datasource is not ${{datasource}}"
                );
                let expr = t["expr"].as_str().expect("expr");
                assert!(balanced(expr), "{file}: {title}: {expr}");
                let (exported, records) = series_read(expr);
                for base in exported {
                    assert!(
                        catalogue.contains(&format!("`{base}`")),
                        "{file}: {title} reads {base}, which docs/metrics.md does not list"
                    );
                }
                for r in records {
                    assert!(
                        rules.contains(&format!("record: {r}\n")),
                        "{file}: {title} reads {r}, which no shipped rule records"
                    );
                }
            }
            panels_seen += 1;
        }
    }
    assert_eq!(uids.len(), 3);
    assert_eq!(panels().len(), panels_seen);
}

/// The ConfigMap Grafana's sidecar loads: every dashboard, byte for byte,
/// under the label the sidecar watches; and the file provider's config.
#[test]
fn the_dashboards_ship_as_a_configmap_for_grafanas_sidecar() {
    let root = consentry_testkit::root();
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", "deploy/grafana"])
        .current_dir(&root)
        .output()
        .expect("kubectl (on the machine) renders kustomizations");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).expect("one ConfigMap");
    assert_eq!(cm["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(
        cm["metadata"]["name"].as_str(),
        Some("consentry-dashboards")
    );
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    for f in FILES {
        let shipped =
            std::fs::read_to_string(root.join("deploy/grafana").join(f)).expect("dashboard");
        assert_eq!(cm["data"][f].as_str(), Some(shipped.as_str()), "{f}");
    }
    let provider: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/provisioning/dashboards.yaml"))
            .expect("provisioning"),
    )
    .expect("YAML");
    assert_eq!(provider["apiVersion"].as_i64(), Some(1));
    assert_eq!(provider["providers"][0]["type"].as_str(), Some("file"));
}
