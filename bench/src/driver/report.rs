//! Results: the table on stdout, the JSON file, and the SVG chart.

use bench::System;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Whether more or less is better.
#[derive(Clone, Copy, PartialEq)]
pub enum Better {
    Higher,
    Lower,
}

/// A row of the table.
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub better: Better,
    /// Measured in every round (timed) or once (counted in the wineserver trace, or exact).
    pub timed: bool,
    /// Shown in the chart.
    pub chart: bool,
}

/// The rows; `{n}` in a key or label stands for each connection count.
pub const METRICS: &[Metric] = &[
    Metric {
        key: "echo_{n}",
        label: "echoes/s, {n} conns",
        better: Better::Higher,
        timed: true,
        chart: true,
    },
    Metric {
        key: "requests_per_echo_{n}",
        label: "wineserver req/echo, {n}",
        better: Better::Lower,
        timed: false,
        chart: true,
    },
    Metric {
        key: "nt_calls_per_echo_{n}",
        label: "reactor NT calls/echo, {n}",
        better: Better::Lower,
        timed: true,
        chart: false,
    },
    Metric {
        key: "wake_p10_us",
        label: "wake latency p10 (us)",
        better: Better::Lower,
        timed: true,
        chart: false,
    },
    Metric {
        key: "wake_p50_us",
        label: "wake latency p50 (us)",
        better: Better::Lower,
        timed: true,
        chart: true,
    },
    Metric {
        key: "wake_p90_us",
        label: "wake latency p90 (us)",
        better: Better::Lower,
        timed: true,
        chart: false,
    },
    Metric {
        key: "storm_packets",
        label: "storm: packets for all wakes",
        better: Better::Lower,
        timed: false,
        chart: false,
    },
    Metric {
        key: "churn_ops_per_sec",
        label: "churn ops/s",
        better: Better::Higher,
        timed: true,
        chart: true,
    },
    Metric {
        key: "churn_requests_per_op",
        label: "churn wineserver req/op",
        better: Better::Lower,
        timed: false,
        chart: false,
    },
    Metric {
        key: "heap_bytes_per_socket",
        label: "heap bytes/registered socket",
        better: Better::Lower,
        timed: false,
        chart: true,
    },
    Metric {
        key: "teardown_ms",
        label: "teardown, all pending (ms)",
        better: Better::Lower,
        timed: true,
        chart: true,
    },
    Metric {
        key: "teardown_no_wait_ms",
        label: "teardown, nobody waits (ms)",
        better: Better::Lower,
        timed: true,
        chart: true,
    },
    Metric {
        key: "idle_requests_per_sec",
        label: "idle wineserver req/s",
        better: Better::Lower,
        timed: false,
        chart: false,
    },
];

/// A panel of a chart: a metric, a bar per system.
pub struct Panel {
    pub label: String,
    pub key: String,
    pub better: Better,
    pub systems: Vec<System>,
}

/// A metric with `{n}` filled in.
pub struct Row {
    pub key: String,
    pub label: String,
    pub better: Better,
    pub timed: bool,
    pub chart: bool,
}

