//! Hershey stroke fonts (`.jhf`, Debian's `hershey-fonts-data`): letters as pen paths, not
//! outlines. Synthesis draws them with a pen whose width and pressure vary along the stroke, so
//! every instance of a letter differs, as handwriting does (outline fonts repeat one template).
//!
//! A `.jhf` file holds one glyph a record, in ASCII order from the space: a 5-character id, a
//! 3-character count of coordinate pairs, then the pairs as letters offset from `R`. The first
//! pair is the glyph's left and right bearing; ` R` lifts the pen. A record may wrap onto the
//! next line. Hershey's y axis points down, with the baseline at the bottom of `H`.

use ab_glyph::{Point, point};

/// The first character a `.jhf` file draws: glyph `i` is `FIRST + i`.
const FIRST: char = ' ';

/// One glyph: its pen strokes in font units (y up, baseline at 0, left bearing at x = 0).
#[derive(Debug, Clone, PartialEq)]
pub struct StrokeGlyph {
    pub advance: f32,
    /// Each stroke is a polyline drawn without lifting the pen, smoothed through Hershey's
    /// points (a Catmull–Rom spline): corners come out rounded, as a quick pen rounds them,
    /// with a slight overshoot at the sharpest (`4`, `7`, `z`).
    pub strokes: Vec<Vec<Point>>,
}

/// A stroke font: the glyphs of `FIRST..` in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StrokeFont {
    glyphs: Vec<StrokeGlyph>,
    /// Height of the drawn `H` in font units.
    cap_height: f32,
}

/// Why a `.jhf` file cannot be read; the caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum JhfError {
    #[error("line {line}: {reason}")]
    Record { line: usize, reason: String },
    #[error("{0}")]
    Font(&'static str),
}

