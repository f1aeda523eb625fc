//! One-page PNG reports: a key image (a slice rendered on the CPU by
//! [`super::reference`]) and text lines in the embedded bitmap font ([`super::text`]).

use super::text::{ADVANCE, Canvas, LINE_HEIGHT, text_width};

const PAPER: [u8; 4] = [255, 255, 255, 255];
const INK: [u8; 4] = [20, 20, 20, 255];
const MUTED: [u8; 4] = [90, 90, 90, 255];
const MARGIN: usize = 24;
/// Scale of the title and of the body text (font pixels to image pixels).
const TITLE_SCALE: usize = 3;
const BODY_SCALE: usize = 2;

/// A key image: RGBA8, `width` x `height`.
#[derive(Debug, Clone, Copy)]
pub struct KeyImage<'a> {
    pub rgba: &'a [u8],
    pub width: usize,
    pub height: usize,
    /// A line under the image (e.g. "Axial slice 40 / 75, W 1500 / L -600").
    pub caption: &'a str,
}

/// Lays out a report page: `title`, then the key image with its caption, then `lines`
/// (monospaced, so tables stay aligned). The page is as wide as its widest part.
pub fn compose_report(title: &str, key: Option<KeyImage<'_>>, lines: &[String]) -> Canvas {
    let body_w = lines
        .iter()
        .map(|l| text_width(l, BODY_SCALE))
        .max()
        .unwrap_or(0);
    let key_w = key.map_or(0, |k| k.width.max(text_width(k.caption, BODY_SCALE)));
    let width = MARGIN * 2 + body_w.max(key_w).max(text_width(title, TITLE_SCALE));
    let line_h = LINE_HEIGHT * BODY_SCALE;
    let mut height = MARGIN + LINE_HEIGHT * TITLE_SCALE + line_h;
    if let Some(k) = key {
        height += k.height + line_h / 2 + line_h * 2;
    }
    height += lines.len() * line_h + MARGIN;
    let mut page = Canvas::new(width, height, PAPER);
    let mut y = MARGIN;
    page.draw_text(MARGIN, y, title, TITLE_SCALE, INK);
    y += LINE_HEIGHT * TITLE_SCALE + line_h;
    if let Some(k) = key {
        page.blit(MARGIN, y, k.width, k.height, k.rgba);
        y += k.height + line_h / 2;
        page.draw_text(MARGIN, y, k.caption, BODY_SCALE, MUTED);
        y += line_h * 2;
    }
    for line in lines {
        page.draw_text(MARGIN, y, line, BODY_SCALE, INK);
        y += line_h;
    }
    page
}

/// Width in characters that fits a page of `width_px` at the body scale.
pub fn body_columns(width_px: usize) -> usize {
    width_px.saturating_sub(2 * MARGIN) / (ADVANCE * BODY_SCALE)
}

/// `page` with `image` added below it (left-aligned at the margin, the page widened
/// when the image is wider).
pub fn append_below(page: &Canvas, image: &Canvas) -> Canvas {
    let width = page.width.max(image.width + 2 * MARGIN);
    let mut out = Canvas::new(width, page.height + image.height + MARGIN, PAPER);
    out.blit(0, 0, page.width, page.height, &page.rgba);
    out.blit(MARGIN, page.height, image.width, image.height, &image.rgba);
    out
}

/// One line of a [`volume_plot`].
#[derive(Debug, Clone, Copy)]
pub struct PlotSeries<'a> {
    pub name: &'a str,
    pub color: [u8; 4],
    /// One value per time point.
    pub values: &'a [f64],
}

