//! The report as text and as one self-contained HTML page (inline CSS and
//! SVG charts, no script, no external asset). Both carry the numbers of
//! the JSON form; every string from the trail is escaped in HTML.

use super::measures::Report;
use consentry_stages::time::format_iso;
use std::fmt::Write as _;

fn ms(v: Option<i64>) -> String {
    v.map_or("-".into(), |v| format!("{v} ms"))
}

/// The lines `make run` prints: one figure per measure.
pub fn headline(r: &Report) -> Vec<String> {
    let decided: u64 = r.consent.iter().map(|c| c.events).sum();
    let allowed: u64 = r.consent.iter().map(|c| c.allowed).sum();
    let detok: u64 = r.detokenizations.iter().map(|d| d.resolves).sum();
    let callers = r
        .detokenizations
        .iter()
        .map(|d| d.caller.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let denials: u64 = r.denials.iter().map(|d| d.events).sum();
    let c = &r.audit_completeness;
    let mut lines = vec![
        format!(
            "consent validated: {:.1}% of {decided} (event, purpose) decisions allowed on an active consent",
            if decided == 0 { 0.0 } else { allowed as f64 * 100.0 / decided as f64 }
        ),
        format!(
            "audit completeness: {:.2}% of {} disclosures backed by a verified audit record; {:.2}% of {} decisions name their consent and policy; trail {} ({} records, {} breaks)",
            c.disclosures_backed_pct,
            c.disclosures,
            c.decisions_named_pct,
            c.decisions,
            if c.trail.intact { "intact" } else { "BROKEN" },
            c.trail.records,
            c.trail.breaks
        ),
        format!(
            "time to revoke: p50 {}, p99 {} over {} notices; disclosures after a revocation: {}; resolves of revoked subjects: {}",
            ms(r.revocation.p50_ms),
            ms(r.revocation.p99_ms),
            r.revocation.notices,
            r.revocation.disclosures_after_revocation,
            r.revocation.resolves_after_revocation
        ),
        format!("denials: {denials}; detokenizations: {detok} by {callers} callers"),
    ];
    for f in &r.phi_footprint {
        lines.push(format!(
            "{}: {} records, {} fields beyond operational ones ({})",
            f.purpose,
            f.records,
            f.fields.len(),
            f.profile
        ));
    }
    for k in &r.k_anonymity {
        lines.push(format!(
            "{} (Safe Harbor): smallest group {} over {}; {} records in groups under k={}",
            k.purpose,
            k.smallest_group,
            if k.quasi_identifiers.is_empty() {
                "no quasi-identifier".to_string()
            } else {
                k.quasi_identifiers.join(", ")
            },
            k.records_in_groups_under_k,
            k.k
        ));
    }
    lines
}

/// Text with control characters (a terminal's escapes) replaced: names
/// in the report come from records anyone on the broker could write.
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

pub fn text(r: &Report) -> String {
    plain(&text_raw(r))
}

fn text_raw(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Consentry compliance report: policy {}, {} to {}",
        r.policy_version,
        format_iso(r.since_ms),
        format_iso(r.generated_at_ms)
    );
    let _ = writeln!(o, "\nHeadline");
    for l in headline(r) {
        let _ = writeln!(o, "  {l}");
    }
    let _ = writeln!(o, "\nConsent per purpose (the gate's decisions)");
    let _ = writeln!(
        o,
        "  {:<22} {:>8} {:>8} {:>8} {:>15} {:>10}",
        "purpose", "events", "allowed", "denied", "consent needed", "validated"
    );
    for c in &r.consent {
        let _ = writeln!(
            o,
            "  {:<22} {:>8} {:>8} {:>8} {:>15} {:>9.2}%",
            c.purpose, c.events, c.allowed, c.denied, c.consent_needed, c.validated_pct
        );
    }
    let _ = writeln!(o, "\nPHI fields outside the source, per destination");
    for f in &r.phi_footprint {
        let _ = writeln!(
            o,
            "  {} -> {} ({}, {}): {} records",
            f.purpose,
            f.destination,
            f.profile,
            if f.phi { "PHI" } else { "not PHI" },
            f.records
        );
        for x in &f.fields {
            let _ = writeln!(o, "    {:<32} {:<18} {:>8}", x.field, x.class, x.records);
        }
    }
    let _ = writeln!(o, "\nDetokenizations per caller per week");
    if r.detokenizations.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for d in &r.detokenizations {
        let _ = writeln!(
            o,
            "  {:<24} {:<9} {:>6} resolved ({} by break-glass), {} refused",
            d.caller, d.week, d.resolves, d.break_glass, d.refused
        );
    }
    let v = &r.revocation;
    let _ = writeln!(
        o,
        "\nTime to revoke: {} notices, p50 {}, p99 {}, max {}; disclosures after a revocation: {}; vault resolves of revoked subjects (refused): {}",
        v.notices,
        ms(v.p50_ms),
        ms(v.p99_ms),
        ms(v.max_ms),
        v.disclosures_after_revocation,
        v.resolves_after_revocation
    );
    let c = &r.audit_completeness;
    let _ = writeln!(
        o,
        "\nAudit completeness\n  disclosures backed by a verified audit record: {} of {} ({:.2}%; {} ledger entries undecodable)\n  records route's verified audit says it wrote, missing from the ledger: {}\n  allow and forward decisions naming their consent and policy: {} of {} ({:.2}%)\n  trail: {} ({} records, {} breaks; `consentry audit verify` says where)",
        c.disclosures_backed,
        c.disclosures,
        c.disclosures_backed_pct,
        c.undecodable_disclosures,
        c.forwards_without_disclosure,
        c.decisions_naming_consent_and_policy,
        c.decisions,
        c.decisions_named_pct,
        if c.trail.intact { "intact" } else { "BROKEN" },
        c.trail.records,
        c.trail.breaks
    );
    let _ = writeln!(o, "\nDenials by purpose, stage and reason");
    if r.denials.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for d in &r.denials {
        let _ = writeln!(
            o,
            "  {:<22} {:<14} {:<24} {:>8}",
            d.purpose, d.stage, d.reason, d.events
        );
    }
    let _ = writeln!(o, "\nk-anonymity of Safe Harbor destinations");
    for k in &r.k_anonymity {
        let _ = writeln!(
            o,
            "  {} -> {}: {} records in {} groups over [{}]; smallest group {}; {} groups ({} records) under k={}",
            k.purpose,
            k.destination,
            k.records,
            k.groups,
            k.quasi_identifiers.join(", "),
            k.smallest_group,
            k.groups_under_k,
            k.records_in_groups_under_k,
            k.k
        );
    }
    o
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Horizontal bars, one per (label, value, note), as an inline SVG: the
/// label in the first 190 units, the bar up to 300, the note after it.
fn bars(rows: &[(String, f64, String)], max: f64, color: &str) -> String {
    let h = 24;
    let mut o = format!(
        r#"<svg class="bars" viewBox="0 0 900 {}" role="img" xmlns="http://www.w3.org/2000/svg">"#,
        rows.len() * h + 4
    );
    for (i, (label, value, note)) in rows.iter().enumerate() {
        let y = i * h + 2;
        let w = if max > 0.0 {
            (value / max * 300.0).clamp(0.0, 300.0)
        } else {
            0.0
        };
        let _ = write!(
            o,
            r#"<text x="0" y="{}" class="l">{}</text><rect x="190" y="{}" width="{w:.1}" height="16" rx="3" fill="{color}"/><text x="{:.1}" y="{}" class="v">{}</text>"#,
            y + 13,
            esc(label),
            y + 1,
            196.0 + w,
            y + 13,
            esc(note)
        );
    }
    o.push_str("</svg>");
    o
}

fn tile(value: &str, label: &str, good: bool) -> String {
    format!(
        r#"<div class="tile {}"><div class="n">{}</div><div class="t">{}</div></div>"#,
        if good { "ok" } else { "bad" },
        esc(value),
        esc(label)
    )
}

pub fn html(r: &Report) -> String {
    let c = &r.audit_completeness;
    let v = &r.revocation;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Consentry compliance report</title><meta name="viewport" content="width=device-width, initial-scale=1"><style>
body{{font:15px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}}
main{{max-width:980px;margin:0 auto;padding:24px}}h1{{font-size:24px;margin:0 0 4px}}h2{{font-size:18px;margin:28px 0 8px}}
.sub{{color:#5b6776}}.tiles{{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin:16px 0}}
.tile{{background:#fff;border-radius:8px;padding:14px;border-left:6px solid #2e7d32}}.tile.bad{{border-left-color:#c62828}}
.tile .n{{font-size:26px;font-weight:600}}.tile .t{{color:#5b6776;font-size:13px}}
section{{background:#fff;border-radius:8px;padding:12px 18px;margin:12px 0}}table{{border-collapse:collapse;width:100%}}
td,th{{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e9ed}}td.n,th.n{{text-align:right}}
.bars{{width:100%;max-width:900px}}.bars .l{{font-size:12px;fill:#1d2733}}.bars .v{{font-size:12px;fill:#5b6776}}
.warn{{color:#c62828;font-weight:600}}
</style></head><body><main><h1>Consentry compliance report</h1><p class="sub">Policy {} · {} to {}</p>"#,
        esc(&r.policy_version),
        esc(&format_iso(r.since_ms)),
        esc(&format_iso(r.generated_at_ms))
    );
    let decided: u64 = r.consent.iter().map(|c| c.events).sum();
    let allowed: u64 = r.consent.iter().map(|c| c.allowed).sum();
    o.push_str(r#"<div class="tiles">"#);
    o.push_str(&tile(
        &format!(
            "{:.1}%",
            if decided == 0 {
                0.0
            } else {
                allowed as f64 * 100.0 / decided as f64
            }
        ),
        "of decisions allowed on a validated consent",
        true,
    ));
    o.push_str(&tile(
        &format!("{:.2}%", c.disclosures_backed_pct),
        &format!(
            "of {} disclosures backed by a verified audit record",
            c.disclosures
        ),
        c.disclosures_backed == c.disclosures,
    ));
    o.push_str(&tile(
        if c.trail.intact { "intact" } else { "broken" },
        &format!("audit trail, {} records", c.trail.records),
        c.trail.intact,
    ));
    o.push_str(&tile(
        &ms(v.p99_ms),
        &format!("time to revoke, p99 ({} notices)", v.notices),
        v.p99_ms.is_none_or(|p| p < 1000),
    ));
    o.push_str(&tile(
        &v.disclosures_after_revocation.to_string(),
        "disclosures after a revocation",
        v.disclosures_after_revocation == 0,
    ));
    o.push_str("</div>");

    o.push_str(r#"<section><h2>Consent validated per purpose</h2><p class="sub">Share of each purpose's (event, purpose) decisions the gate allowed on an active consent.</p>"#);
    let rows: Vec<(String, f64, String)> = r
        .consent
        .iter()
        .map(|c| {
            (
                c.purpose.clone(),
                c.validated_pct,
                format!(
                    "{:.1}% of {} ({} denied, {} consent needed)",
                    c.validated_pct, c.events, c.denied, c.consent_needed
                ),
            )
        })
        .collect();
    o.push_str(&bars(&rows, 100.0, "#2e7d32"));
    o.push_str("</section>");

    o.push_str(r#"<section><h2>PHI fields outside the source</h2><p class="sub">Per destination, each field other than operational ones, with the records that carried it.</p>"#);
    for f in &r.phi_footprint {
        let _ = write!(
            o,
            "<h3>{} &rarr; {} <span class=\"sub\">({}, {}, {} records)</span></h3>",
            esc(&f.purpose),
            esc(&f.destination),
            esc(&f.profile),
            if f.phi { "PHI" } else { "not PHI" },
            f.records
        );
        let rows: Vec<(String, f64, String)> = f
            .fields
            .iter()
            .map(|x| {
                (
                    x.field.clone(),
                    x.records as f64,
                    format!("{} ({})", x.records, x.class),
                )
            })
            .collect();
        o.push_str(&bars(&rows, f.records as f64, "#1565c0"));
    }
    o.push_str("</section>");

    o.push_str("<section><h2>Detokenizations per caller per week</h2>");
    if r.detokenizations.is_empty() {
        o.push_str("<p>None.</p>");
    } else {
        let max = r
            .detokenizations
            .iter()
            .map(|d| d.resolves + d.refused)
            .max()
            .unwrap_or(0) as f64;
        let rows: Vec<(String, f64, String)> = r
            .detokenizations
            .iter()
            .map(|d| {
                (
                    format!("{} {}", d.caller, d.week),
                    d.resolves as f64,
                    format!(
                        "{} resolved, {} by break-glass, {} refused",
                        d.resolves, d.break_glass, d.refused
                    ),
                )
            })
            .collect();
        o.push_str(&bars(&rows, max, "#6a1b9a"));
    }
    o.push_str("</section>");

    let _ = write!(
        o,
        "<section><h2>Time to revoke</h2><p>{} notices: p50 {}, p99 {}, max {}. Disclosures after a revocation: <span class=\"{}\">{}</span>. Vault resolves of revoked subjects (refused): <span class=\"{}\">{}</span>.</p></section>",
        v.notices,
        ms(v.p50_ms),
        ms(v.p99_ms),
        ms(v.max_ms),
        if v.disclosures_after_revocation == 0 { "" } else { "warn" },
        v.disclosures_after_revocation,
        if v.resolves_after_revocation == 0 { "" } else { "warn" },
        v.resolves_after_revocation
    );
    let _ = write!(
        o,
        "<section><h2>Audit completeness</h2><table><tr><td>Disclosures backed by a verified audit record</td><td class=\"n\">{} of {} ({:.2}%)</td></tr><tr><td>Records route's verified audit says it wrote, missing from the ledger</td><td class=\"n\">{}</td></tr><tr><td>Allow and forward decisions naming their consent and policy</td><td class=\"n\">{} of {} ({:.2}%)</td></tr><tr><td>Hash chains and signed checkpoints</td><td class=\"n\">{} ({} records, {} breaks)</td></tr></table></section>",
        c.disclosures_backed,
        c.disclosures,
        c.disclosures_backed_pct,
        c.forwards_without_disclosure,
        c.decisions_naming_consent_and_policy,
        c.decisions,
        c.decisions_named_pct,
        if c.trail.intact { "intact" } else { "broken" },
        c.trail.records,
        c.trail.breaks
    );

    o.push_str("<section><h2>Denials by reason</h2>");
    if r.denials.is_empty() {
        o.push_str("<p>None.</p>");
    } else {
        let max = r.denials.iter().map(|d| d.events).max().unwrap_or(0) as f64;
        let rows: Vec<(String, f64, String)> = r
            .denials
            .iter()
            .map(|d| {
                (
                    format!("{} · {}", d.purpose, d.reason),
                    d.events as f64,
                    format!("{} ({})", d.events, d.stage),
                )
            })
            .collect();
        o.push_str(&bars(&rows, max, "#c62828"));
    }
    o.push_str("</section>");

    o.push_str("<section><h2>k-anonymity of Safe Harbor destinations</h2><table><tr><th>destination</th><th>quasi-identifiers</th><th class=\"n\">records</th><th class=\"n\">groups</th><th class=\"n\">smallest group</th><th class=\"n\">records in groups under k</th></tr>");
    for k in &r.k_anonymity {
        let _ = write!(
            o,
            "<tr><td>{} &rarr; {}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td><td class=\"n\">{} (k={})</td></tr>",
            esc(&k.purpose),
            esc(&k.destination),
            esc(&k.quasi_identifiers.join(", ")),
            k.records,
            k.groups,
            if k.smallest_group < k.k { " warn" } else { "" },
            k.smallest_group,
            k.records_in_groups_under_k,
            k.k
        );
    }
    o.push_str("</table></section></main></body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_no_terminal_escapes() {
        assert_eq!(plain("a\u{1b}[31mb\r\nc"), "a?[31mb?\nc");
    }

    #[test]
    fn html_escapes_what_it_is_given() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        let svg = bars(&[("<b>".into(), 1.0, "1".into())], 1.0, "#000");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
    }
}