/// Everything measured: metric → system → one value per round (counted metrics: one value).
#[derive(Default)]
pub struct Results {
    pub values: BTreeMap<String, BTreeMap<System, Vec<f64>>>,
    /// Per-kind wineserver requests per echo: size → system → kind → count.
    pub kinds: BTreeMap<usize, BTreeMap<System, BTreeMap<String, f64>>>,
    /// Per-kind wineserver requests per churn operation: system → kind → count.
    pub churn_kinds: BTreeMap<System, BTreeMap<String, f64>>,
    pub config: Vec<(String, String)>,
    pub systems: Vec<System>,
    /// Connection counts of the echo runs.
    pub sizes: Vec<usize>,
    pub wall_secs: f64,
    /// The systems whose teardown waits for every pending poll's packet (marked `*`).
    pub waits_at_teardown: std::collections::BTreeSet<System>,
    /// Native run (Linux, epoll): system calls where Wine's runs count wineserver requests, and
    /// the native targets.
    pub native: bool,
    /// The async stacks (their echo rows and the HTTP workload: `async_report.rs`).
    pub async_systems: Vec<System>,
    /// Connection counts of the HTTP runs (empty: no HTTP workload).
    pub http_sizes: Vec<usize>,
    /// Per-kind wineserver requests (natively: system calls, counted with perf where it can)
    /// per HTTP request: size → system → kind → count.
    pub http_kinds: BTreeMap<usize, BTreeMap<System, BTreeMap<String, f64>>>,
    /// Natively, with perf: the same counted under strace.
    pub http_kinds_strace: BTreeMap<usize, BTreeMap<System, BTreeMap<String, f64>>>,
}

/// How a target or a comparison came out, judged round by round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every round meets it.
    Met,
    /// No round meets it.
    Missed,
    /// Some rounds do and some do not: the runs cannot separate the two sides.
    Unclear,
}

impl Verdict {
    /// The verdict over per-round values: `meets(v)` for each.
    pub fn of(values: &[f64], meets: impl Fn(f64) -> bool) -> Verdict {
        let n = values.iter().filter(|v| meets(**v)).count();
        match n {
            _ if values.is_empty() => Verdict::Unclear,
            0 => Verdict::Missed,
            _ if n == values.len() => Verdict::Met,
            _ => Verdict::Unclear,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::Unclear => "unclear: the rounds disagree",
        }
    }
}

/// True when per-round ratios `lo..=hi` cannot tell two systems apart (they straddle 1).
pub fn is_tie(lo: f64, hi: f64) -> bool {
    lo <= 1.0 && hi >= 1.0
}

/// Median, min and max.
pub fn spread(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let med = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((med, s[0], s[n - 1]))
}

/// A number with sensible precision.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

impl Results {
    pub fn push(&mut self, metric: &str, system: System, v: f64) {
        self.values
            .entry(metric.to_string())
            .or_default()
            .entry(system)
            .or_default()
            .push(v);
    }

    pub fn median(&self, metric: &str, system: System) -> Option<f64> {
        spread(self.values.get(metric)?.get(&system)?).map(|s| s.0)
    }

    /// Per-round ratios `peer / afd` (rounds where both have a value).
    pub fn ratios(&self, metric: &str, peer: System) -> Vec<f64> {
        self.ratios_to(metric, System::Afd, peer)
    }

    /// Per-round ratios `peer / base` (rounds where both have a value; none if a run left a
    /// round out, as an HTTP run that answered nothing leaves out its latencies).
    pub fn ratios_to(&self, metric: &str, base: System, peer: System) -> Vec<f64> {
        let Some(m) = self.values.get(metric) else {
            return vec![];
        };
        match (m.get(&base), m.get(&peer)) {
            (Some(a), Some(p)) if a.len() != p.len() => vec![],
            (Some(a), Some(p)) => a
                .iter()
                .zip(p)
                .filter(|(a, _)| **a != 0.0)
                .map(|(a, p)| p / a)
                .collect(),
            _ => vec![],
        }
    }

    /// The rows that have values for some of [`systems`](Self::systems), with `{n}` expanded.
    pub fn rows(&self) -> Vec<Row> {
        let mut out = Vec::new();
        for m in METRICS {
            let ns: Vec<String> = if m.key.contains("{n}") {
                self.sizes.iter().map(|n| n.to_string()).collect()
            } else {
                vec![String::new()]
            };
            for n in ns {
                let key = m.key.replace("{n}", &n);
                if self
                    .values
                    .get(&key)
                    .is_some_and(|by| self.systems.iter().any(|s| by.contains_key(s)))
                {
                    out.push(Row {
                        key,
                        label: m.label.replace("{n}", &n),
                        better: m.better,
                        timed: m.timed,
                        chart: m.chart,
                    });
                }
            }
        }
        out
    }

