//! Bar charts as inline SVG, drawn on the server: grouped bars per time slot, one
//! colour per series, an accessible title and a table of the same numbers beside it
//! (a chart alone says nothing to a screen reader).

use maud::{Markup, html};

/// One series: its name, its legend class (`s-…` in the stylesheet), its fill, and one
/// value per slot.
pub(super) struct Series<'a> {
    pub name: &'a str,
    pub class: &'a str,
    pub fill: &'a str,
    pub values: Vec<u64>,
}

const WIDTH: u32 = 640;
const HEIGHT: u32 = 200;
const LEFT: u32 = 40;
const BOTTOM: u32 = 24;
const TOP: u32 = 8;

/// A grouped bar chart of `series` over slots labelled `labels`.
pub(super) fn bars(title: &str, labels: &[String], series: &[Series]) -> Markup {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let slots = labels.len().max(1) as u32;
    let plot_w = WIDTH - LEFT - 8;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot_w = plot_w / slots;
    let n = series.len().max(1) as u32;
    let bar_w = (slot_w.saturating_sub(6) / n).max(1);
    let y = |v: u64| -> u32 { TOP + plot_h - ((v as f64 / max as f64) * f64::from(plot_h)) as u32 };
    html! {
        figure {
            svg class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
                title { (title) }
                line class="axis" x1=(LEFT) y1=(TOP + plot_h) x2=(WIDTH - 8) y2=(TOP + plot_h) stroke="#d0d7de" {}
                line class="axis" x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) stroke="#d0d7de" {}
                text x=(LEFT - 4) y=(TOP + 10) text-anchor="end" { (max) }
                text x=(LEFT - 4) y=(TOP + plot_h) text-anchor="end" { "0" }
                @for (i, label) in labels.iter().enumerate() {
                    @let x0 = LEFT + 3 + slot_w * i as u32;
                    @for (k, s) in series.iter().enumerate() {
                        @let v = s.values.get(i).copied().unwrap_or(0);
                        @if v > 0 {
                            rect x=(x0 + bar_w * k as u32) y=(y(v)) width=(bar_w)
                                height=(TOP + plot_h - y(v)) fill=(s.fill) {
                                title { (s.name) " " (label) ": " (v) }
                            }
                        }
                    }
                    text x=(x0 + slot_w / 2) y=(HEIGHT - 6) text-anchor="middle" { (label) }
                }
            }
            figcaption {
                ul class="legend" {
                    @for s in series {
                        li { span class={ "swatch " (s.class) } {} (s.name) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_draws_one_bar_per_value_above_zero_and_escapes_its_title() {
        let labels = vec!["a".to_owned(), "b".to_owned()];
        let series = [
            Series {
                name: "sent",
                class: "s-sent",
                fill: "#000",
                values: vec![3, 0],
            },
            Series {
                name: "delivered",
                class: "s-delivered",
                fill: "#111",
                values: vec![1, 2],
            },
        ];
        let svg = bars("<t>", &labels, &series).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("&lt;t&gt;"), "{svg}");
        assert!(!svg.contains("style="), "{svg}");
    }
}
