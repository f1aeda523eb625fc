//! A tiny embedded 5x7 bitmap font for writing text into RGBA pixel buffers (PNG
//! reports), without a font file or a text engine.
//!
//! Covers printable ASCII: digits, upper- and lower-case letters, space and the usual
//! punctuation. Dashes and minus signs outside ASCII draw as `-`; any other character
//! draws as a hollow box. Each glyph is 5 x 7 pixels; characters advance by
//! [`ADVANCE`] pixels and lines by [`LINE_HEIGHT`] (times the integer scale).

/// Glyph width and height in font pixels.
pub const GLYPH_W: usize = 5;
pub const GLYPH_H: usize = 7;
/// Horizontal advance per character, in font pixels (one blank column).
pub const ADVANCE: usize = 6;
/// Line height in font pixels (room for descenders and one blank row).
pub const LINE_HEIGHT: usize = 10;
/// Rows that letters with descenders ([`descends`]) are drawn lower by: their glyph's
/// first five rows sit on the x-height, the last two below the baseline.
pub const DESCENT: usize = 2;

/// The glyph drawn for characters the font does not have.
const MISSING: [u8; 7] = [
    0b11111, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11111,
];

/// Whether `c` is drawn [`DESCENT`] rows lower (g, p, q, y).
pub fn descends(c: char) -> bool {
    matches!(c, 'g' | 'p' | 'q' | 'y')
}