    /// The native targets (issue 13): echoes/s ≥ polling and ≥ 0.95× mio, syscalls per echo ≤
    /// polling's, ≤ 128 heap bytes per registration, churn and teardown at least as good as both
    /// peers, no system call while idle. Each judged round by round, as the others.
    fn native_targets(&self) -> Vec<(String, String, Verdict)> {
        let mut out = Vec::new();
        // Per round: afd / peer (the stored ratios are peer / afd).
        let afd_over = |k: &str, p: System| -> Vec<f64> {
            self.ratios(k, p).iter().map(|r| 1.0 / r).collect()
        };
        for size in &self.sizes {
            let k = format!("echo_{size}");
            for (peer, factor) in [(System::Polling, 1.0), (System::Mio, 0.95)] {
                if let (Some(a), Some(v)) = (self.median(&k, System::Afd), self.median(&k, peer)) {
                    out.push((
                        format!("echoes/s ≥ {factor}× {peer} ({size} conns)"),
                        format!("afd {} vs {peer} {} = {:.3}×", num(a), num(v), a / v),
                        Verdict::of(&afd_over(&k, peer), |x| x >= factor),
                    ));
                }
            }
            let k = format!("requests_per_echo_{size}");
            if let (Some(a), Some(p)) = (
                self.median(&k, System::Afd),
                self.median(&k, System::Polling),
            ) {
                out.push((
                    format!("syscalls/echo ≤ polling's ({size} conns)"),
                    format!("afd {} vs polling {}", num(a), num(p)),
                    Verdict::of(&[a / p], |x| x <= 1.0),
                ));
            }
        }
        if let Some(h) = self.median("heap_bytes_per_socket", System::Afd) {
            out.push((
                "≤ 128 heap bytes per registered socket".into(),
                format!("{} B", num(h)),
                Verdict::of(&[h], |x| x <= 128.0),
            ));
        }
        for peer in [System::Mio, System::Polling] {
            let k = "churn_ops_per_sec";
            if let (Some(a), Some(v)) = (self.median(k, System::Afd), self.median(k, peer)) {
                out.push((
                    format!("churn ≥ {peer}"),
                    format!("afd {} vs {peer} {} ops/s = {:.2}×", num(a), num(v), a / v),
                    Verdict::of(&afd_over(k, peer), |x| x >= 1.0),
                ));
            }
            // Teardown: lower is better, so afd's time over the peer's must be ≤ 1.
            let k = "teardown_ms";
            if let (Some(a), Some(v)) = (self.median(k, System::Afd), self.median(k, peer)) {
                out.push((
                    format!("teardown ≤ {peer}'s time (afd waits for the kernel, {peer} does not)"),
                    format!("afd {} vs {peer} {} ms = {:.2}×", num(a), num(v), a / v),
                    Verdict::of(&afd_over(k, peer), |x| x <= 1.0),
                ));
            }
        }
        if let Some(i) = self.median("idle_requests_per_sec", System::Afd) {
            out.push((
                "0 syscalls/s when idle".into(),
                format!("{i:.2} syscalls/s"),
                Verdict::of(&[i], |x| x.abs() < 0.5),
            ));
        }
        out
    }

    /// A row's label: natively, system calls where Wine's runs count wineserver requests.
    pub(super) fn label(&self, m: &Row) -> String {
        self.native_words(&m.label)
    }

    /// `text` with the native words where the run is native.
    pub(super) fn native_words(&self, text: &str) -> String {
        if self.native {
            text.replace("wineserver req", "syscalls")
                .replace("reactor NT calls", "reactor kernel calls")
                .replace("storm: packets", "storm: wake writes")
        } else {
            text.to_string()
        }
    }

