//! The async stacks' part of the report: the HTTP table and the async echo rows, their targets,
//! and `http_chart.svg`.
//!
//! Ratios here are afd-async's value over the peer's, per round (≥ 1: afd-async ahead on a
//! higher-is-better row), and the async echo's over raw afd-reactor's.

use super::report::{Better, Panel, Results, Verdict, is_tie, num, spread};
use bench::System;
use std::fmt::Write as _;

/// Column width of the async tables.
const W: usize = 22;
/// Label width.
const L: usize = 34;

/// A ratio cell: median [min–max], or a tie where the rounds straddle 1.
fn ratio_cell(r: &[f64]) -> String {
    match spread(r) {
        Some((_, lo, hi)) if r.len() > 1 && is_tie(lo, hi) => format!("tie [{lo:.2}–{hi:.2}]"),
        Some((med, lo, hi)) if r.len() > 1 => format!("{med:.2} [{lo:.2}–{hi:.2}]"),
        Some((med, _, _)) => format!("{med:.2}"),
        None => "n/a".into(),
    }
}

impl Results {
    /// Whether any async stack has a figure.
    pub fn has_async(&self) -> bool {
        self.values
            .values()
            .any(|by| self.async_systems.iter().any(|s| by.contains_key(s)))
    }

    /// One row: label, then a cell per system (median [min–max] across rounds).
    fn async_row(
        &self,
        t: &mut String,
        key: &str,
        label: &str,
        better: Better,
        systems: &[System],
    ) {
        let Some(by) = self.values.get(key) else {
            return;
        };
        let arrow = if better == Better::Higher {
            "↑"
        } else {
            "↓"
        };
        let _ = write!(t, "{:<w$}{arrow}", self.native_words(label), w = L - 1);
        for s in systems {
            let cell = match by.get(s).and_then(|v| spread(v)) {
                Some((med, lo, hi)) if by[s].len() > 1 => {
                    format!("{} [{}–{}]", num(med), num(lo), num(hi))
                }
                Some((med, _, _)) => num(med),
                None => "n/a".into(),
            };
            let _ = write!(t, "{cell:>W$}");
        }
        t.push('\n');
    }

    /// Each round's value, a line per round.
    fn round_rows(&self, t: &mut String, key: &str, systems: &[System]) {
        let Some(by) = self.values.get(key) else {
            return;
        };
        let rounds = systems
            .iter()
            .filter_map(|s| by.get(s).map(Vec::len))
            .max()
            .unwrap_or(0);
        if rounds < 2 {
            return;
        }
        for i in 0..rounds {
            let _ = write!(t, "{:<L$}", format!("   round {}", i + 1));
            for s in systems {
                let cell = by
                    .get(s)
                    .and_then(|v| v.get(i))
                    .map_or("n/a".into(), |v| num(*v));
                let _ = write!(t, "{cell:>W$}");
            }
            t.push('\n');
        }
    }

    /// `base`'s value over each column's, per round (`label`), blank under `base` itself.
    fn ratio_row(&self, t: &mut String, key: &str, label: &str, base: System, systems: &[System]) {
        if !self
            .values
            .get(key)
            .is_some_and(|by| by.contains_key(&base))
        {
            return;
        }
        let _ = write!(t, "{label:<L$}");
        for &s in systems {
            let cell = if s == base {
                "1".to_string()
            } else {
                ratio_cell(&self.ratios_to(key, s, base))
            };
            let _ = write!(t, "{cell:>W$}");
        }
        t.push('\n');
    }

