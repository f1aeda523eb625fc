//! ITK-SNAP label description files (the text file ITK-SNAP, and 3D Slicer through its
//! importer, read beside a label map): one line per label,
//! `IDX R G B A VIS MSH "LABEL"`, `#` comments, index 0 the "Clear Label".

use super::{Label, LabelTable};

/// Errors name the line.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("ITK-SNAP label description, line {line}: {message}")]
pub struct LabelFileError {
    pub line: usize,
    pub message: String,
}

impl LabelTable {
    /// The table as an ITK-SNAP label description file.
    pub fn to_itksnap(&self) -> String {
        let mut s = String::from(
            "################################################\n\
             # ITK-SnAP Label Description File (written by pulmo)\n\
             # File format: \n\
             # IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL\n\
             # Fields: \n\
             #    IDX:   Zero-based index \n\
             #    -R-:   Red color component (0..255)\n\
             #    -G-:   Green color component (0..255)\n\
             #    -B-:   Blue color component (0..255)\n\
             #    -A-:   Label transparency (0.00 .. 1.00)\n\
             #    VIS:   Label visibility (0 or 1)\n\
             #    MSH:   Label mesh visibility (0 or 1)\n\
             #  LABEL:   Label description \n\
             ################################################\n",
        );
        s.push_str("    0     0    0    0        0  0  0    \"Clear Label\"\n");
        for l in &self.labels {
            let name = l.name.replace('"', "'");
            s.push_str(&format!(
                "{:>5} {:>5} {:>4} {:>4} {:>8} {:>2} {:>2}    \"{}\"\n",
                l.value, l.color[0], l.color[1], l.color[2], 1, l.visible as u8, 1, name
            ));
        }
        s
    }

    /// Parses an ITK-SNAP label description file (index 0 is skipped).
    pub fn from_itksnap(text: &str) -> Result<LabelTable, LabelFileError> {
        let mut labels = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| LabelFileError {
                line: n + 1,
                message,
            };
            let (fields, name) = match line.find('"') {
                Some(q) => {
                    let rest = &line[q + 1..];
                    let end = rest
                        .rfind('"')
                        .ok_or_else(|| err("unterminated label name".into()))?;
                    (&line[..q], rest[..end].to_string())
                }
                None => return Err(err("no quoted label name".into())),
            };
            let nums: Vec<&str> = fields.split_whitespace().collect();
            if nums.len() != 7 {
                return Err(err(format!(
                    "expected 7 numbers before the name, found {}",
                    nums.len()
                )));
            }
            let int = |i: usize, max: u32| -> Result<u32, LabelFileError> {
                nums[i]
                    .parse::<u32>()
                    .ok()
                    .filter(|&v| v <= max)
                    .ok_or_else(|| {
                        err(format!(
                            "field {} ('{}') is not an integer in 0..={max}",
                            i + 1,
                            nums[i]
                        ))
                    })
            };
            let value = int(0, 255)?;
            let color = [int(1, 255)? as u8, int(2, 255)? as u8, int(3, 255)? as u8];
            nums[4]
                .parse::<f64>()
                .map_err(|_| err(format!("transparency '{}' is not a number", nums[4])))?;
            let visible = int(5, 1)? == 1;
            int(6, 1)?;
            if value == 0 {
                continue;
            }
            if labels.iter().any(|l: &Label| l.value == value as u8) {
                return Err(err(format!("label {value} listed twice")));
            }
            labels.push(Label {
                value: value as u8,
                name,
                color,
                visible,
                locked: false,
            });
        }
        labels.sort_by_key(|l| l.value);
        Ok(LabelTable { labels })
    }
}

/// The label description file beside a label map: `labels.nii.gz` → `labels.label.txt`.
pub fn label_file_for(labels_path: &std::path::Path) -> std::path::PathBuf {
    let name = labels_path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let stem = name
        .trim_end_matches(".gz")
        .trim_end_matches(".nii")
        .trim_end_matches(".nrrd");
    labels_path.with_file_name(format!("{stem}.label.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_itksnap_sample() {
        let mut t = LabelTable::default();
        t.labels[2].visible = false;
        t.labels[0].name = "left \"lung\"".into();
        let back = LabelTable::from_itksnap(&t.to_itksnap()).unwrap();
        assert_eq!(back.labels.len(), 6);
        assert_eq!(back.labels[0].name, "left 'lung'");
        assert!(!back.labels[2].visible);
        assert_eq!(back.labels[3].color, t.labels[3].color);
        // As ITK-SNAP writes it.
        let sample = "# comment\n    0     0    0    0        0  0  0    \"Clear Label\"\n    1   255    0    0        1  1  1    \"Label 1\"\n   12     0  255    0     0.50  0  1    \"GGO area\"\n";
        let t = LabelTable::from_itksnap(sample).unwrap();
        assert_eq!(t.labels.len(), 2);
        assert_eq!(
            (
                t.labels[1].value,
                t.labels[1].name.as_str(),
                t.labels[1].visible
            ),
            (12, "GGO area", false)
        );
        assert_eq!(
            LabelTable::from_itksnap("  1 300 0 0 1 1 1 \"x\"")
                .unwrap_err()
                .line,
            1
        );
        assert!(
            LabelTable::from_itksnap("1 2 3")
                .unwrap_err()
                .message
                .contains("quoted")
        );
        assert_eq!(
            label_file_for(std::path::Path::new("/a/b/labels.nii.gz")),
            std::path::PathBuf::from("/a/b/labels.label.txt")
        );
    }
}
