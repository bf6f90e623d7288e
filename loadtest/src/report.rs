//! Output: the summary table, `--json`, and `--report FILE.html` — a self-contained page (inline
//! SVG, no scripts, no network) with the latency percentile curve, throughput over time, and the
//! baseline beside Latchkey.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::recorder::{Check, RunResult, TICK};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub label: String,
    pub requests: u64,
    pub ok: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub ok_per_second: f64,
    pub latency: Latency,
    pub errors: BTreeMap<String, u64>,
    /// (percentile, milliseconds) points of the latency curve.
    pub percentile_curve: Vec<(f64, f64)>,
    /// Completions per second, one value per 100 ms tick.
    pub throughput: Vec<f64>,
    /// The slowest request (ms) completed in each 100 ms tick: where stalls happened.
    pub slowest_ms: Vec<f64>,
    /// CPU the server process spent per request (a spawned server: its own process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu: Option<ServerCpu>,
    /// How fast the cores ran during the run (`--cpu-probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<crate::cpu_check::Cores>,
}

/// A spawned server's CPU time per request over a run (from `/proc/<pid>/stat`, all threads):
/// userland and kernel, in microseconds, over the measured window (after the warm-up, whose
/// requests are not counted). The whole cost of a request to the machine, client aside.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerCpu {
    pub user_us: f64,
    pub system_us: f64,
    /// Context switches of the server's threads per request: how often a request's hops put a
    /// thread to sleep (each one a wake-up to pay for).
    pub switches: f64,
}

impl ServerCpu {
    pub fn total_us(&self) -> f64 {
        self.user_us + self.system_us
    }
}