/// Rows of `c`'s glyph, top first; bit 4 is the leftmost pixel.
pub fn glyph(c: char) -> [u8; 7] {
    let c = match c {
        '\u{2010}'..='\u{2015}' | '\u{2212}' => '-',
        c => c,
    };
    match c {
        ' ' => [0; 7],
        '0' => [
            0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110,
        ],
        '1' => [
            0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        '2' => [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
        '3' => [
            0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110,
        ],
        '4' => [
            0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010,
        ],
        '5' => [
            0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110,
        ],
        '6' => [
            0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110,
        ],
        '7' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000,
        ],
        '8' => [
            0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110,
        ],
        '9' => [
            0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100,
        ],
        'A' => [
            0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'B' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110,
        ],
        'C' => [
            0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        'D' => [
            0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100,
        ],
        'E' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111,
        ],
        'F' => [
            0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'G' => [
            0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111,
        ],
        'H' => [
            0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001,
        ],
        'I' => [
            0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'J' => [
            0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
        'K' => [
            0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001,
        ],
        'L' => [
            0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111,
        ],
        'M' => [
            0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001,
        ],
        'N' => [
            0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001,
        ],
        'O' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'P' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000,
        ],
        'Q' => [
            0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101,
        ],
        'R' => [
            0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001,
        ],
        'S' => [
            0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110,
        ],
        'T' => [
            0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100,
        ],
        'U' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'V' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
        ],
        'W' => [
            0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010,
        ],
        'X' => [
            0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001,
        ],
        'Y' => [
            0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100,
        ],
        'Z' => [
            0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111,
        ],
        'a' => [
            0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111,
        ],
        'b' => [
            0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110,
        ],
        'c' => [
            0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110,
        ],
        'd' => [
            0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111,
        ],
        'e' => [
            0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110,
        ],
        'f' => [
            0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000,
        ],
        'g' => [
            0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110,
        ],
        'h' => [
            0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001,
        ],
        'i' => [
            0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'j' => [
            0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100,
        ],
        'k' => [
            0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010,
        ],
        'l' => [
            0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110,
        ],
        'm' => [
            0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001,
        ],
        'n' => [
            0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001,
        ],
        'o' => [
            0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110,
        ],
        'p' => [
            0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000,
        ],
        'q' => [
            0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001,
        ],
        'r' => [
            0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000,
        ],
        's' => [
            0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110,
        ],
        't' => [
            0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110,
        ],
        'u' => [
            0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101,
        ],
        'v' => [
            0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100,
        ],
        'w' => [
            0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010,
        ],
        'x' => [
            0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001,
        ],
        'y' => [
            0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110,
        ],
        'z' => [
            0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111,
        ],
        '.' => [
            0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100,
        ],
        ',' => [
            0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000,
        ],
        ':' => [
            0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000,
        ],
        ';' => [
            0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b00100, 0b01000,
        ],
        '%' => [
            0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011,
        ],
        '-' => [
            0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000,
        ],
        '+' => [
            0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000,
        ],
        '(' => [
            0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010,
        ],
        ')' => [
            0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000,
        ],
        '/' => [
            0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000,
        ],
        '\\' => [
            0b00000, 0b10000, 0b01000, 0b00100, 0b00010, 0b00001, 0b00000,
        ],
        '<' => [
            0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010,
        ],
        '>' => [
            0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000,
        ],
        '=' => [
            0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000,
        ],
        '#' => [
            0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010,
        ],
        '_' => [
            0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111,
        ],
        '[' => [
            0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110,
        ],
        ']' => [
            0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110,
        ],
        '{' => [
            0b00010, 0b00100, 0b00100, 0b01000, 0b00100, 0b00100, 0b00010,
        ],
        '}' => [
            0b01000, 0b00100, 0b00100, 0b00010, 0b00100, 0b00100, 0b01000,
        ],
        '!' => [
            0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100,
        ],
        '?' => [
            0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100,
        ],
        '\'' => [
            0b01100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000,
        ],
        '`' => [
            0b01000, 0b00100, 0b00010, 0b00000, 0b00000, 0b00000, 0b00000,
        ],
        '"' => [
            0b01010, 0b01010, 0b01010, 0b00000, 0b00000, 0b00000, 0b00000,
        ],
        '*' => [
            0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000,
        ],
        '|' => [0b00100; 7],
        '&' => [
            0b01100, 0b10010, 0b10100, 0b01000, 0b10101, 0b10010, 0b01101,
        ],
        '^' => [
            0b00100, 0b01010, 0b10001, 0b00000, 0b00000, 0b00000, 0b00000,
        ],
        '~' => [
            0b00000, 0b00000, 0b01000, 0b10101, 0b00010, 0b00000, 0b00000,
        ],
        '@' => [
            0b01110, 0b10001, 0b00001, 0b01101, 0b10101, 0b10101, 0b01110,
        ],
        '$' => [
            0b00100, 0b01111, 0b10100, 0b01110, 0b00101, 0b11110, 0b00100,
        ],
        _ => MISSING,
    }
}

/// Width in pixels of the longest line of `text` at `scale` (no trailing blank column).
pub fn text_width(text: &str, scale: usize) -> usize {
    text.lines()
        .map(|l| l.chars().count())
        .max()
        .map_or(0, |n| if n == 0 { 0 } else { (n * ADVANCE - 1) * scale })
}

/// Height in pixels of `lines` lines at `scale`.
pub fn text_height(lines: usize, scale: usize) -> usize {
    lines * LINE_HEIGHT * scale
}

/// An RGBA8 image (rows top first, 4 bytes per pixel).
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `color`.
    pub fn new(width: usize, height: usize, color: [u8; 4]) -> Self {
        let mut rgba = Vec::with_capacity(width * height * 4);
        for _ in 0..width * height {
            rgba.extend_from_slice(&color);
        }
        Self {
            width,
            height,
            rgba,
        }
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 4] {
        let o = (y * self.width + x) * 4;
        [
            self.rgba[o],
            self.rgba[o + 1],
            self.rgba[o + 2],
            self.rgba[o + 3],
        ]
    }

    /// Fills the rectangle at (x, y) of `w` x `h` (clipped).
    pub fn fill_rect(&mut self, x: usize, y: usize, w: usize, h: usize, color: [u8; 4]) {
        for yy in y..(y + h).min(self.height) {
            for xx in x..(x + w).min(self.width) {
                let o = (yy * self.width + xx) * 4;
                self.rgba[o..o + 4].copy_from_slice(&color);
            }
        }
    }

    /// Copies an RGBA8 image of `w` x `h` with its top-left corner at (x, y) (clipped).
    pub fn blit(&mut self, x: usize, y: usize, w: usize, h: usize, rgba: &[u8]) {
        for row in 0..h.min(self.height.saturating_sub(y)) {
            let n = w.min(self.width.saturating_sub(x));
            let src = row * w * 4;
            let dst = ((y + row) * self.width + x) * 4;
            self.rgba[dst..dst + n * 4].copy_from_slice(&rgba[src..src + n * 4]);
        }
    }

    /// Draws a line from `a` to `b` (pixel coordinates) `thickness` pixels wide
    /// (clipped).
    pub fn draw_line(&mut self, a: (f64, f64), b: (f64, f64), thickness: usize, color: [u8; 4]) {
        let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
        let half = thickness as f64 / 2.0;
        for n in 0..=steps {
            let t = n as f64 / steps as f64;
            let x = a.0 + (b.0 - a.0) * t - half;
            let y = a.1 + (b.1 - a.1) * t - half;
            if x >= 0.0 && y >= 0.0 {
                self.fill_rect(
                    x.round() as usize,
                    y.round() as usize,
                    thickness.max(1),
                    thickness.max(1),
                    color,
                );
            }
        }
    }

    /// Draws `text` (lines split at '\n') with its top-left corner at (x, y), each font
    /// pixel a `scale` x `scale` square; clipped to the canvas.
    pub fn draw_text(&mut self, x: usize, y: usize, text: &str, scale: usize, color: [u8; 4]) {
        let scale = scale.max(1);
        for (line_no, line) in text.lines().enumerate() {
            let top = y + line_no * LINE_HEIGHT * scale;
            for (n, c) in line.chars().enumerate() {
                let left = x + n * ADVANCE * scale;
                if left >= self.width {
                    break;
                }
                let top = top + if descends(c) { DESCENT * scale } else { 0 };
                for (r, bits) in glyph(c).iter().enumerate() {
                    for col in 0..GLYPH_W {
                        if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                            self.fill_rect(
                                left + col * scale,
                                top + r * scale,
                                scale,
                                scale,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITE: [u8; 4] = [255, 255, 255, 255];
    const BLACK: [u8; 4] = [0, 0, 0, 255];

    /// Ink pixels in the rectangle at (x, y) of `w` x `h`.
    fn ink(c: &Canvas, x: usize, y: usize, w: usize, h: usize) -> usize {
        let mut n = 0;
        for yy in y..y + h {
            for xx in x..x + w {
                n += (c.pixel(xx, yy) == BLACK) as usize;
            }
        }
        n
    }

    #[test]
    fn every_required_character_has_a_glyph() {
        let required = ('0'..='9')
            .chain('A'..='Z')
            .chain('a'..='z')
            .chain(".,:%-+()/<>=#_".chars());
        for c in required {
            assert_ne!(glyph(c), MISSING, "{c:?}");
            assert!(glyph(c).iter().any(|&r| r != 0), "{c:?} is blank");
            assert!(glyph(c).iter().all(|&r| r < 32), "{c:?} is wider than 5");
        }
        assert_eq!(glyph(' '), [0; 7]);
        assert_eq!(glyph('\u{2013}'), glyph('-'));
        assert_eq!(glyph('\u{00e9}'), MISSING);
        assert!(descends('g') && !descends('P'));
        // Glyphs are distinct (no copy-paste slips among the required ones).
        let all: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
        for (n, a) in all.iter().enumerate() {
            for b in &all[n + 1..] {
                assert_ne!(glyph(*a), glyph(*b), "{a:?} and {b:?} look the same");
            }
        }
    }

    #[test]
    fn rendered_text_has_ink_where_expected() {
        let mut c = Canvas::new(100, 40, WHITE);
        c.draw_text(10, 5, "1-1\n.", 2, BLACK);
        // '1' at x 10..20, y 5..19: its stem is column 2 of the glyph, rows 0..7.
        assert_eq!(c.pixel(10 + 2 * 2, 5 + 3 * 2), BLACK);
        assert_eq!(c.pixel(10 + 2 * 2 + 1, 5 + 6 * 2 + 1), BLACK);
        // '-' (second character) is ink only on its middle row.
        let dash_x = 10 + ADVANCE * 2;
        assert_eq!(ink(&c, dash_x, 5 + 3 * 2, 10, 2), 20);
        assert_eq!(ink(&c, dash_x, 5, 10, 6), 0);
        assert_eq!(ink(&c, dash_x, 5 + 4 * 2, 10, 6), 0);
        // The gap between characters stays blank.
        assert_eq!(ink(&c, 10 + 5 * 2, 5, 2, 14), 0);
        // '.' on the second line: bottom two rows, columns 1..3.
        let y2 = 5 + LINE_HEIGHT * 2;
        assert_eq!(ink(&c, 10 + 2, y2 + 5 * 2, 4, 4), 16);
        assert_eq!(ink(&c, 10, y2, 10, 10), 0);
        // Nothing outside the text's box.
        let (w, h) = (text_width("1-1\n.", 2), text_height(2, 2));
        assert_eq!(w, (3 * ADVANCE - 1) * 2);
        let total = ink(&c, 0, 0, 100, 40);
        assert_eq!(total, ink(&c, 10, 5, w, h.min(35)));
        assert!(total > 0);
    }

    #[test]
    fn descenders_hang_below_the_baseline() {
        let mut c = Canvas::new(20, 12, WHITE);
        c.draw_text(0, 0, "pP", 1, BLACK);
        // 'p': nothing above the x-height (rows 0, 1), its stem at rows 7 and 8.
        assert_eq!(ink(&c, 0, 0, 5, 2), 0);
        assert_eq!(c.pixel(0, 7), BLACK);
        assert_eq!(c.pixel(0, 8), BLACK);
        // 'P' stands on the baseline (row 6) from row 0.
        assert_eq!(c.pixel(ADVANCE, 0), BLACK);
        assert_eq!(ink(&c, ADVANCE, 7, 5, 5), 0);
    }

    #[test]
    fn text_is_clipped_at_the_edges() {
        let mut c = Canvas::new(8, 8, WHITE);
        c.draw_text(4, 4, "WWWW\nWWWW", 3, BLACK);
        assert!(ink(&c, 0, 0, 8, 8) > 0);
        assert_eq!(ink(&c, 0, 0, 4, 8), 0);
        let mut c = Canvas::new(4, 4, WHITE);
        c.blit(2, 2, 3, 3, &[0u8; 36]);
        assert_eq!(c.pixel(3, 3), [0, 0, 0, 0]);
        assert_eq!(c.pixel(1, 1), WHITE);
    }
}
