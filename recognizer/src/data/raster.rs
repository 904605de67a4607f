//! Grayscale ink images and the operations synthesis and augmentation need: glyph outlines and
//! pen strokes drawn through an affine transform, blur, stroke thickness, elastic warp, noise,
//! resampling.
//!
//! Images hold ink coverage in `[0, 1]` (0 = paper), so "white on black" is the native polarity.

use ab_glyph::{Outline, OutlineCurve, Point};
use ab_glyph_rasterizer::Rasterizer;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// A single-channel float image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Ink {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// `(x, y) → (a·x + b·y + c, d·x + e·y + f)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub e: f32,
    pub f: f32,
}

impl Affine {
    pub const IDENTITY: Affine = Affine {
        a: 1.0,
        b: 0.0,
        c: 0.0,
        d: 0.0,
        e: 1.0,
        f: 0.0,
    };

    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (
            self.a * x + self.b * y + self.c,
            self.d * x + self.e * y + self.f,
        )
    }

    /// `self` after `first`.
    pub fn then(&self, next: &Affine) -> Affine {
        Affine {
            a: next.a * self.a + next.b * self.d,
            b: next.a * self.b + next.b * self.e,
            c: next.a * self.c + next.b * self.f + next.c,
            d: next.d * self.a + next.e * self.d,
            e: next.d * self.b + next.e * self.e,
            f: next.d * self.c + next.e * self.f + next.f,
        }
    }

    pub fn translate(dx: f32, dy: f32) -> Affine {
        Affine {
            c: dx,
            f: dy,
            ..Affine::IDENTITY
        }
    }

    /// Rotation by `radians` and horizontal shear `shear` (x += shear·y) about the origin, with
    /// separate x/y scales: the pose of a handwritten glyph.
    pub fn pose(scale_x: f32, scale_y: f32, shear: f32, radians: f32) -> Affine {
        let (s, c) = radians.sin_cos();
        let shape = Affine {
            a: scale_x,
            b: shear * scale_y,
            c: 0.0,
            d: 0.0,
            e: scale_y,
            f: 0.0,
        };
        shape.then(&Affine {
            a: c,
            b: -s,
            c: 0.0,
            d: s,
            e: c,
            f: 0.0,
        })
    }

    /// How much the transform scales lengths: the square root of its area scale.
    pub fn scale(&self) -> f32 {
        (self.a * self.e - self.b * self.d).abs().sqrt()
    }

    pub fn inverse(&self) -> Option<Affine> {
        let det = self.a * self.e - self.b * self.d;
        if det.abs() < 1e-9 {
            return None;
        }
        let (a, b, d, e) = (self.e / det, -self.b / det, -self.d / det, self.a / det);
        Some(Affine {
            a,
            b,
            c: -(a * self.c + b * self.f),
            d,
            e,
            f: -(d * self.c + e * self.f),
        })
    }
}

/// Axis-aligned bounds `(x0, y0, x1, y1)` of an outline after `transform`.
pub fn outline_bounds(outline: &Outline, transform: &Affine) -> (f32, f32, f32, f32) {
    let mut b = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for p in curve_points(outline) {
        let (x, y) = transform.apply(p.x, p.y);
        b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
    }
    b
}

/// A pen stroke: the path, and the pen's width at each point, in the units of the points.
#[derive(Debug, Clone, PartialEq)]
pub struct Stroke {
    pub points: Vec<Point>,
    pub widths: Vec<f32>,
}

/// What a glyph draws: a filled outline (TrueType, OpenType, WOFF) or pen strokes (Hershey).
#[derive(Debug, Clone)]
pub enum GlyphShape {
    Outline(Outline),
    Strokes(Vec<Stroke>),
}

impl GlyphShape {
    /// Axis-aligned bounds `(x0, y0, x1, y1)` after `transform`, the pen's width included.
    pub fn bounds(&self, transform: &Affine) -> (f32, f32, f32, f32) {
        match self {
            GlyphShape::Outline(outline) => outline_bounds(outline, transform),
            GlyphShape::Strokes(strokes) => {
                let scale = transform.scale();
                let mut b = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
                for stroke in strokes {
                    for (p, w) in stroke.points.iter().zip(&stroke.widths) {
                        let (x, y) = transform.apply(p.x, p.y);
                        let r = w * scale / 2.0;
                        b = (
                            b.0.min(x - r),
                            b.1.min(y - r),
                            b.2.max(x + r),
                            b.3.max(y + r),
                        );
                    }
                }
                b
            }
        }
    }