    /// The async stacks' tables: HTTP, and the echo beside raw afd-reactor.
    pub fn async_table(&self) -> String {
        let mut t = String::new();
        if !self.has_async() {
            return t;
        }
        let stacks = &self.async_systems;
        let afd_async = System::AfdAsync;
        if self
            .http_sizes
            .iter()
            .any(|n| self.values.contains_key(&format!("http_rps_{n}")))
        {
            let _ = writeln!(
                t,
                "\nHTTP, http_hello keep-alive, wrk -t2 --latency; each stack on one thread"
            );
            let _ = write!(t, "{:<L$}", "");
            for s in stacks {
                let _ = write!(t, "{:>W$}", s.name());
            }
            t.push('\n');
            for n in &self.http_sizes {
                let k = format!("http_rps_{n}");
                self.async_row(
                    &mut t,
                    &k,
                    &format!("HTTP req/s, {n} conns"),
                    Better::Higher,
                    stacks,
                );
                self.round_rows(&mut t, &k, stacks);
                self.ratio_row(
                    &mut t,
                    &k,
                    "   afd-async ÷ peer, per round",
                    afd_async,
                    stacks,
                );
                let k = format!("http_answered_conns_{n}");
                let label = format!("conns answered (of {n})");
                self.async_row(&mut t, &k, &label, Better::Higher, stacks);
                for p in [50, 75, 90, 99] {
                    let k = format!("http_p{p}_ms_{n}");
                    let label = format!("latency p{p} (ms), {n} conns");
                    self.async_row(&mut t, &k, &label, Better::Lower, stacks);
                    if p == 99 {
                        self.ratio_row(
                            &mut t,
                            &k,
                            "   afd-async ÷ peer (< 1: lower)",
                            afd_async,
                            stacks,
                        );
                    }
                }
                for (what, label) in [("mean", "latency mean"), ("max", "latency max")] {
                    let k = format!("http_{what}_ms_{n}");
                    let label = format!("{label} (ms), {n} conns");
                    self.async_row(&mut t, &k, &label, Better::Lower, stacks);
                }
                let k = format!("http_errors_{n}");
                if self
                    .values
                    .get(&k)
                    .is_some_and(|by| by.values().flatten().any(|v| *v > 0.0))
                {
                    self.async_row(
                        &mut t,
                        &k,
                        &format!("wrk errors, {n} conns"),
                        Better::Lower,
                        stacks,
                    );
                }
                let k = format!("requests_per_http_{n}");
                let ks = format!("strace_requests_per_http_{n}");
                if self.values.contains_key(&ks) {
                    let label = format!("wineserver req/HTTP req (perf), {n}");
                    self.async_row(&mut t, &k, &label, Better::Lower, stacks);
                    let label = format!("wineserver req/HTTP req (strace), {n}");
                    self.async_row(&mut t, &ks, &label, Better::Lower, stacks);
                } else {
                    let label = format!("wineserver req/HTTP req, {n}");
                    self.async_row(&mut t, &k, &label, Better::Lower, stacks);
                }
            }
        }
        // The echo: the async stacks beside raw afd-reactor.
        let mut cols = vec![System::Afd];
        cols.extend(stacks.iter().copied());
        let echo_keys: Vec<usize> = self
            .sizes
            .iter()
            .copied()
            .filter(|n| {
                self.values
                    .get(&format!("echo_{n}"))
                    .is_some_and(|by| stacks.iter().any(|s| by.contains_key(s)))
            })
            .collect();
        if !echo_keys.is_empty() {
            let _ = writeln!(
                t,
                "\nEcho on the async stacks, beside raw afd-reactor (its row in the table above)"
            );
            let _ = write!(t, "{:<L$}", "");
            for s in &cols {
                let name = if *s == System::Afd {
                    "afd (raw)"
                } else {
                    s.name()
                };
                let _ = write!(t, "{name:>W$}");
            }
            t.push('\n');
            for n in echo_keys {
                let k = format!("echo_{n}");
                self.async_row(
                    &mut t,
                    &k,
                    &format!("echoes/s, {n} conns"),
                    Better::Higher,
                    &cols,
                );
                self.round_rows(&mut t, &k, &cols);
                // Each stack's value over raw afd's: ratios_to(k, afd, s) is s / afd.
                if self
                    .values
                    .get(&k)
                    .is_some_and(|by| by.contains_key(&System::Afd))
                {
                    let _ = write!(t, "{:<L$}", "   ÷ raw afd, per round");
                    for &s in &cols {
                        let cell = if s == System::Afd {
                            "1".to_string()
                        } else {
                            ratio_cell(&self.ratios_to(&k, System::Afd, s))
                        };
                        let _ = write!(t, "{cell:>W$}");
                    }
                    t.push('\n');
                }
                self.ratio_row(
                    &mut t,
                    &k,
                    "   afd-async ÷ peer, per round",
                    afd_async,
                    &cols,
                );
                let k = format!("requests_per_echo_{n}");
                let label = format!("wineserver req/echo, {n}");
                self.async_row(&mut t, &k, &label, Better::Lower, &cols);
            }
        }
        t += "afd-async ÷ peer: afd-async's value over the peer's, per round, as median [min–max]; \
              \"tie\" where the rounds' ratios straddle 1.\n";
        if self
            .values
            .keys()
            .any(|k| k.starts_with("http_answered_conns_"))
        {
            t += "conns answered: the measured run's connections that had at least one request \
                  answered (the server counts them); below the connection count, the stack left \
                  the others waiting through the whole run, and their requests are in no latency \
                  figure.\n";
        }
        if self
            .values
            .keys()
            .any(|k| k.starts_with("strace_requests_per_http_"))
        {
            t += "syscalls/HTTP req: perf counts them without slowing the server (the figure); \
                  under strace the server runs so much slower than wrk that every read finds \
                  the next request waiting, which hides the reads that meet WouldBlock.\n";
        }
        t
    }

