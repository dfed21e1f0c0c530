//! `report.html`: one self-contained page, no scripts and no external
//! resources. Every string from the report goes through [`escape`].

use std::fmt::Write;

use super::{RunReport, Verdict, format_seconds, format_value, plot, text};

const STYLE: &str = r#"
:root{--pass:#1a7f37;--fail:#cf222e;--muted:#59636e;--line:#d1d9e0;--head:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;background:#fff}
header{display:flex;gap:28px;align-items:center;padding:18px 32px;border-bottom:4px solid}
header.pass{background:#dafbe1;border-color:var(--pass)}
header.fail{background:#ffebe9;border-color:var(--fail)}
.verdict{font-size:60px;font-weight:800;letter-spacing:.04em;line-height:1}
.pass .verdict{color:var(--pass)}
.fail .verdict{color:var(--fail)}
h1{margin:0;font-size:26px}
h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:16px 0 4px}
p{margin:4px 0}
.desc{font-size:15px}
.meta,.muted,.unit{color:var(--muted)}
main{padding:4px 32px 32px;max-width:1180px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--head);font-weight:600}
td.name{white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv{width:auto}
table.kv th{background:none;padding-left:0}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:13px}
pre{background:var(--head);border:1px solid var(--line);border-radius:6px;padding:10px 12px;overflow-x:auto;white-space:pre-wrap}
.ok{color:var(--pass);font-weight:700}
.bad{color:var(--fail);font-weight:700}
tr.failed td{background:#fff5f5}
.error{border:1px solid var(--fail);background:#ffebe9;border-radius:6px;padding:8px 12px;margin-top:16px}
.summary{font-weight:600;margin:8px 0}
figure{margin:8px 0 18px}
svg.plot{display:block;max-width:100%;height:auto}
.plot .frame{fill:#fff;stroke:#818b98}
.plot .grid{stroke:#eff2f5}
.plot .tickmark{stroke:#818b98}
.plot .tick{font-size:11px;fill:var(--muted)}
.plot .axis{font-size:12px;fill:#1f2328}
.plot .line{fill:none;stroke:#0969da;stroke-width:1.8;stroke-linejoin:round}
.plot .dot{fill:#0969da}
.plot .mark{stroke:#bf8700;stroke-width:1.2;stroke-dasharray:4 3}
.plot .nodata{fill:var(--muted);font-size:14px}
"#;

/// The whole page.
pub(super) fn render(r: &RunReport) -> String {
    let verdict = r.verdict.label();
    let class = verdict_class(r.verdict);
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <title>{verdict}: {} — testbed report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&r.scenario)
    );

    let _ = write!(
        h,
        "<header class=\"{class}\"><div class=\"verdict\" id=\"verdict\">{verdict}</div><div>\
         <h1>{}</h1>",
        escape(&r.scenario)
    );
    if !r.description.is_empty() {
        let _ = write!(h, "<p class=\"desc\">{}</p>", escape(&r.description));
    }
    let _ = write!(
        h,
        "<p class=\"meta\">{} · lab {} · seed {} · started {} · planned {} · wall {}</p></div></header>\n<main>\n",
        escape(&r.file),
        escape(&r.lab),
        r.seed,
        escape(&r.started),
        format_seconds(r.duration_s),
        format_seconds(r.wall_s)
    );

    if let Some(error) = &r.error {
        let _ = writeln!(
            h,
            "<div class=\"error\"><strong>The run did not complete:</strong> {}</div>",
            escape(error)
        );
    }

    assertions(&mut h, r);
    timeline(&mut h, r);
    attacks(&mut h, r);
    series(&mut h, r);
    reproduce(&mut h, r);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn assertions(h: &mut String, r: &RunReport) {
    h.push_str("<section id=\"assertions\"><h2>Assertions</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"summary {}\">{}</p>",
        if r.verdict == Verdict::Pass {
            "ok"
        } else {
            "bad"
        },
        escape(&text::summary(r))
    );
    if r.assertions.is_empty() {
        h.push_str("<p class=\"muted\">The scenario has no assertions.</p>\n");
    } else {
        h.push_str(
            "<table><thead><tr><th>Result</th><th>Assertion</th><th>Check</th><th>Expected</th>\
             <th class=\"num\">Observed</th><th>Message</th></tr></thead><tbody>\n",
        );
        for a in &r.assertions {
            let _ = writeln!(
                h,
                "<tr{}><td>{}</td><td class=\"name\">{}</td><td><code>{}</code></td><td><code>{}</code></td>\
                 <td class=\"num\">{}</td><td>{}</td></tr>",
                if a.passed { "" } else { " class=\"failed\"" },
                badge(a.passed),
                escape(&a.name),
                escape(&a.check),
                escape(&a.expected),
                format_value(a.observed),
                escape(&a.message)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");
}

fn timeline(h: &mut String, r: &RunReport) {
    h.push_str("<section id=\"timeline\"><h2>Timeline</h2>\n");
    if r.timeline.is_empty() {
        h.push_str("<p class=\"muted\">No scheduled actions.</p>\n");
    } else {
        h.push_str(
            "<table><thead><tr><th class=\"num\">Time</th><th>Action</th><th>Outcome</th></tr></thead><tbody>\n",
        );
        for t in &r.timeline {
            let outcome = if t.outcome == "ok" {
                "<span class=\"ok\">ok</span>".to_string()
            } else {
                format!("<span class=\"bad\">{}</span>", escape(&t.outcome))
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{outcome}</td></tr>",
                format_seconds(t.at_s),
                escape(&t.action)
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");
}

fn attacks(h: &mut String, r: &RunReport) {
    h.push_str("<section id=\"attacks\"><h2>Attacks</h2>\n");
    if r.attacks.is_empty() {
        h.push_str("<p class=\"muted\">No attacks.</p>\n");
    } else {
        h.push_str(
            "<table><thead><tr><th class=\"num\">Id</th><th>Kind</th><th>On</th><th>Filter</th>\
             <th class=\"num\">Started</th><th class=\"num\">Stopped</th><th class=\"num\">Matched</th>\
             <th class=\"num\">Acted</th><th>Capture</th></tr></thead><tbody>\n",
        );
        for a in &r.attacks {
            let stopped = a.stopped_s.map_or_else(|| "-".to_string(), format_seconds);
            let capture = match &a.capture {
                Some(c) if is_local_file(c) => {
                    format!("<a href=\"{0}\">{0}</a>", escape(c))
                }
                Some(c) => escape(c),
                None => "-".to_string(),
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><code>{}</code></td>\
                 <td class=\"num\">{}</td><td class=\"num\">{stopped}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td>{capture}</td></tr>",
                a.id,
                escape(&a.kind),
                escape(&a.on),
                escape(&a.filter),
                format_seconds(a.started_s),
                a.matched,
                a.acted
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");
}

fn series(h: &mut String, r: &RunReport) {
    h.push_str("<section id=\"series\"><h2>Measurements</h2>\n");
    if r.series.is_empty() {
        h.push_str("<p class=\"muted\">No series were recorded.</p>\n");
    } else if !r.timeline.is_empty() {
        h.push_str(
            "<p class=\"muted\">Dashed lines mark the timeline's actions \
             (hover one for its name).</p>\n",
        );
    }
    for s in &r.series {
        let unit = if s.unit.is_empty() {
            String::new()
        } else {
            format!(" <span class=\"unit\">({})</span>", escape(&s.unit))
        };
        let _ = writeln!(
            h,
            "<figure><h3>{}{unit}</h3>{}</figure>",
            escape(&s.name),
            plot::svg(s, r.duration_s, &r.timeline)
        );
    }
    h.push_str("</section>\n");
}

fn reproduce(h: &mut String, r: &RunReport) {
    let env = &r.environment;
    let _ = write!(
        h,
        "<section id=\"reproduce\"><h2>Reproduce</h2>\n<pre><code>{}</code></pre>\n<table class=\"kv\"><tbody>\n",
        escape(&r.reproduce)
    );
    let rows: [(&str, String); 11] = [
        ("Seed", r.seed.to_string()),
        ("Scenario file", r.file.clone()),
        ("Topology", r.topology.clone()),
        ("Lab", r.lab.clone()),
        ("Started", r.started.clone()),
        ("Planned duration", format_seconds(r.duration_s)),
        ("testbed version", env.testbed_version.clone()),
        (
            "Git commit",
            env.git_commit.clone().unwrap_or_else(|| "unknown".into()),
        ),
        ("Kernel", env.kernel.clone()),
        ("Backend", env.backend.clone()),
        ("Host", env.hostname.clone()),
    ];
    for (key, value) in rows {
        let _ = writeln!(
            h,
            "<tr><th>{key}</th><td><code>{}</code></td></tr>",
            escape(&value)
        );
    }
    let _ = writeln!(
        h,
        "<tr><th>Wall time</th><td>{} (teardown included)</td></tr>",
        format_seconds(r.wall_s)
    );
    h.push_str("</tbody></table>\n</section>\n");
}

fn badge(passed: bool) -> &'static str {
    if passed {
        "<span class=\"ok\">PASS</span>"
    } else {
        "<span class=\"bad\">FAIL</span>"
    }
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
    }
}

/// A plain file name (no folder, no scheme) that can be linked relative to
/// the report.
fn is_local_file(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', ':', '?', '#'])
        && !name.chars().any(char::is_control)
}

/// HTML-escape text for element content and quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn only_plain_names_are_linked() {
        assert!(is_local_file("attack-1.pcapng"));
        assert!(!is_local_file("javascript:alert(1)"));
        assert!(!is_local_file("../etc/passwd"));
        assert!(!is_local_file("/tmp/x.pcapng"));
        assert!(!is_local_file(".."));
    }
}
