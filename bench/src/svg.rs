//! Latency percentile plots, hand-written SVG (no dependency): one file
//! per shape, one panel per op group, one line per engine. x is the
//! percentile on the usual log scale (the distance to 100%: 50, 90, 99,
//! 99.9, 99.99, then the max), y the latency on a log scale.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::error::{BenchError, Result};
use crate::report::Row;

/// The quantiles a curve holds, in order; the max follows them.
pub const QUANTILES: [f64; 9] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];

/// Latency (ns) at each of [`QUANTILES`], then the max; empty without
/// samples.
#[must_use]
pub fn curve(h: &Histogram<u64>) -> Vec<u64> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<u64> = QUANTILES.iter().map(|&q| h.value_at_quantile(q)).collect();
    v.push(h.max());
    v
}

/// x of point `i` of a curve: log10 of 1 / (1 - q); the max sits one
/// decade after the last quantile.
fn x_of(i: usize) -> f64 {
    match QUANTILES.get(i) {
        Some(q) => (1.0 / (1.0 - q)).log10(),
        None => (1.0 / (1.0 - QUANTILES[QUANTILES.len() - 1])).log10() + 1.0,
    }
}

const X_TICKS: [(usize, &str); 6] = [
    (0, "50%"),
    (2, "90%"),
    (4, "99%"),
    (6, "99.9%"),
    (8, "99.99%"),
    (9, "max"),
];

/// A colour per engine; holt stands out.
fn colour(engine: &str, i: usize) -> &'static str {
    const OTHERS: [&str; 8] = [
        "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#ff7f0e", "#17becf", "#bcbd22", "#e377c2",
    ];
    match engine {
        "holt" => "#d62728",
        "reference" => "#7f7f7f",
        _ => OTHERS[i % OTHERS.len()],
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

fn unit(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.0} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.0} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// One panel: an op group, a line per engine.
pub struct Panel<'a> {
    pub title: String,
    /// (engine, curve) pairs; curves hold `QUANTILES.len() + 1` points.
    pub lines: Vec<(&'a str, &'a [u64])>,
}

const COLS: usize = 3;
const PW: f64 = 380.0;
const PH: f64 = 250.0;
const ML: f64 = 58.0;
const MR: f64 = 12.0;
const MT: f64 = 26.0;
const MB: f64 = 34.0;
const HEAD: f64 = 64.0;

/// The whole SVG document: a title, a legend of `engines`, the panels.
#[must_use]
pub fn render(title: &str, engines: &[&str], panels: &[Panel<'_>]) -> String {
    let rows = panels.len().div_ceil(COLS).max(1);
    let w = PW * COLS as f64;
    let h = HEAD + PH * rows as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(s, "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    let mut lx = 10.0;
    for (i, e) in engines.iter().enumerate() {
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"34\" width=\"14\" height=\"4\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"40\">{}</text>",
            colour(e, i),
            lx + 18.0,
            esc(e)
        );
        lx += 30.0 + 7.0 * e.len() as f64;
    }
    for (p, panel) in panels.iter().enumerate() {
        let ox = PW * (p % COLS) as f64;
        let oy = HEAD + PH * (p / COLS) as f64;
        panel_svg(&mut s, panel, engines, ox, oy);
    }
    s.push_str("</svg>\n");
    s
}

fn panel_svg(s: &mut String, panel: &Panel<'_>, engines: &[&str], ox: f64, oy: f64) {
    let (x0, x1) = (ox + ML, ox + PW - MR);
    let (y0, y1) = (oy + PH - MB, oy + MT);
    let vals = panel
        .lines
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .filter(|&v| v > 0);
    let (lo, hi) = vals.fold((u64::MAX, 0), |(a, b), v| (a.min(v), b.max(v)));
    let (mut dlo, mut dhi) = if hi == 0 {
        (1.0, 4.0)
    } else {
        ((lo as f64).log10().floor(), (hi as f64).log10().ceil())
    };
    if dhi <= dlo {
        dlo -= 1.0;
        dhi += 1.0;
    }
    let xmax = x_of(QUANTILES.len());
    let xmin = x_of(0);
    let px = |i: usize| x0 + (x_of(i) - xmin) / (xmax - xmin) * (x1 - x0);
    let py = |ns: u64| {
        let l = (ns.max(1) as f64).log10().clamp(dlo, dhi);
        y0 - (l - dlo) / (dhi - dlo) * (y0 - y1)
    };
    let _ = writeln!(
        s,
        "<g><text x=\"{}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        ox + ML,
        oy + 16.0,
        esc(&panel.title)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{x0}\" y=\"{y1}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>",
        x1 - x0,
        y0 - y1
    );
    let mut d = dlo;
    while d <= dhi + 1e-9 {
        let y = y0 - (d - dlo) / (dhi - dlo) * (y0 - y1);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            x0 - 4.0,
            y + 4.0,
            esc(&unit(10f64.powf(d)))
        );
        d += 1.0;
    }
    for (i, label) in X_TICKS {
        let x = px(i);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{y1}\" x2=\"{x:.1}\" y2=\"{y0}\" stroke=\"#e5e5e5\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y0 + 14.0,
            esc(label)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">percentile</text>",
        (x0 + x1) / 2.0,
        y0 + 28.0
    );
    for (engine, c) in &panel.lines {
        if c.is_empty() {
            continue;
        }
        let idx = engines.iter().position(|e| e == engine).unwrap_or(0);
        let pts: Vec<String> = c
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", px(i), py(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\">\
             <title>{}</title></polyline>",
            colour(engine, idx),
            pts.join(" "),
            esc(engine)
        );
    }
    s.push_str("</g>\n");
}

