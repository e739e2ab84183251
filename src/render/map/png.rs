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

/// The map as a PNG file's bytes.
pub fn map_png(map: &Map) -> std::io::Result<Vec<u8>> {
    let scene = layout(map);
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
    Ok(out)
}