    /// The table, as printed (empty when no raw system ran).
    pub fn table(&self) -> String {
        if self.rows().is_empty() {
            return String::new();
        }
        let mut t = String::new();
        let w = 24;
        let _ = write!(t, "{:<31}", "");
        for s in &self.systems {
            let _ = write!(t, "{:>w$}", s.name());
        }
        t.push('\n');
        for m in self.rows() {
            let by = &self.values[&m.key];
            let arrow = if m.better == Better::Higher {
                "↑"
            } else {
                "↓"
            };
            let _ = write!(t, "{:<30}{arrow}", self.label(&m));
            for s in &self.systems {
                let star = if m.key == "teardown_ms" && self.waits_at_teardown.contains(s) {
                    "*"
                } else {
                    ""
                };
                let cell = match by.get(s).and_then(|v| spread(v)) {
                    Some((med, lo, hi)) if by[s].len() > 1 => {
                        format!("{star}{} [{}–{}]", num(med), num(lo), num(hi))
                    }
                    Some((med, _, _)) => format!("{star}{}", num(med)),
                    None => "n/a".into(),
                };
                let _ = write!(t, "{cell:>w$}");
            }
            t.push('\n');
            if m.timed && by.contains_key(&System::Afd) {
                let _ = write!(t, "{:<31}", "   ratio to afd, per round");
                for s in &self.systems {
                    let cell = if *s == System::Afd {
                        "1".to_string()
                    } else {
                        match spread(&self.ratios(&m.key, *s)) {
                            Some((_, lo, hi)) if is_tie(lo, hi) => {
                                format!("tie [{:.2}–{:.2}]", lo, hi)
                            }
                            Some((med, lo, hi)) => {
                                format!("{:.2} [{:.2}–{:.2}]", med, lo, hi)
                            }
                            None => "n/a".into(),
                        }
                    };
                    let _ = write!(t, "{cell:>w$}");
                }
                t.push('\n');
            }
        }
        if !self.waits_at_teardown.is_empty() {
            t += "\n* waits for every pending poll's packet before it returns; the others do not \
                  (mio collects what is queued and leaves the rest to reference counts, polling \
                  leaves pending packets to reference counts, wepoll frees its states at once). \
                  \"nobody waits\" times afd's abandon (the pending polls' memory leaked on \
                  purpose) beside the others' own teardown: like for like.\n";
        }
        t += "ratio to afd: the peer's value over afd's, per round, as median [min–max]; \
              \"tie\" where the rounds' ratios straddle 1 (the runs cannot separate the two).\n";
        t
    }

    /// The targets of issue 4: (statement, figure, verdict). Timed targets are judged round by
    /// round; counted ones (one value) by that value.
    pub fn targets(&self) -> Vec<(String, String, Verdict)> {
        let mut out = if self.native {
            self.native_targets()
        } else {
            self.wine_targets()
        };
        out.extend(self.async_targets());
        out
    }