/// Writes `latency-<shape>.svg` into `dir` for each shape among `rows`
/// (rows without samples are left out). Returns the files written.
///
/// # Errors
/// Creating the directory or a file.
pub fn write_plots(dir: &Path, mode: &str, rows: &[Row], engines: &[&str]) -> Result<Vec<PathBuf>> {
    let mut shapes: Vec<&str> = Vec::new();
    for r in rows {
        if !shapes.contains(&r.shape.as_str()) {
            shapes.push(&r.shape);
        }
    }
    let mut written = Vec::new();
    for shape in shapes {
        let mut panels: Vec<Panel<'_>> = Vec::new();
        for r in rows
            .iter()
            .filter(|r| r.shape == shape && !r.curve.is_empty())
        {
            match panels.iter_mut().find(|p| p.title == r.op) {
                Some(p) => p.lines.push((&r.engine, &r.curve)),
                None => panels.push(Panel {
                    title: r.op.clone(),
                    lines: vec![(&r.engine, &r.curve)],
                }),
            }
        }
        if panels.is_empty() {
            continue;
        }
        let n = rows.iter().find(|r| r.shape == shape).map_or(0, |r| r.n);
        let title = format!(
            "holt-bench latency percentiles: {shape}, n = {}, {mode} mode",
            crate::report::grouped(n as u64)
        );
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::io(format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("latency-{shape}.svg"));
        std::fs::write(&path, render(&title, engines, &panels))
            .map_err(|e| BenchError::io(format!("write {}", path.display()), e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small XML well-formedness check: one root, tags balanced and
    /// properly nested, attributes quoted, `&` only in entities, no `<` in
    /// text.
    fn check_xml(s: &str) -> std::result::Result<usize, String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut elements = 0;
        let mut rest = s;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            check_text(text)?;
            if !stack.is_empty() || text.trim().is_empty() {
            } else {
                return Err(format!("text outside the root: {text:?}"));
            }
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().ok_or(format!("stray </{name}>"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().ok_or("empty tag")?;
            if !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("bad tag name {name:?}"));
            }
            check_attrs(&body[name.len()..])?;
            elements += 1;
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if !rest.trim().is_empty() {
            return Err("text after the root".into());
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} roots"));
        }
        Ok(elements)
    }

    fn check_text(t: &str) -> std::result::Result<(), String> {
        let mut rest = t;
        while let Some(a) = rest.find('&') {
            let semi = rest[a..].find(';').ok_or("bare &")? + a;
            let ent = &rest[a + 1..semi];
            if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
                return Err(format!("unknown entity &{ent};"));
            }
            rest = &rest[semi + 1..];
        }
        Ok(())
    }

    fn check_attrs(a: &str) -> std::result::Result<(), String> {
        let mut rest = a.trim();
        while !rest.is_empty() {
            let eq = rest
                .find('=')
                .ok_or(format!("attribute without value: {rest:?}"))?;
            let name = rest[..eq].trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {name:?}"));
            }
            let after = &rest[eq + 1..];
            let q = after.chars().next().ok_or("missing quote")?;
            if q != '"' {
                return Err(format!("unquoted attribute {name}"));
            }
            let end = after[1..].find('"').ok_or("unterminated attribute")? + 1;
            let val = &after[1..end];
            check_text(val)?;
            if val.contains('<') || val.contains("NaN") || val.contains("inf") {
                return Err(format!("bad attribute value {name}={val:?}"));
            }
            rest = after[end + 1..].trim();
        }
        Ok(())
    }

    #[test]
    fn plot_is_well_formed() {
        let a: Vec<u64> = vec![100, 120, 150, 200, 400, 500, 900, 1500, 9000, 120_000];
        let b: Vec<u64> = a.iter().map(|v| v * 30).collect();
        let flat = vec![50u64; QUANTILES.len() + 1];
        let panels = vec![
            Panel {
                title: "get <1 & 2> \"threads\"".into(),
                lines: vec![("holt", &a[..]), ("rocksdb", &b[..])],
            },
            Panel {
                title: "scan100".into(),
                lines: vec![("holt", &flat[..]), ("sqlite", &[][..])],
            },
            Panel {
                title: "list_dir".into(),
                lines: vec![("reference", &flat[..])],
            },
            Panel {
                title: "empty".into(),
                lines: vec![],
            },
        ];
        let svg = render(
            "t <&>",
            &["holt", "rocksdb", "sqlite", "reference"],
            &panels,
        );
        let elements = check_xml(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(elements > 20);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        // The slower engine's line lies below (larger y) nowhere: at every
        // point it is above the faster one (smaller y).
        let lines: Vec<Vec<f64>> = svg
            .lines()
            .filter(|l| l.starts_with("<polyline"))
            .take(2)
            .map(|l| {
                let pts = l
                    .split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                pts.split(' ')
                    .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(lines[0].len(), QUANTILES.len() + 1);
        assert!(lines[0]
            .iter()
            .zip(&lines[1])
            .all(|(fast, slow)| slow < fast));
        // The checker does catch broken documents.
        assert!(check_xml("<svg><g></svg>").is_err());
        assert!(check_xml("<svg a=1></svg>").is_err());
        assert!(check_xml("<svg>a & b</svg>").is_err());
        assert!(check_xml("<svg/><svg/>").is_err());
    }

    #[test]
    fn curve_has_quantiles_then_max() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        assert!(curve(&h).is_empty());
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let c = curve(&h);
        assert_eq!(c.len(), QUANTILES.len() + 1);
        assert!(c.windows(2).all(|w| w[0] <= w[1]), "{c:?}");
        assert!((4990..=5010).contains(&c[0]));
        assert_eq!(*c.last().unwrap(), h.max());
    }
}
