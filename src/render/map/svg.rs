//! A map as SVG, written directly: rectangles with tooltips (`<title>`: hover a cell to read
//! its layer, expert and number) and text in the viewer's monospace font.

use std::fmt::Write as _;

use super::Map;
use super::scene::{Anchor, Item, Rgb, Size, layout};

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Text with `&`, `<`, `>` and `"` escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The map as an SVG document.
pub fn map_svg(map: &Map) -> String {
    let scene = layout(map);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" shape-rendering="crispEdges">
<rect width="100%" height="100%" fill="#ffffff"/>"##,
        w = scene.width,
        h = scene.height
    );
    for item in &scene.items {
        match item {
            Item::Rect {
                x,
                y,
                w,
                h,
                fill,
                stroke,
                title,
            } => {
                let stroke = stroke
                    .map(|s| format!(r#" stroke="{}""#, hex(s)))
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{}"{stroke}"#,
                    hex(*fill)
                );
                let _ = match title {
                    Some(t) => writeln!(out, "><title>{}</title></rect>", escape(t)),
                    None => writeln!(out, "/>"),
                };
            }
            Item::Text {
                x,
                y,
                text,
                size,
                anchor,
            } => {
                let px = match size {
                    Size::Small => 10,
                    Size::Large => 13,
                };
                let anchor = match anchor {
                    Anchor::Start => "",
                    Anchor::Middle => r#" text-anchor="middle""#,
                    Anchor::End => r#" text-anchor="end""#,
                };
                let _ = writeln!(
                    out,
                    r#"<text x="{x}" y="{y}" font-size="{px}"{anchor}>{}</text>"#,
                    escape(text)
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape(r#"a<b & "c">"#), "a&lt;b &amp; &quot;c&quot;&gt;");
    }
}