impl Side {
    pub fn from_run(label: &str, run: &RunResult) -> Side {
        let h = &run.histogram;
        let ms = |micros: u64| micros as f64 / 1000.0;
        let curve = [
            0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
        ]
        .iter()
        .map(|p| (*p, ms(h.value_at_quantile(p / 100.0))))
        .collect();
        Side {
            label: label.to_owned(),
            requests: run.requests(),
            ok: run.ok,
            seconds: run.elapsed.as_secs_f64(),
            per_second: run.per_second(),
            ok_per_second: run.ok_per_second(),
            latency: Latency {
                p50_ms: ms(h.value_at_quantile(0.50)),
                p90_ms: ms(h.value_at_quantile(0.90)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                p999_ms: ms(h.value_at_quantile(0.999)),
                max_ms: ms(h.max()),
                mean_ms: h.mean() / 1000.0,
            },
            errors: run.errors.clone(),
            percentile_curve: curve,
            server_cpu: run.server_cpu,
            cores: run.cores,
            // The last bucket is partial (the run rarely ends on a tick): leave it out.
            throughput: run.timeline[..run.timeline.len().saturating_sub(1)]
                .iter()
                .map(|n| *n as f64 / TICK.as_secs_f64())
                .collect(),
            slowest_ms: run.slowest[..run.slowest.len().saturating_sub(1)]
                .iter()
                .map(|micros| ms(*micros))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub durability: String,
    pub concurrency: usize,
    pub rate: Option<f64>,
    /// Unmeasured seconds before the measured window.
    #[serde(skip_serializing_if = "is_zero")]
    pub warmup_seconds: f64,
    pub machine: String,
    pub command: String,
    pub latchkey: Side,
    pub baseline: Option<Side>,
    /// Latchkey req/s ÷ baseline req/s (with `--repeat`: of the run this report shows).
    pub ratio: Option<f64>,
    /// With `--repeat`: every run's ratio, in run order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ratios: Vec<f64>,
    /// Open loop with `--repeat`: every run's Latchkey p99 (ms), in run order; the report
    /// shows the run with the median.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub p99s_ms: Vec<f64>,
    pub checks: Vec<Check>,
    /// Server-side view from `/metrics` (HTTP targets).
    pub server: BTreeMap<String, f64>,
}

fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

impl Report {
    fn warmup_text(&self) -> String {
        if self.warmup_seconds > 0.0 {
            format!(" · measured after {} s of warm-up", self.warmup_seconds)
        } else {
            String::new()
        }
    }

    /// "ratio latchkey / baseline: 0.52", and with `--repeat` every run's ratio.
    fn ratio_text(&self) -> Option<String> {
        let ratio = self.ratio?;
        let mut text = format!("ratio latchkey / baseline: {ratio:.2}");
        if self.ratios.len() > 1 {
            let all: Vec<String> = self.ratios.iter().map(|r| format!("{r:.2}")).collect();
            text += &format!(
                " (median of {} runs: {})",
                self.ratios.len(),
                all.join(", ")
            );
        }
        Some(text)
    }

    /// Open loop with `--repeat`: "latchkey p99 2.91 ms: the median of 3 runs: 2.91, 3.40, 2.75 ms".
    fn p99s_text(&self) -> Option<String> {
        if self.p99s_ms.len() < 2 {
            return None;
        }
        let all: Vec<String> = self.p99s_ms.iter().map(|p| format!("{p:.2}")).collect();
        Some(format!(
            "latchkey p99 {:.2} ms: the median of {} runs: {} ms",
            self.latchkey.latency.p99_ms,
            self.p99s_ms.len(),
            all.join(", ")
        ))
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nscenario {} · target {} · durability {} · concurrency {}{}{}",
            self.scenario,
            self.target,
            self.durability,
            self.concurrency,
            self.rate
                .map(|r| format!(" · open loop {r:.0}/s"))
                .unwrap_or_default(),
            self.warmup_text()
        );
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "", "req/s", "ok/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for side in std::iter::once(&self.latchkey).chain(self.baseline.iter()) {
            let l = &side.latency;
            let _ = writeln!(
                out,
                "{:<10} {:>10.0} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                side.label,
                side.per_second,
                side.ok_per_second,
                l.p50_ms,
                l.p90_ms,
                l.p99_ms,
                l.p999_ms,
                l.max_ms
            );
        }
        if let Some(ratio) = self.ratio_text() {
            let _ = writeln!(out, "{ratio}");
        }
        if let Some(cpu) = self.latchkey.server_cpu {
            let mut line = format!(
                "server CPU per request: latchkey {:.1} µs (user {:.1} + kernel {:.1})",
                cpu.total_us(),
                cpu.user_us,
                cpu.system_us
            );
            if let Some(base) = self.baseline.as_ref().and_then(|b| b.server_cpu) {
                line += &format!(
                    ", baseline {:.1} µs (user {:.1} + kernel {:.1}) = {:.2} ×",
                    base.total_us(),
                    base.user_us,
                    base.system_us,
                    cpu.total_us() / base.total_us().max(1e-9)
                );
            }
            let _ = writeln!(out, "{line}");
            let mut line = format!(
                "server context switches per request: latchkey {:.2}",
                cpu.switches
            );
            if let Some(base) = self.baseline.as_ref().and_then(|b| b.server_cpu) {
                line += &format!(", baseline {:.2}", base.switches);
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(cores) = self.latchkey.cores {
            let mut line = format!(
                "the cores during the run (fixed work, medians of {} probes): latchkey {:.2} ms (core) {:.2} ms (memory)",
                cores.probes, cores.core_ms, cores.memory_ms
            );
            if let Some(base) = self.baseline.as_ref().and_then(|b| b.cores) {
                line += &format!(
                    ", baseline {:.2} ms (core) {:.2} ms (memory)",
                    base.core_ms, base.memory_ms
                );
            }
            let _ = writeln!(out, "{line}");
        }
        if let Some(p99s) = self.p99s_text() {
            let _ = writeln!(out, "{p99s}");
        }
        if !self.latchkey.errors.is_empty() {
            let _ = writeln!(out, "errors by id: {:?}", self.latchkey.errors);
        }
        for (name, value) in &self.server {
            let _ = writeln!(out, "server {name}: {value:.2}");
        }
        for check in &self.checks {
            let mark = if check.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "{mark} {} ({})", check.name, check.detail);
        }
        out
    }

    pub fn html(&self) -> String {
        let sides: Vec<&Side> = std::iter::once(&self.latchkey)
            .chain(self.baseline.iter())
            .collect();
        let colors: [&'static str; 2] = ["#d9480f", "#1c7ed6"];
        let curves: Vec<Series> = sides
            .iter()
            .zip(colors)
            .map(|(s, c)| {
                // x: "nines" (-log10(1 - p)), capped at 4 (99.99 %)
                let points = s
                    .percentile_curve
                    .iter()
                    .map(|(p, ms)| ((-(1.0 - p / 100.0).max(1e-4).log10()), *ms))
                    .collect();
                (s.label.clone(), c, points)
            })
            .collect();
        let over_time = |values: fn(&Side) -> &Vec<f64>| -> Vec<Series> {
            sides
                .iter()
                .zip(colors)
                .map(|(s, c)| {
                    let points = values(s)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i as f64 * TICK.as_secs_f64(), *v))
                        .collect();
                    (s.label.clone(), c, points)
                })
                .collect()
        };
        let throughput = over_time(|s| &s.throughput);
        let slowest = over_time(|s| &s.slowest_ms);
        let bars: Vec<(String, &str, f64)> = sides
            .iter()
            .zip(colors)
            .map(|(s, c)| (s.label.clone(), c, s.per_second))
            .collect();
        let checks: String = self
            .checks
            .iter()
            .map(|c| {
                format!(
                    "<li class=\"{}\">{} {} ({})</li>",
                    if c.passed { "pass" } else { "fail" },
                    if c.passed { "PASS" } else { "FAIL" },
                    escape(&c.name),
                    escape(&c.detail)
                )
            })
            .collect();
        format!(
            r#"<!doctype html><html><head><meta charset="utf-8"><title>Latchkey load test: {scenario}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:980px;color:#222}}table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}th:first-child,td:first-child{{text-align:left}}.pass{{color:#2b8a3e}}.fail{{color:#c92a2a;font-weight:bold}}svg{{background:#fafafa;border:1px solid #eee}}code{{background:#f1f3f5;padding:2px 4px}}</style></head><body>
<h1>Latchkey load test — {scenario}</h1>
<p>target <b>{target}</b> · durability <b>{durability}</b> · concurrency <b>{concurrency}</b>{rate}<br>machine: {machine}<br>command: <code>{command}</code></p>
<h2>Summary</h2>{table}
<p><b>{ratio}</b></p><ul>{checks}</ul>
<h2>Requests per second</h2>{bars}
<h2>Latency by percentile</h2><p>x: percentile (log of nines: 90, 99, 99.9, 99.99), y: milliseconds</p>{curve}
<h2>Throughput over time</h2><p>x: seconds, y: completed requests per second (100 ms buckets)</p>{timeline}
<h2>Slowest request over time</h2><p>x: seconds, y: milliseconds, the slowest request completed in each 100 ms bucket (stalls show as spikes)</p>{slowest}
</body></html>"#,
            scenario = escape(&self.scenario),
            target = escape(&self.target),
            durability = escape(&self.durability),
            concurrency = self.concurrency,
            rate = self
                .rate
                .map(|r| format!(" · open loop at <b>{r:.0}</b>/s"))
                .unwrap_or_default()
                + &self.warmup_text(),
            machine = escape(&self.machine),
            command = escape(&self.command),
            table = self.html_table(&sides),
            ratio = self
                .ratio_text()
                .unwrap_or_else(|| "no baseline in this run".into())
                + &self
                    .p99s_text()
                    .map(|t| format!(" · {}", escape(&t)))
                    .unwrap_or_default(),
            checks = checks,
            bars = bar_chart(&bars),
            curve = line_chart(&curves, &["0", "90", "99", "99.9", "99.99"]),
            timeline = line_chart(&throughput, &[]),
            slowest = line_chart(&slowest, &[]),
        )
    }

    fn html_table(&self, sides: &[&Side]) -> String {
        let mut t = String::from("<table><tr><th></th><th>req/s</th><th>ok/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>errors</th></tr>");
        for s in sides {
            let l = &s.latency;
            let _ = write!(
                t,
                "<tr><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                escape(&s.label), s.per_second, s.ok_per_second, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms,
                escape(&format!("{:?}", s.errors))
            );
        }
        t.push_str("</table>");
        t
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One plotted line: label, colour, (x, y) points.
type Series = (String, &'static str, Vec<(f64, f64)>);

const W: f64 = 860.0;
const H: f64 = 300.0;
const PAD: f64 = 64.0;

/// Axis label: 56337 → "56.3k", 0.25 → "0.25".
fn axis(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1}k", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn line_chart(series: &[Series], x_labels: &[&str]) -> String {
    let xs = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(x, _)| *x));
    let ys = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y));
    let x_max = xs.fold(0.0_f64, f64::max).max(1e-9);
    let y_max = ys.fold(0.0_f64, f64::max).max(1e-9) * 1.05;
    let sx = |x: f64| PAD + x / x_max * (W - 2.0 * PAD);
    let sy = |y: f64| H - PAD + -(y / y_max) * (H - 2.0 * PAD);
    let mut svg = format!(r#"<svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">"#);
    let _ = write!(
        svg,
        r##"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#999"/>"##,
        b = H - PAD,
        r = W - PAD
    );
    for i in 0..=4 {
        let y = y_max * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{x}" y="{py}" font-size="11" text-anchor="end" fill="#555">{label}</text>"##,
            x = PAD - 4.0,
            py = sy(y) + 4.0,
            label = axis(y)
        );
    }
    if x_labels.is_empty() {
        for i in 0..=4 {
            let x = x_max * i as f64 / 4.0;
            let _ = write!(
                svg,
                r##"<text x="{px}" y="{y}" font-size="11" text-anchor="middle" fill="#555">{x:.1}</text>"##,
                px = sx(x),
                y = H - PAD + 16.0
            );
        }
    } else {
        for (i, label) in x_labels.iter().enumerate() {
            let _ = write!(
                svg,
                r##"<text x="{px}" y="{y}" font-size="11" text-anchor="middle" fill="#555">{label}</text>"##,
                px = sx(i as f64),
                y = H - PAD + 16.0
            );
        }
    }
    for (n, (label, color, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/><text x="{x}" y="{y}" font-size="12" fill="{color}">{}</text>"#,
            path.join(" "),
            escape(label),
            x = W - PAD - 120.0,
            y = PAD + 16.0 * n as f64
        );
    }
    svg.push_str("</svg>");
    svg
}

fn bar_chart(bars: &[(String, &str, f64)]) -> String {
    let max = bars.iter().map(|b| b.2).fold(0.0_f64, f64::max).max(1e-9);
    let mut svg = format!(
        r#"<svg width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg">"#,
        h = 40.0 * bars.len() as f64 + 10.0
    );
    for (i, (label, color, value)) in bars.iter().enumerate() {
        let width = value / max * (W - 260.0);
        let y = 10.0 + 40.0 * i as f64;
        let _ = write!(
            svg,
            r##"<text x="0" y="{ty}" font-size="13">{}</text><rect x="100" y="{y}" width="{width:.1}" height="28" fill="{color}"/><text x="{tx:.1}" y="{ty}" font-size="13">{value:.0}/s</text>"##,
            escape(label),
            ty = y + 19.0,
            tx = 106.0 + width
        );
    }
    svg.push_str("</svg>");
    svg
}