    /// The targets of issue 4, under Wine.
    fn wine_targets(&self) -> Vec<(String, String, Verdict)> {
        let peers = [System::Mio, System::Polling, System::Wepoll];
        let mut out = Vec::new();
        let best = |metric: &str, better: Better| -> Option<(System, f64)> {
            peers
                .iter()
                .filter_map(|p| Some((*p, self.median(metric, *p)?)))
                .reduce(|a, b| match better {
                    Better::Higher if b.1 > a.1 => b,
                    Better::Lower if b.1 < a.1 => b,
                    _ => a,
                })
        };
        for size in &self.sizes {
            let k = format!("requests_per_echo_{size}");
            if let (Some(a), Some((p, v))) = (self.median(&k, System::Afd), best(&k, Better::Lower))
            {
                out.push((
                    format!("wineserver requests/echo ≤ lowest peer's ({size} conns)"),
                    format!("afd {} vs {p} {}", num(a), num(v)),
                    Verdict::of(&[a / v], |x| x <= 1.0),
                ));
            }
            let k = format!("echo_{size}");
            if let (Some(a), Some((p, v))) =
                (self.median(&k, System::Afd), best(&k, Better::Higher))
            {
                // Per round: afd / peer = 1 / (peer / afd).
                let rounds: Vec<f64> = self.ratios(&k, p).iter().map(|r| 1.0 / r).collect();
                out.push((
                    format!("echoes/s ≥ 1.2× best peer ({size} conns)"),
                    format!("afd {} vs {p} {} = {:.2}×", num(a), num(v), a / v),
                    Verdict::of(&rounds, |x| x >= 1.2),
                ));
            }
        }
        if let (Some(a), Some(m)) = (
            self.median("churn_ops_per_sec", System::Afd),
            self.median("churn_ops_per_sec", System::Mio),
        ) {
            let rounds: Vec<f64> = self
                .ratios("churn_ops_per_sec", System::Mio)
                .iter()
                .map(|r| 1.0 / r)
                .collect();
            out.push((
                "churn ≥ 2× mio".into(),
                format!("afd {} vs mio {} ops/s = {:.2}×", num(a), num(m), a / m),
                Verdict::of(&rounds, |x| x >= 2.0),
            ));
        }
        if let Some(h) = self.median("heap_bytes_per_socket", System::Afd) {
            out.push((
                "≤ 128 heap bytes per registered socket".into(),
                format!("{} B", num(h)),
                Verdict::of(&[h], |x| x <= 128.0),
            ));
        }
        if let Some(t) = self.median("teardown_ms", System::Afd) {
            let rounds = self
                .values
                .get("teardown_ms")
                .and_then(|m| m.get(&System::Afd))
                .cloned()
                .unwrap_or_default();
            out.push((
                "teardown of 10,000 pending polls ≤ 1 s (at the run's socket count)".into(),
                format!("{} ms", num(t)),
                Verdict::of(&rounds, |x| x <= 1000.0),
            ));
        }
        if let Some(i) = self.median("idle_requests_per_sec", System::Afd) {
            out.push((
                "0 wineserver requests/s when idle".into(),
                format!("{:.2} req/s", i),
                Verdict::of(&[i], |x| x.abs() < 0.5),
            ));
        }
        if let Some(p) = self.median("storm_packets", System::Afd) {
            out.push((
                "≤ 1 wake packet queued during the storm".into(),
                format!("{p:.0} packets for 40,000 wakes"),
                Verdict::of(&[p], |x| x <= 1.0),
            ));
        }
        out
    }