impl StrokeFont {
    /// Parses the text of a `.jhf` file.
    pub fn parse(text: &str) -> Result<StrokeFont, JhfError> {
        let mut records: Vec<(usize, String)> = Vec::new();
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
        while let Some((number, line)) = lines.next() {
            if line.is_empty() {
                continue;
            }
            let bad = |reason: String| JhfError::Record {
                line: number,
                reason,
            };
            let count =
                pair_count(line).ok_or_else(|| bad("no pair count in columns 6–8".into()))?;
            let mut record = line.to_owned();
            // Long glyphs wrap: the pairs go on over the following lines. A record's header
            // there means this glyph's count is wrong, and every later letter would shift.
            while record.len() < 8 + 2 * count {
                let (next, more) = lines
                    .next()
                    .ok_or_else(|| bad(format!("the glyph ends before its {count} pairs")))?;
                if pair_count(more).is_some() {
                    return Err(bad(format!(
                        "the glyph ends before its {count} pairs: line {next} starts another"
                    )));
                }
                record.push_str(more);
            }
            if !record.is_ascii() {
                return Err(bad("a glyph record is not ASCII".into()));
            }
            records.push((number, record[8..8 + 2 * count].to_owned()));
        }
        let mut glyphs = records
            .iter()
            .map(|(number, pairs)| {
                glyph(pairs.as_bytes()).ok_or_else(|| JhfError::Record {
                    line: *number,
                    reason: "a glyph without bearings".into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if glyphs.is_empty() {
            return Err(JhfError::Font("no glyph: not a Hershey .jhf font"));
        }
        // Font units: y up from the baseline, which is where `H`'s strokes end.
        let baseline = glyphs
            .get(index('H'))
            .and_then(|h| h.strokes.iter().flatten().map(|p| p.y).reduce(f32::max))
            .ok_or(JhfError::Font("the font has no `H` to find its baseline"))?;
        for glyph in &mut glyphs {
            for p in glyph.strokes.iter_mut().flatten() {
                p.y = baseline - p.y;
            }
            glyph.strokes = glyph.strokes.iter().map(|s| smooth(s)).collect();
        }
        // The cap height is measured on the `H` that is drawn, the smoothed one, as an outline
        // font's is measured on its outline.
        let cap_height = glyphs[index('H')]
            .strokes
            .iter()
            .flatten()
            .map(|p| p.y)
            .fold(0.0, f32::max);
        if cap_height <= 0.0 {
            return Err(JhfError::Font("its `H` has no height to size letters by"));
        }
        Ok(StrokeFont { glyphs, cap_height })
    }

    /// The glyph drawing `c`, if the font has one.
    pub fn glyph(&self, c: char) -> Option<&StrokeGlyph> {
        (c >= FIRST).then(|| self.glyphs.get(index(c))).flatten()
    }

    /// Height of `H`, the unit synthesis sizes letters by.
    pub fn cap_height(&self) -> f32 {
        self.cap_height
    }
}

/// The pair count of a record's header (columns 6–8, after a 5-column id), if `line` has one.
fn pair_count(line: &str) -> Option<usize> {
    let (id, count) = (line.get(..5)?, line.get(5..8)?);
    let digits = |s: &str| s.bytes().all(|b| b == b' ' || b.is_ascii_digit());
    (digits(id) && digits(count))
        .then(|| count.trim().parse().ok())
        .flatten()
}

fn index(c: char) -> usize {
    c as usize - FIRST as usize
}

/// A glyph from its coordinate pairs (bearings first); `None` without them.
fn glyph(pairs: &[u8]) -> Option<StrokeGlyph> {
    let coordinate = |b: u8| f32::from(b) - f32::from(b'R');
    let mut pairs = pairs.chunks_exact(2);
    let bearings = pairs.next()?;
    let (left, right) = (coordinate(bearings[0]), coordinate(bearings[1]));
    let mut strokes = vec![Vec::new()];
    for pair in pairs {
        if pair == b" R" {
            strokes.push(Vec::new());
        } else {
            let p = point(coordinate(pair[0]) - left, coordinate(pair[1]));
            strokes.last_mut().expect("one stroke at least").push(p);
        }
    }
    strokes.retain(|s| !s.is_empty());
    Some(StrokeGlyph {
        advance: right - left,
        strokes,
    })
}

/// Points per Hershey segment after smoothing.
const SUBDIVISIONS: usize = 4;

/// A Catmull–Rom spline through `points`, `SUBDIVISIONS` points a segment; the ends are kept.
fn smooth(points: &[Point]) -> Vec<Point> {
    if points.len() < 3 {
        return points.to_vec();
    }
    let at = |i: isize| points[i.clamp(0, points.len() as isize - 1) as usize];
    let mut out = Vec::with_capacity(points.len() * SUBDIVISIONS);
    for i in 0..points.len() as isize - 1 {
        let (p0, p1, p2, p3) = (at(i - 1), at(i), at(i + 1), at(i + 2));
        for k in 0..SUBDIVISIONS {
            let t = k as f32 / SUBDIVISIONS as f32;
            let (t2, t3) = (t * t, t * t * t);
            let blend = |a: f32, b: f32, c: f32, d: f32| {
                0.5 * (2.0 * b
                    + (c - a) * t
                    + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2
                    + (3.0 * b - a - 3.0 * c + d) * t3)
            };
            out.push(point(
                blend(p0.x, p1.x, p2.x, p3.x),
                blend(p0.y, p1.y, p2.y, p3.y),
            ));
        }
    }
    out.push(points[points.len() - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The space, `H` and `I` of Hershey's simplex roman (`futural.jhf`), the last wrapped.
    const SIMPLEX: &str = "12345  1JZ\n\
        12345  9H\\LFL[ RXFX[ RLPXP\n\
        12345  3NVRF\nR[\n";

    fn simplex() -> Vec<String> {
        // Glyphs between the space and `H` are not needed: pad with empty ones.
        let mut records = vec![SIMPLEX.lines().next().unwrap().to_owned()];
        records.extend((1..index('H')).map(|_| "12345  1JZ".to_owned()));
        records.extend(SIMPLEX.lines().skip(1).map(str::to_owned));
        records
    }

    #[test]
    fn a_jhf_font_reads_as_strokes_above_the_baseline() {
        let font = StrokeFont::parse(&simplex().join("\n")).unwrap();
        assert_eq!(font.cap_height(), 21.0);
        let h = font.glyph('H').unwrap();
        assert_eq!(h.advance, 20.0);
        // Two uprights and the bar; straight strokes of two points stay two points.
        assert_eq!(h.strokes.len(), 3);
        assert_eq!(h.strokes[0], vec![point(4.0, 21.0), point(4.0, 0.0)]);
        assert_eq!(h.strokes[2], vec![point(4.0, 11.0), point(16.0, 11.0)]);
        // `I` wraps onto a second line.
        let i = font.glyph('I').unwrap();
        assert_eq!(i.strokes, vec![vec![point(4.0, 21.0), point(4.0, 0.0)]]);
        assert_eq!(font.glyph(' ').unwrap().strokes.len(), 0);
        assert!(font.glyph('z').is_none());
    }

    #[test]
    fn a_curve_is_smoothed_through_its_points() {
        let corner = [point(0.0, 0.0), point(10.0, 0.0), point(10.0, 10.0)];
        let smoothed = smooth(&corner);
        assert_eq!(smoothed.len(), 2 * SUBDIVISIONS + 1);
        for p in corner {
            assert!(smoothed.contains(&p), "{p:?} is kept");
        }
        // Half way along the first segment the spline has left the straight line, bending
        // away from the corner it is about to turn.
        let middle = smoothed[SUBDIVISIONS / 2];
        assert_eq!(middle.x, 5.0);
        assert!(middle.y < -0.5, "{middle:?}");
    }

    #[test]
    fn trailing_spaces_and_windows_line_ends_are_not_pairs() {
        let records: Vec<String> = simplex().iter().map(|r| format!("{r}  ")).collect();
        let font = StrokeFont::parse(&records.join("\r\n")).unwrap();
        assert_eq!(
            font.glyph('I').unwrap().strokes,
            vec![vec![point(4.0, 21.0), point(4.0, 0.0)]]
        );
    }

    #[test]
    fn bad_records_are_refused_with_their_line() {
        let message = |text: &str| StrokeFont::parse(text).unwrap_err().to_string();
        let truncated = message("12345  9H\\LFL[");
        assert!(truncated.starts_with("line 1:"), "{truncated}");
        assert!(truncated.contains("9 pairs"), "{truncated}");
        // A count too high would swallow the next glyph and shift every later letter.
        let mut records = simplex();
        records[0] = "12345  3JZ".to_owned();
        let swallowed = message(&records.join("\n"));
        assert!(
            swallowed.starts_with("line 1:") && swallowed.contains("line 2 starts another"),
            "{swallowed}"
        );
        // An `H` of no height cannot size letters.
        let mut flat = simplex();
        flat[index('H')] = "12345  3H\\LPXP".to_owned();
        assert!(message(&flat.join("\n")).contains("no height"));
    }
}