    /// The shape with every point (outline control points, stroke points) moved by `displace`.
    /// An outline keeps the font's `bounds`: measure the moved shape with [`Self::bounds`].
    pub fn displaced(self, displace: impl Fn(Point) -> Point) -> GlyphShape {
        match self {
            GlyphShape::Outline(Outline { bounds, curves }) => {
                let curves = curves
                    .into_iter()
                    .map(|curve| match curve {
                        OutlineCurve::Line(p0, p1) => {
                            OutlineCurve::Line(displace(p0), displace(p1))
                        }
                        OutlineCurve::Quad(p0, p1, p2) => {
                            OutlineCurve::Quad(displace(p0), displace(p1), displace(p2))
                        }
                        OutlineCurve::Cubic(p0, p1, p2, p3) => OutlineCurve::Cubic(
                            displace(p0),
                            displace(p1),
                            displace(p2),
                            displace(p3),
                        ),
                    })
                    .collect();
                GlyphShape::Outline(Outline { bounds, curves })
            }
            GlyphShape::Strokes(strokes) => GlyphShape::Strokes(
                strokes
                    .into_iter()
                    .map(|s| Stroke {
                        points: s.points.into_iter().map(&displace).collect(),
                        widths: s.widths,
                    })
                    .collect(),
            ),
        }
    }
}

fn curve_points(outline: &Outline) -> impl Iterator<Item = Point> + '_ {
    outline.curves.iter().flat_map(|curve| match *curve {
        OutlineCurve::Line(p0, p1) => vec![p0, p1],
        OutlineCurve::Quad(p0, p1, p2) => vec![p0, p1, p2],
        OutlineCurve::Cubic(p0, p1, p2, p3) => vec![p0, p1, p2, p3],
    })
}

impl Ink {
    pub fn new(width: usize, height: usize) -> Ink {
        Ink {
            width,
            height,
            data: vec![0.0; width * height],
        }
    }

    pub fn from_u8(width: usize, height: usize, pixels: &[u8]) -> Ink {
        Ink {
            width,
            height,
            data: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        }
    }

