//! A map as PNG: the same scene as the SVG, drawn into an RGB buffer with
//! embedded-graphics (its rectangles and bitmap fonts: no font files, no system libraries)
//! and encoded by the `png` crate. Tooltips exist only in the SVG.

use std::convert::Infallible;

use embedded_graphics::Pixel;
use embedded_graphics::geometry::{OriginDimensions, Point};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_7X13};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::{DrawTarget, Drawable, Primitive};
use embedded_graphics::primitives::{PrimitiveStyleBuilder, Rectangle};
use embedded_graphics::text::{Alignment, Baseline, Text, TextStyleBuilder};

use super::Map;
use super::scene::{Anchor, Item, Size, WHITE, layout};

/// An RGB image, 3 bytes a pixel, rows top to bottom.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    /// Each pixel as `s` x `s` pixels (nearest neighbour: the bitmap fonts stay crisp).
    fn scaled(self, s: u32) -> Canvas {
        if s == 1 {
            return self;
        }
        let (w, s) = (self.width as usize, s as usize);
        let mut pixels = Vec::with_capacity(self.pixels.len() * s * s);
        for row in self.pixels.chunks(w * 3) {
            let wide: Vec<u8> = row
                .chunks(3)
                .flat_map(|p| std::iter::repeat_n(p, s).flatten().copied())
                .collect();
            for _ in 0..s {
                pixels.extend_from_slice(&wide);
            }
        }
        Canvas {
            width: self.width * s as u32,
            height: self.height * s as u32,
            pixels,
        }
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> embedded_graphics::geometry::Size {
        embedded_graphics::geometry::Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Infallible>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(p, c) in pixels {
            let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y)) else {
                continue;
            };
            if x < self.width && y < self.height {
                let i = (y as usize * self.width as usize + x as usize) * 3;
                self.pixels[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

fn color(c: [u8; 3]) -> Rgb888 {
    Rgb888::new(c[0], c[1], c[2])
}

/// The largest scale a PNG is drawn at: each pixel of the layout as 4 x 4.
pub const MAX_PNG_SCALE: u32 = 4;

/// The width a PNG is scaled up to at most by default: a screen's, so that the bitmap
/// fonts (6 x 10 pixels) are readable without zooming.
const SCREEN_WIDTH: u32 = 2400;

/// A map drawn as PNG.
#[derive(Clone, Debug)]
pub struct Png {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Pixels per layout pixel, each way.
    pub scale: u32,
}

/// The map as a PNG file, each layout pixel drawn as `scale` x `scale` pixels (at most
/// [`MAX_PNG_SCALE`]); `None`: the largest scale that keeps it within a screen's width
/// (2400 pixels), at least 1.
pub fn map_png(map: &Map, scale: Option<u32>) -> std::io::Result<Png> {
    let scene = layout(map);
    let scale = scale
        .unwrap_or(SCREEN_WIDTH / scene.width.max(1))
        .clamp(1, MAX_PNG_SCALE);
    let mut canvas = Canvas {
        width: scene.width,
        height: scene.height,
        pixels: WHITE.repeat(scene.width as usize * scene.height as usize),
    };
    for item in &scene.items {
        match item {
            Item::Rect {
                x,
                y,
                w,
                h,
                fill,
                stroke,
                ..
            } => {
                let mut style = PrimitiveStyleBuilder::new().fill_color(color(*fill));
                if let Some(s) = stroke {
                    style = style.stroke_color(color(*s)).stroke_width(1);
                }
                let rect = Rectangle::new(
                    Point::new(*x as i32, *y as i32),
                    embedded_graphics::geometry::Size::new(*w, *h),
                );
                let Ok(()) = rect.into_styled(style.build()).draw(&mut canvas);
            }
            Item::Text {
                x,
                y,
                text,
                size,
                anchor,
            } => {
                let font = match size {
                    Size::Small => &FONT_6X10,
                    Size::Large => &FONT_7X13,
                };
                let style = MonoTextStyle::new(font, Rgb888::BLACK);
                let alignment = match anchor {
                    Anchor::Start => Alignment::Left,
                    Anchor::Middle => Alignment::Center,
                    Anchor::End => Alignment::Right,
                };
                let layout = TextStyleBuilder::new()
                    .alignment(alignment)
                    .baseline(Baseline::Alphabetic)
                    .build();
                let at = Point::new(*x as i32, *y as i32);
                let Ok(_) = Text::with_text_style(text, at, style, layout).draw(&mut canvas);
            }
        }
    }
    let canvas = canvas.scaled(scale);
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, canvas.width, canvas.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&canvas.pixels)
            .map_err(std::io::Error::other)?;
    }
    Ok(Png {
        bytes: out,
        width: canvas.width,
        height: canvas.height,
        scale,
    })
}