    /// The async stacks' targets: afd-async's requests/s ≥ every peer's in every round, its
    /// requests per HTTP request ≤ the lowest peer's, its echo ≥ 0.95× raw afd-reactor's.
    pub fn async_targets(&self) -> Vec<(String, String, Verdict)> {
        let mut out = Vec::new();
        let a = System::AfdAsync;
        if !self.async_systems.contains(&a) {
            return out;
        }
        let calls = if self.native {
            "system calls"
        } else {
            "wineserver requests"
        };
        let peers: Vec<System> = self
            .async_systems
            .iter()
            .copied()
            .filter(|s| *s != a)
            .collect();
        for n in &self.http_sizes {
            let k = format!("http_rps_{n}");
            for &p in &peers {
                let r = self.ratios_to(&k, p, a);
                if let (Some(av), Some(pv), Some((_, lo, hi))) =
                    (self.median(&k, a), self.median(&k, p), spread(&r))
                {
                    out.push((
                        format!("HTTP requests/s: afd-async ≥ {p} in every round ({n} conns)"),
                        format!(
                            "afd-async {} vs {p} {} req/s; afd-async ÷ {p} per round {lo:.3}–{hi:.3}",
                            num(av),
                            num(pv)
                        ),
                        Verdict::of(&r, |x| x >= 1.0),
                    ));
                }
            }
            let k = format!("requests_per_http_{n}");
            let lowest = peers
                .iter()
                .filter_map(|p| Some((*p, self.median(&k, *p)?)))
                .reduce(|x, y| if y.1 < x.1 { y } else { x });
            if let (Some(av), Some((p, pv))) = (self.median(&k, a), lowest) {
                out.push((
                    format!("{calls} per HTTP request ≤ lowest peer's ({n} conns)"),
                    format!("afd-async {} vs {p} {}", num(av), num(pv)),
                    Verdict::of(&[av - pv], |x| x <= 0.0),
                ));
            }
        }
        for n in &self.sizes {
            let k = format!("echo_{n}");
            let r = self.ratios_to(&k, System::Afd, a);
            if let (Some(av), Some(rv), Some((_, lo, hi))) =
                (self.median(&k, a), self.median(&k, System::Afd), spread(&r))
            {
                out.push((
                    format!("async echo ≥ 0.95× raw afd ({n} conns)"),
                    format!(
                        "afd-async {} vs afd {} echoes/s = {:.3}×; per round {lo:.3}–{hi:.3}",
                        num(av),
                        num(rv),
                        av / rv
                    ),
                    Verdict::of(&r, |x| x >= 0.95),
                ));
            }
        }
        out
    }