    pub fn to_u8(&self) -> Vec<u8> {
        self.data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect()
    }

    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    /// Bilinear sample with zero (paper) outside.
    pub fn sample(&self, x: f32, y: f32) -> f32 {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as isize, y0 as isize);
        let px = |xi: isize, yi: isize| -> f32 {
            if xi < 0 || yi < 0 || xi as usize >= self.width || yi as usize >= self.height {
                0.0
            } else {
                self.data[yi as usize * self.width + xi as usize]
            }
        };
        let top = px(x0, y0) * (1.0 - fx) + px(x0 + 1, y0) * fx;
        let bottom = px(x0, y0 + 1) * (1.0 - fx) + px(x0 + 1, y0 + 1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// Draws a glyph outline (font units, y up) mapped by `transform` into pixels, keeping the
    /// darker of existing and new ink where strokes overlap.
    pub fn draw_outline(&mut self, outline: &Outline, transform: &Affine) {
        let (x0, y0, x1, y1) = outline_bounds(outline, transform);
        if x0 > x1 {
            return;
        }
        // Rasterise in a private buffer covering the glyph only, then blend with clipping: the
        // rasterizer itself wraps out-of-range x into the next row.
        let (ox, oy) = (x0.floor() - 1.0, y0.floor() - 1.0);
        let w = (x1 - ox).ceil() as usize + 2;
        let h = (y1 - oy).ceil() as usize + 2;
        let mut raster = Rasterizer::new(w, h);
        let map = |p: Point| {
            let (x, y) = transform.apply(p.x, p.y);
            ab_glyph_rasterizer::point(x - ox, y - oy)
        };
        for curve in &outline.curves {
            match *curve {
                OutlineCurve::Line(p0, p1) => raster.draw_line(map(p0), map(p1)),
                OutlineCurve::Quad(p0, p1, p2) => raster.draw_quad(map(p0), map(p1), map(p2)),
                OutlineCurve::Cubic(p0, p1, p2, p3) => {
                    raster.draw_cubic(map(p0), map(p1), map(p2), map(p3))
                }
            }
        }
        let (ox, oy) = (ox as isize, oy as isize);
        raster.for_each_pixel_2d(|x, y, alpha| {
            let (cx, cy) = (ox + x as isize, oy + y as isize);
            if cx >= 0 && cy >= 0 && (cx as usize) < self.width && (cy as usize) < self.height {
                let i = cy as usize * self.width + cx as usize;
                self.data[i] = self.data[i].max(alpha.clamp(0.0, 1.0));
            }
        });
    }

    /// A glyph's ink through `transform`, whichever way the font draws it.
    pub fn draw_glyph(&mut self, shape: &GlyphShape, transform: &Affine) {
        match shape {
            GlyphShape::Outline(outline) => self.draw_outline(outline, transform),
            GlyphShape::Strokes(strokes) => {
                for stroke in strokes {
                    self.draw_stroke(stroke, transform);
                }
            }
        }
    }

    /// A round pen along `stroke`, its width interpolated between points: each pixel takes the
    /// coverage of the nearest segment (antialiased over one pixel), so joins and ends are round.
    pub fn draw_stroke(&mut self, stroke: &Stroke, transform: &Affine) {
        debug_assert_eq!(
            stroke.points.len(),
            stroke.widths.len(),
            "a width per point"
        );
        let scale = transform.scale();
        let points: Vec<(f32, f32, f32)> = stroke
            .points
            .iter()
            .zip(&stroke.widths)
            .map(|(p, w)| {
                let (x, y) = transform.apply(p.x, p.y);
                (x, y, w * scale / 2.0)
            })
            .collect();
        let segments: Vec<[(f32, f32, f32); 2]> = match points.as_slice() {
            [] => return,
            [dot] => vec![[*dot, *dot]],
            _ => points.windows(2).map(|w| [w[0], w[1]]).collect(),
        };
        for [(ax, ay, ar), (bx, by, br)] in segments {
            let reach = ar.max(br) + 1.0;
            let x0 = (ax.min(bx) - reach).floor().max(0.0) as usize;
            let y0 = (ay.min(by) - reach).floor().max(0.0) as usize;
            let x1 = ((ax.max(bx) + reach).ceil().max(0.0) as usize).min(self.width);
            let y1 = ((ay.max(by) + reach).ceil().max(0.0) as usize).min(self.height);
            let (dx, dy) = (bx - ax, by - ay);
            let length2 = dx * dx + dy * dy;
            for y in y0..y1 {
                for x in x0..x1 {
                    let (px, py) = (x as f32 + 0.5 - ax, y as f32 + 0.5 - ay);
                    let t = if length2 > 0.0 {
                        ((px * dx + py * dy) / length2).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let distance = (px - t * dx).hypot(py - t * dy);
                    let radius = ar + t * (br - ar);
                    let coverage = (radius - distance + 0.5).clamp(0.0, 1.0);
                    let v = &mut self.data[y * self.width + x];
                    *v = v.max(coverage);
                }
            }
        }
    }

    /// Separable Gaussian blur.
    pub fn blur(&mut self, sigma: f32) {
        if sigma < 0.05 {
            return;
        }
        let radius = (sigma * 3.0).ceil() as isize;
        let kernel: Vec<f32> = (-radius..=radius)
            .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f32 = kernel.iter().sum();
        let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
        let (w, h) = (self.width as isize, self.height as isize);
        let mut tmp = vec![0.0; self.data.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let xx = (x + k as isize - radius).clamp(0, w - 1);
                    acc += weight * self.data[(y * w + xx) as usize];
                }
                tmp[(y * w + x) as usize] = acc;
            }
        }
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let yy = (y + k as isize - radius).clamp(0, h - 1);
                    acc += weight * tmp[(yy * w + x) as usize];
                }
                self.data[(y * w + x) as usize] = acc;
            }
        }
    }

    /// Changes stroke thickness: blur, then a soft threshold. A low `level` grows strokes, a
    /// high one thins them; the result stays anti-aliased.
    pub fn restroke(&mut self, sigma: f32, level: f32) {
        self.blur(sigma);
        // Levels are relative to the darkest ink, so a hairline blurred to a faint peak is
        // thickened, not erased.
        let peak = self.data.iter().fold(0.0f32, |m, &v| m.max(v));
        if peak <= 0.0 {
            return;
        }
        let (lo, hi) = ((level - 0.12) * peak, (level + 0.12) * peak);
        for v in &mut self.data {
            let t = ((*v - lo) / (hi - lo)).clamp(0.0, 1.0);
            *v = t * t * (3.0 - 2.0 * t);
        }
    }

    /// Resamples through the inverse of `transform` (output pixel → source pixel).
    pub fn warp_affine(&self, transform: &Affine, width: usize, height: usize) -> Ink {
        let inverse = transform.inverse().unwrap_or(Affine::IDENTITY);
        let mut out = Ink::new(width, height);
        for y in 0..height {
            for x in 0..width {
                let (sx, sy) = inverse.apply(x as f32 + 0.5, y as f32 + 0.5);
                out.data[y * width + x] = self.sample(sx - 0.5, sy - 0.5);
            }
        }
        out
    }

    /// Elastic distortion (Simard et al. 2003): a random displacement field smoothed with a
    /// Gaussian of `sigma` px and scaled to `alpha` px.
    pub fn elastic(&self, alpha: f32, sigma: f32, rng: &mut impl Rng) -> Ink {
        if alpha <= 0.0 {
            return self.clone();
        }
        let field = |rng: &mut dyn rand::RngCore| {
            let mut f = Ink {
                width: self.width,
                height: self.height,
                data: (0..self.data.len())
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect(),
            };
            f.blur(sigma);
            // Normalise so that `alpha` is the displacement scale whatever the smoothing.
            let peak = f.data.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for v in &mut f.data {
                *v *= alpha / peak;
            }
            f
        };
        let dx = field(rng);
        let dy = field(rng);
        let mut out = Ink::new(self.width, self.height);
        for y in 0..self.height {
            for x in 0..self.width {
                let i = y * self.width + x;
                out.data[i] = self.sample(x as f32 + dx.data[i], y as f32 + dy.data[i]);
            }
        }
        out
    }

    /// Adds Gaussian noise of standard deviation `sigma`, clamped to `[0, 1]`.
    pub fn add_noise(&mut self, sigma: f32, rng: &mut impl Rng) {
        if sigma <= 0.0 {
            return;
        }
        let normal = Normal::new(0.0, sigma).expect("sigma is positive");
        for v in &mut self.data {
            *v = (*v + normal.sample(rng)).clamp(0.0, 1.0);
        }
    }

    /// Bilinear resize.
    pub fn resize(&self, width: usize, height: usize) -> Ink {
        let (sx, sy) = (
            self.width as f32 / width as f32,
            self.height as f32 / height as f32,
        );
        let mut out = Ink::new(width, height);
        for y in 0..height {
            for x in 0..width {
                out.data[y * width + x] =
                    self.sample((x as f32 + 0.5) * sx - 0.5, (y as f32 + 0.5) * sy - 0.5);
            }
        }
        out
    }

    /// The bounding box `(x0, y0, x1, y1)` (exclusive end) of pixels above `level`, if any.
    pub fn ink_bounds(&self, level: f32) -> Option<(usize, usize, usize, usize)> {
        let mut b: Option<(usize, usize, usize, usize)> = None;
        for y in 0..self.height {
            for x in 0..self.width {
                if self.at(x, y) > level {
                    b = Some(match b {
                        None => (x, y, x + 1, y + 1),
                        Some((x0, y0, x1, y1)) => {
                            (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1))
                        }
                    });
                }
            }
        }
        b
    }

    /// Copies `other` onto `self` at `(x, y)`, keeping the darker ink.
    pub fn paste_max(&mut self, other: &Ink, x: isize, y: isize) {
        for oy in 0..other.height {
            let ty = y + oy as isize;
            if ty < 0 || ty as usize >= self.height {
                continue;
            }
            for ox in 0..other.width {
                let tx = x + ox as isize;
                if tx < 0 || tx as usize >= self.width {
                    continue;
                }
                let i = ty as usize * self.width + tx as usize;
                self.data[i] = self.data[i].max(other.at(ox, oy));
            }
        }
    }

    pub fn crop(&self, x0: usize, y0: usize, x1: usize, y1: usize) -> Ink {
        let (w, h) = (x1 - x0, y1 - y0);
        let mut out = Ink::new(w, h);
        for y in 0..h {
            out.data[y * w..(y + 1) * w].copy_from_slice(
                &self.data[(y0 + y) * self.width + x0..(y0 + y) * self.width + x1],
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pen_stroke_covers_its_width_and_no_more() {
        // A horizontal stroke 4 px wide through the middle of row 5: solid inside, half
        // covered where its edge crosses a row, empty beyond.
        let stroke = Stroke {
            points: vec![ab_glyph::point(4.0, 5.5), ab_glyph::point(16.0, 5.5)],
            widths: vec![4.0, 4.0],
        };
        let mut ink = Ink::new(20, 12);
        ink.draw_stroke(&stroke, &Affine::IDENTITY);
        for y in 4..=6 {
            assert_eq!(ink.at(10, y), 1.0, "row {y}");
        }
        // The pen's edge halves the rows it crosses.
        assert_eq!(ink.at(10, 3), 0.5);
        assert_eq!(ink.at(10, 7), 0.5);
        assert_eq!(ink.at(10, 8), 0.0);
        assert_eq!(ink.at(10, 2), 0.0);
        // Round ends: the pen's disc reaches 2 px past each end point.
        assert_eq!(ink.at(2, 5), 1.0);
        assert_eq!(ink.at(1, 5), 0.0);
        assert_eq!(ink.at(17, 5), 1.0);
        assert_eq!(ink.at(18, 5), 0.0);
        // A transform that doubles lengths doubles the width too.
        let mut wide = Ink::new(40, 24);
        let double = Affine::pose(2.0, 2.0, 0.0, 0.0);
        wide.draw_stroke(&stroke, &double);
        assert_eq!(wide.at(20, 7), 1.0);
        assert_eq!(wide.at(20, 14), 1.0);
        assert_eq!(wide.at(20, 16), 0.0);
        let (x0, y0, x1, y1) = GlyphShape::Strokes(vec![stroke]).bounds(&double);
        assert_eq!((x0, y0, x1, y1), (4.0, 7.0, 36.0, 15.0));
    }

    #[test]
    fn displacing_an_outline_moves_every_control_point() {
        let p = ab_glyph::point;
        let outline = Outline {
            bounds: ab_glyph::Rect::default(),
            curves: vec![
                OutlineCurve::Line(p(0.0, 0.0), p(4.0, 0.0)),
                OutlineCurve::Quad(p(4.0, 0.0), p(4.0, 4.0), p(0.0, 4.0)),
                OutlineCurve::Cubic(p(0.0, 4.0), p(-1.0, 3.0), p(-1.0, 1.0), p(0.0, 0.0)),
            ],
        };
        let before = GlyphShape::Outline(outline.clone()).bounds(&Affine::IDENTITY);
        let moved = GlyphShape::Outline(outline).displaced(|q| p(q.x + 1.0, q.y * 2.0));
        assert_eq!(moved.bounds(&Affine::IDENTITY), (0.0, 0.0, 5.0, 8.0));
        assert_eq!(before, (-1.0, 0.0, 4.0, 4.0));
        let GlyphShape::Outline(moved) = moved else {
            panic!("an outline stays an outline")
        };
        assert_eq!(
            curve_points(&moved).collect::<Vec<_>>(),
            [(1.0, 0.0), (5.0, 0.0), (5.0, 0.0), (5.0, 8.0), (1.0, 8.0)]
                .into_iter()
                .chain([(1.0, 8.0), (0.0, 6.0), (0.0, 2.0), (1.0, 0.0)])
                .map(|(x, y)| p(x, y))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn affine_inverse_round_trips() {
        let t = Affine::pose(1.2, 0.9, 0.3, 0.2).then(&Affine::translate(3.0, -2.0));
        let inv = t.inverse().unwrap();
        let (x, y) = t.apply(5.0, 7.0);
        let (bx, by) = inv.apply(x, y);
        assert!((bx - 5.0).abs() < 1e-4 && (by - 7.0).abs() < 1e-4);
    }

    #[test]
    fn restroke_grows_and_thins_strokes() {
        let mut img = Ink::new(20, 20);
        for y in 0..20 {
            for x in 8..12 {
                img.data[y * 20 + x] = 1.0;
            }
        }
        let ink = |i: &Ink| i.data.iter().sum::<f32>();
        let mut thick = img.clone();
        thick.restroke(1.0, 0.2);
        let mut thin = img.clone();
        thin.restroke(1.0, 0.75);
        assert!(ink(&thick) > ink(&img) && ink(&thin) < ink(&img));
    }

    #[test]
    fn blur_preserves_total_ink_away_from_borders() {
        let mut img = Ink::new(15, 15);
        img.data[7 * 15 + 7] = 1.0;
        img.blur(1.0);
        let total: f32 = img.data.iter().sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
    }
}