/// The smallest of 1, 2, 2.5, 5 x 10^n at or above `v` (> 0): a round axis maximum.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// A line plot of volumes (mL) over time points: y from 0 to a round maximum with three
/// gridlines, a labelled point per time point, a legend under the axis.
pub fn volume_plot(
    title: &str,
    time_points: &[String],
    series: &[PlotSeries<'_>],
    width: usize,
    height: usize,
) -> Canvas {
    const GRID: [u8; 4] = [215, 215, 215, 255];
    let s = BODY_SCALE;
    let line_h = LINE_HEIGHT * s;
    let mut c = Canvas::new(width, height, PAPER);
    c.draw_text(0, 0, title, s, INK);
    let max = series
        .iter()
        .flat_map(|p| p.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let top_value = nice_ceiling(max);
    let labels: Vec<String> = (0..=4)
        .map(|n| format!("{}", top_value * n as f64 / 4.0))
        .collect();
    let left = labels.iter().map(|l| text_width(l, s)).max().unwrap_or(0) + 10;
    let top = line_h + line_h / 2;
    let legend_rows = series.len().div_ceil(3).max(1);
    let bottom = height.saturating_sub(line_h * (2 + legend_rows) + 6);
    let right = width.saturating_sub(text_width("x", s) * 4);
    if bottom <= top + 10 || right <= left + 10 {
        return c;
    }
    let y_of = |v: f64| {
        let t = (v / top_value).clamp(0.0, 1.0);
        bottom as f64 - t * (bottom - top) as f64
    };
    let n = time_points.len().max(1);
    let x_of = |i: usize| {
        if n == 1 {
            (left + right) as f64 / 2.0
        } else {
            left as f64 + 20.0 + i as f64 * (right - left - 40) as f64 / (n - 1) as f64
        }
    };
    for (k, label) in labels.iter().enumerate() {
        let y = y_of(top_value * k as f64 / 4.0).round() as usize;
        c.fill_rect(left, y, right - left, 1, if k == 0 { INK } else { GRID });
        let w = text_width(label, s);
        c.draw_text(
            left - 6 - w,
            y.saturating_sub(LINE_HEIGHT * s / 2 - s),
            label,
            s,
            MUTED,
        );
    }
    c.fill_rect(left, top, 1, bottom - top, INK);
    for (i, name) in time_points.iter().enumerate() {
        let x = x_of(i).round() as usize;
        c.fill_rect(x, bottom, 1, 5, INK);
        let w = text_width(name, s);
        c.draw_text(x.saturating_sub(w / 2), bottom + 8, name, s, INK);
    }
    for p in series {
        let pts: Vec<(f64, f64)> = p
            .values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| (x_of(i), y_of(*v)))
            .collect();
        for w in pts.windows(2) {
            c.draw_line(w[0], w[1], 2, p.color);
        }
        for &(x, y) in &pts {
            c.fill_rect(
                (x - 3.0).max(0.0) as usize,
                (y - 3.0).max(0.0) as usize,
                7,
                7,
                p.color,
            );
        }
    }
    let mut x = left;
    let mut y = bottom + 8 + line_h + 6;
    for (k, p) in series.iter().enumerate() {
        if k > 0 && k % 3 == 0 {
            x = left;
            y += line_h;
        }
        c.fill_rect(x, y + 2, 14, 10, p.color);
        c.draw_text(x + 20, y, p.name, s, INK);
        x += 20 + text_width(p.name, s) + 24;
    }
    c
}

/// Ground-glass, consolidation and their sum (mL) over time points, 640 x 360.
pub fn lesion_plot(time_points: &[String], ggo_ml: &[f64], consolidation_ml: &[f64]) -> Canvas {
    let all: Vec<f64> = ggo_ml
        .iter()
        .zip(consolidation_ml)
        .map(|(a, b)| a + b)
        .collect();
    volume_plot(
        "Lesion volume over time (mL)",
        time_points,
        &[
            PlotSeries {
                name: "ground-glass",
                color: [230, 150, 20, 255],
                values: ggo_ml,
            },
            PlotSeries {
                name: "consolidation",
                color: [210, 30, 30, 255],
                values: consolidation_ml,
            },
            PlotSeries {
                name: "all lesions",
                color: [60, 60, 60, 255],
                values: &all,
            },
        ],
        640,
        360,
    )
}

/// The canvas as PNG bytes.
pub fn encode_png(canvas: &Canvas) -> Result<Vec<u8>, image::ImageError> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(
        &mut out,
        &canvas.rgba,
        canvas.width as u32,
        canvas.height as u32,
        image::ExtendedColorType::Rgba8,
        image::ImageFormat::Png,
    )?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_plot_draws_each_series_where_its_values_are() {
        assert_eq!(nice_ceiling(37.0), 50.0);
        assert_eq!(nice_ceiling(0.21), 0.25);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        let names = ["t0".to_string(), "t1".to_string(), "t2".to_string()];
        let red = [220, 30, 30, 255];
        let blue = [30, 60, 220, 255];
        let plot = volume_plot(
            "Lesion volume (mL)",
            &names,
            &[
                PlotSeries {
                    name: "GGO",
                    color: red,
                    values: &[10.0, 40.0, 20.0],
                },
                PlotSeries {
                    name: "consolidation",
                    color: blue,
                    values: &[0.0, 5.0, 30.0],
                },
            ],
            480,
            300,
        );
        // The highest red pixel (40 mL, the axis maximum 50) sits above the highest blue
        // one (30 mL), and red is drawn left of and right of the middle.
        let rows_of = |color: [u8; 4]| {
            let mut ys = Vec::new();
            for y in 0..plot.height {
                for x in 0..plot.width {
                    if plot.pixel(x, y) == color {
                        ys.push((x, y));
                    }
                }
            }
            ys
        };
        let (r, b) = (rows_of(red), rows_of(blue));
        assert!(r.len() > 50 && b.len() > 50);
        let top = |v: &[(usize, usize)]| v.iter().map(|p| p.1).min().unwrap();
        assert!(top(&r) < top(&b), "40 mL above 30 mL");
        assert!(r.iter().any(|p| p.0 < 150) && r.iter().any(|p| p.0 > 330));
        // Degenerate sizes give an empty plot, not a panic.
        let tiny = volume_plot("x", &names, &[], 20, 20);
        assert_eq!((tiny.width, tiny.height), (20, 20));
        let page = compose_report("R", None, &["a".to_string()]);
        let both = append_below(&page, &plot);
        assert!(both.width >= plot.width && both.height > page.height + plot.height);
    }

    #[test]
    fn page_holds_title_key_image_and_lines() {
        let key: Vec<u8> = [200u8, 0, 0, 255].repeat(40 * 30);
        let lines = vec!["Dice 0.912".to_string(), "left lung 1234.5 mL".to_string()];
        let page = compose_report(
            "Report",
            Some(KeyImage {
                rgba: &key,
                width: 40,
                height: 30,
                caption: "Axial 1/2",
            }),
            &lines,
        );
        assert!(page.width >= 2 * MARGIN + text_width(&lines[1], BODY_SCALE));
        // The key image sits under the title.
        let ky = MARGIN + LINE_HEIGHT * TITLE_SCALE + LINE_HEIGHT * BODY_SCALE;
        assert_eq!(page.pixel(MARGIN + 5, ky + 5), [200, 0, 0, 255]);
        assert_eq!(page.pixel(MARGIN + 45, ky + 5), PAPER);
        // Ink in the title and in each text line; paper in the margins.
        let row_has_ink = |y: usize, h: usize| {
            (y..y + h).any(|yy| (0..page.width).any(|x| page.pixel(x, yy) == INK))
        };
        assert!(row_has_ink(MARGIN, LINE_HEIGHT * TITLE_SCALE));
        let body = ky + 30 + LINE_HEIGHT * BODY_SCALE / 2 + 2 * LINE_HEIGHT * BODY_SCALE;
        for n in 0..2 {
            assert!(
                row_has_ink(body + n * LINE_HEIGHT * BODY_SCALE, 14),
                "line {n}"
            );
        }
        assert!(!row_has_ink(page.height - MARGIN, MARGIN));
        assert!((0..page.height).all(|y| page.pixel(2, y) == PAPER));
        let png = encode_png(&page).expect("encode");
        assert_eq!(&png[1..4], b"PNG");
        let back = image::load_from_memory(&png).expect("decode").to_rgba8();
        assert_eq!(back.as_raw(), &page.rgba);
    }
}