    /// The async stacks' chart: HTTP requests/s, p99 latency and cost per request at each
    /// connection count, and the echo beside raw afd-reactor.
    pub fn http_svg(&self) -> String {
        let stacks = self.async_systems.clone();
        let mut panels = Vec::new();
        let mut panel = |key: String, label: String, better: Better, systems: &[System]| {
            if self.values.contains_key(&key) {
                panels.push(Panel {
                    label: self.native_words(&label),
                    key,
                    better,
                    systems: systems.to_vec(),
                });
            }
        };
        for n in &self.http_sizes {
            panel(
                format!("http_rps_{n}"),
                format!("HTTP req/s, {n} conns"),
                Better::Higher,
                &stacks,
            );
            panel(
                format!("http_p99_ms_{n}"),
                format!("HTTP latency p99 (ms), {n} conns"),
                Better::Lower,
                &stacks,
            );
            panel(
                format!("requests_per_http_{n}"),
                format!("wineserver req/HTTP req, {n} conns"),
                Better::Lower,
                &stacks,
            );
        }
        let mut cols = vec![System::Afd];
        cols.extend(stacks.iter().copied());
        for n in &self.sizes {
            let k = format!("echo_{n}");
            if self
                .values
                .get(&k)
                .is_some_and(|by| stacks.iter().any(|s| by.contains_key(s)))
            {
                panel(k, format!("echoes/s, {n} conns"), Better::Higher, &cols);
            }
        }
        let title = format!(
            "afd-async vs smol and tokio {} (median of rounds; whisker: min–max)",
            self.place()
        );
        self.chart(&title, &panels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_ratios_targets_and_chart() {
        let mut r = Results {
            systems: vec![System::Afd],
            async_systems: System::ASYNC.to_vec(),
            sizes: vec![1000],
            http_sizes: vec![100],
            ..Default::default()
        };
        // afd-async 110, 120; smol 100, 100; tokio 100, 130: ahead of smol in both rounds,
        // not of tokio in the second.
        for (a, s, t) in [(110.0, 100.0, 100.0), (120.0, 100.0, 130.0)] {
            r.push("http_rps_100", System::AfdAsync, a);
            r.push("http_rps_100", System::Smol, s);
            r.push("http_rps_100", System::Tokio, t);
            r.push("echo_1000", System::Afd, 100.0);
            r.push("echo_1000", System::AfdAsync, a - 14.0);
        }
        r.push("requests_per_http_100", System::AfdAsync, 5.0);
        r.push("requests_per_http_100", System::Smol, 6.0);
        r.push("requests_per_http_100", System::Tokio, 5.5);
        let t = r.async_targets();
        let find = |s: &str| t.iter().find(|x| x.0.contains(s)).expect(s).2;
        assert_eq!(find("≥ smol"), Verdict::Met);
        assert_eq!(find("≥ tokio"), Verdict::Unclear);
        assert_eq!(find("per HTTP request"), Verdict::Met);
        // 96/100 and 106/100.
        assert_eq!(find("0.95×"), Verdict::Met);
        let table = r.async_table();
        assert!(table.contains("1.15 [1.10–1.20]"), "{table}");
        assert!(table.contains("tie [0.92–1.10]"), "{table}");
        assert!(table.contains("   round 2"), "{table}");
        assert!(r.http_svg().starts_with("<svg"));
        assert!(r.json().contains("\"requests_per_http_by_kind\""));
        assert!(r.has_async());
    }
}