    pub fn json(&self) -> String {
        let mut j = String::from("{\n  \"config\": {");
        let cfg: Vec<String> = self
            .config
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{v}\""))
            .collect();
        j += &cfg.join(", ");
        let _ = write!(
            j,
            "}},\n  \"wall_secs\": {:.1},\n  \"metrics\": {{\n",
            self.wall_secs
        );
        let mut ms = Vec::new();
        for (metric, by) in &self.values {
            let mut ss = Vec::new();
            for (s, v) in by {
                let vals: Vec<String> = v.iter().map(|x| format!("{x:.4}")).collect();
                let (med, lo, hi) = spread(v).expect("non-empty");
                ss.push(format!(
                    "      \"{s}\": {{\"values\": [{}], \"median\": {med:.4}, \"min\": {lo:.4}, \"max\": {hi:.4}}}",
                    vals.join(", ")
                ));
            }
            ms.push(format!("    \"{metric}\": {{\n{}\n    }}", ss.join(",\n")));
        }
        j += &ms.join(",\n");
        j += "\n  },\n  \"requests_per_echo_by_kind\": {\n";
        let mut ks = Vec::new();
        for (size, by) in &self.kinds {
            let mut ss = Vec::new();
            for (s, kinds) in by {
                ss.push(format!("      \"{s}\": {}", kinds_json(kinds)));
            }
            ks.push(format!("    \"{size}\": {{\n{}\n    }}", ss.join(",\n")));
        }
        j += &ks.join(",\n");
        j += "\n  },\n  \"churn_requests_per_op_by_kind\": {\n";
        let cs: Vec<String> = self
            .churn_kinds
            .iter()
            .map(|(s, kinds)| format!("    \"{s}\": {}", kinds_json(kinds)))
            .collect();
        j += &cs.join(",\n");
        for (name, table) in [
            ("requests_per_http_by_kind", &self.http_kinds),
            ("requests_per_http_by_kind_strace", &self.http_kinds_strace),
        ] {
            let _ = write!(j, "\n  }},\n  \"{name}\": {{\n");
            let mut hs = Vec::new();
            for (size, by) in table {
                let mut ss = Vec::new();
                for (s, kinds) in by {
                    ss.push(format!("      \"{s}\": {}", kinds_json(kinds)));
                }
                hs.push(format!("    \"{size}\": {{\n{}\n    }}", ss.join(",\n")));
            }
            j += &hs.join(",\n");
        }
        j += "\n  },\n  \"targets\": [\n";
        let ts: Vec<String> = self
            .targets()
            .iter()
            .map(|(t, f, v)| {
                format!(
                    "    {{\"target\": \"{t}\", \"figure\": \"{f}\", \"met\": {}, \"verdict\": \"{}\"}}",
                    *v == Verdict::Met,
                    v.word()
                )
            })
            .collect();
        j += &ts.join(",\n");
        j += "\n  ]\n}\n";
        j
    }

    /// Where the run was, for chart titles: "under wine-8.0 (…)" or "natively (Linux …)".
    pub(super) fn place(&self) -> String {
        let wine = self
            .config
            .iter()
            .find(|(k, _)| k == "wine" || k == "kernel")
            .map_or("Wine", |(_, v)| v.as_str());
        if self.native {
            format!("natively ({wine})")
        } else {
            format!("under {wine}")
        }
    }

    /// A chart: one panel per charted metric, a bar per system (median) with a min–max whisker.
    pub fn svg(&self) -> String {
        let peers: Vec<&str> = self
            .systems
            .iter()
            .filter(|s| !matches!(s, System::Afd | System::AfdHelper))
            .map(|s| s.name())
            .collect();
        let title = format!(
            "afd-reactor vs {} {} (median of rounds; whisker: min–max)",
            peers.join(", "),
            self.place()
        );
        let panels: Vec<Panel> = self
            .rows()
            .into_iter()
            .filter(|m| m.chart)
            .map(|m| Panel {
                label: self.label(&m),
                key: m.key,
                better: m.better,
                systems: self.systems.clone(),
            })
            .collect();
        self.chart(&title, &panels)
    }

    /// A chart of `panels`, two a row.
    pub(super) fn chart(&self, title: &str, panels: &[Panel]) -> String {
        let most = panels.iter().map(|p| p.systems.len()).max().unwrap_or(0);
        let (pw, ph, cols) = (460.0, 40.0 + 26.0 * most as f64, 2usize);
        let rows = panels.len().div_ceil(cols);
        let (w, h) = (pw * cols as f64 + 20.0, ph * rows as f64 + 60.0);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{title}</text>\n"
        );
        for (i, p) in panels.iter().enumerate() {
            let (label, systems) = (&p.label, &p.systems);
            let (x0, y0) = (10.0 + pw * (i % cols) as f64, 40.0 + ph * (i / cols) as f64);
            let Some(by) = self.values.get(&p.key) else {
                continue;
            };
            let max = systems
                .iter()
                .filter_map(|s| by.get(s))
                .flatten()
                .fold(0.0f64, |a, b| a.max(*b))
                .max(1e-9);
            let hint = if p.better == Better::Higher {
                "higher is better"
            } else {
                "lower is better"
            };
            let _ = writeln!(
                s,
                "<text x=\"{x0}\" y=\"{}\" font-weight=\"bold\">{label} <tspan font-weight=\"normal\" fill=\"#666\">({hint})</tspan></text>",
                y0 + 16.0,
            );
            let (bx, bw) = (x0 + 80.0, pw - 170.0);
            for (j, sys) in systems.iter().enumerate() {
                let y = y0 + 26.0 + 26.0 * j as f64;
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                    bx - 6.0,
                    y + 13.0,
                    sys.name()
                );
                let Some((med, lo, hi)) = by.get(sys).and_then(|v| spread(v)) else {
                    let _ = writeln!(
                        s,
                        "<text x=\"{bx}\" y=\"{}\" fill=\"#999\">n/a</text>",
                        y + 13.0
                    );
                    continue;
                };
                let color = match sys {
                    System::Afd | System::AfdAsync => "#d9480f",
                    System::AfdHelper => "#f59f00",
                    _ => "#4c6ef5",
                };
                let len = bw * med / max;
                let _ = writeln!(
                    s,
                    "<rect x=\"{bx}\" y=\"{y}\" width=\"{len:.1}\" height=\"18\" fill=\"{color}\"/>"
                );
                if hi > lo {
                    let (a, b) = (bx + bw * lo / max, bx + bw * hi / max);
                    let _ = writeln!(
                        s,
                        "<line x1=\"{a:.1}\" x2=\"{b:.1}\" y1=\"{0}\" y2=\"{0}\" stroke=\"black\"/>",
                        y + 9.0
                    );
                }
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{}\">{}</text>",
                    bx + len.max(bw * hi / max) + 6.0,
                    y + 13.0,
                    num(med)
                );
            }
        }
        s += "</svg>\n";
        s
    }
}

