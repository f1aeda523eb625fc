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