/// `{"kind": count, ...}` for a per-kind tally.
fn kinds_json(kinds: &BTreeMap<String, f64>) -> String {
    let kv: Vec<String> = kinds
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v:.4}"))
        .collect();
    format!("{{{}}}", kv.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_and_ratios() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(&[]), None);
        let mut r = Results {
            systems: System::ALL.to_vec(),
            sizes: vec![1000],
            ..Default::default()
        };
        for (a, m) in [(100.0, 50.0), (200.0, 50.0)] {
            r.push("churn_ops_per_sec", System::Afd, a);
            r.push("churn_ops_per_sec", System::Mio, m);
        }
        assert_eq!(r.ratios("churn_ops_per_sec", System::Mio), vec![0.5, 0.25]);
        let t = r.targets();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].2, Verdict::Met, "2× and 4×: every round ≥ 2×");
        assert!(r.table().contains("0.38 [0.25–0.50]"));
        assert!(r.svg().starts_with("<svg"));
        assert!(r.json().contains("\"met\": true"));
    }

    #[test]
    fn overlapping_rounds_are_a_tie_and_an_unclear_target() {
        let mut r = Results {
            systems: vec![System::Afd, System::Mio],
            sizes: vec![1000],
            ..Default::default()
        };
        // afd 100, 100, 100; mio 90, 110, 40: ratios 0.9, 1.1, 0.4 straddle 1.
        for (a, m) in [(100.0, 90.0), (100.0, 110.0), (100.0, 40.0)] {
            r.push("churn_ops_per_sec", System::Afd, a);
            r.push("churn_ops_per_sec", System::Mio, m);
        }
        assert!(r.table().contains("tie [0.40–1.10]"), "{}", r.table());
        // afd/mio per round: 1.11, 0.91, 2.5: some ≥ 2, some not.
        assert_eq!(r.targets()[0].2, Verdict::Unclear);
        assert_eq!(Verdict::of(&[2.5, 3.0], |x| x >= 2.0), Verdict::Met);
        assert_eq!(Verdict::of(&[1.5, 1.9], |x| x >= 2.0), Verdict::Missed);
        assert!(!is_tie(1.01, 1.2) && is_tie(0.99, 1.2) && is_tie(1.0, 1.0));
    }
}
