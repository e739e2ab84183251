//! Maps: the R1T chimera's provenance map shows exactly its routed experts as r1's (checked
//! on the data behind the picture, then the picture is drawn as SVG and PNG and checked to
//! be one); its distance map against V3 shows exactly the routed experts as changed.
//!
//! The provenance map needs nothing but the binary; the distance map needs the `ggml`
//! feature (`have` skips it without, or fails it under GGUF_SPLICE_REQUIRE_ORACLES=1).

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{Value, json};

/// The R1T chimera of the fixtures, made with the preset.
fn chimera(dir: &Path) -> PathBuf {
    let out = dir.join("chimera.gguf");
    let o = run(&[
        "splice",
        "--parent",
        &format!("v3={}", fixture_arg("v3-q3mix.gguf")),
        "--parent",
        &format!("r1={}", fixture_arg("r1-iq2mix.gguf")),
        "--recipe",
        &chimera_preset(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_ok(&o);
    out
}

/// `verify CHILD` against the fixtures' v3 and r1, with more arguments.
fn verify(child: &Path, extra: &[&str]) -> std::process::Output {
    SpliceCmd::new("verify")
        .arg(child)
        .parent("v3", fixture("v3-q3mix.gguf"))
        .parent("r1", fixture("r1-iq2mix.gguf"))
        .args(extra)
        .output()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The SVG parses as XML, is an `<svg>` of positive size, and has `cells` rectangles
/// whose tooltip contains `what`.
fn check_svg(p: &Path, what: &str, cells: usize) {
    let text = std::fs::read_to_string(p).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the map is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    for dim in ["width", "height"] {
        let v: u32 = root.attribute(dim).unwrap().parse().unwrap();
        assert!(v > 100, "{dim} {v}");
    }
    let hits = doc
        .descendants()
        .filter(|n| n.has_tag_name("title") && n.text().is_some_and(|t| t.contains(what)))
        .count();
    assert_eq!(hits, cells, "cells saying {what:?}");
}

/// The PNG has PNG's signature and decodes to a picture of positive size.
fn check_png(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(info.width > 100 && info.height > 100, "{info:?}");
    // Not blank: some pixels are neither white nor black (the parents' colors).
    assert!(buf.chunks(3).any(|p| p[0] != p[1] || p[1] != p[2]));
}

#[test]
fn the_r1t_map_shows_exactly_the_routed_experts_from_r1() {
    let dir = tempfile::tempdir().unwrap();
    let child = chimera(dir.path());
    let json_path = dir.path().join("map.json");
    let o = verify(&child, &["--map", json_path.to_str().unwrap()]);
    assert_ok(&o);
    let map = read_json(&json_path);
    assert_eq!(map["kind"], "provenance");
    assert_eq!(map["parents"], json!(["v3", "r1"]));
    // Rows: the tensors outside blocks, then blocks 0 (dense), 1 and 2 (MoE).
    assert_eq!(map["rows"], json!([null, 0, 1, 2]));
    let panels = map["panels"].as_array().unwrap();
    let names: Vec<&str> = panels.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"]);
    let r1 = json!({"parents": ["r1"]});
    for p in panels {
        assert_eq!(p["experts"], 4);
        let rows = p["cells"].as_array().unwrap();
        // No experts outside blocks or in the dense block 0; every expert of 1-2 from r1.
        assert_eq!(rows[0], json!([null, null, null, null]), "{}", p["name"]);
        assert_eq!(rows[1], json!([null, null, null, null]), "{}", p["name"]);
        for row in &rows[2..] {
            assert_eq!(*row, json!([r1, r1, r1, r1]), "{}", p["name"]);
        }
    }
    // Everything else comes from v3 (the fixtures' parents differ in every tensor).
    let strip = &map["strip"];
    assert_eq!(
        strip["roles"],
        json!([
            "embeddings",
            "attention",
            "norms",
            "dense_ffn",
            "router",
            "shared_experts",
            "output"
        ])
    );
    let v3 = json!({"parents": ["v3"]});
    let mut filled = 0;
    for row in strip["cells"].as_array().unwrap() {
        for c in row.as_array().unwrap() {
            if !c.is_null() {
                assert_eq!(*c, v3);
                filled += 1;
            }
        }
    }
    // Outside blocks: embeddings, norms, output; block 0: attention, norms, dense FFN;
    // blocks 1-2: attention, norms, router, shared experts.
    assert_eq!(filled, 3 + 3 + 2 * 4);

    // The pictures of the same data.
    let svg = dir.path().join("map.svg");
    assert_ok(&verify(&child, &["--map", svg.to_str().unwrap()]));
    check_svg(&svg, "from r1", 2 * 3 * 4);
    check_svg(&svg, "from v3", filled);
    let png = dir.path().join("map.png");
    assert_ok(&verify(&child, &["--map", png.to_str().unwrap()]));
    check_png(&png);

    // The terminal grid: letters without a terminal, no color escapes.
    let o = verify(&child, &["--grid"]);
    assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!text.contains('\x1b'), "{text}");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(line.contains("rrrr"), "{text}");
    assert_eq!(line.matches("rrrr").count(), 3, "{text}");
}

#[test]
fn a_map_needs_a_known_format_and_is_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let child = chimera(dir.path());
    let o = verify(
        &child,
        &["--map", dir.path().join("m.gif").to_str().unwrap()],
    );
    assert_exit(&o, 2);
    assert!(stderr(&o).contains(".svg, .png or .json"), "{}", stderr(&o));
    // --grid prints to stdout, so it cannot share it with --json.
    assert_exit(&verify(&child, &["--json", "--grid"]), 2);
    // No directory: an I/O error naming the map, and no temporary file left behind.
    let missing = dir.path().join("no/such/dir/m.svg");
    let o = verify(&child, &["--map", missing.to_str().unwrap()]);
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("m.svg"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[test]
fn the_r1t_distance_map_against_v3_shows_exactly_the_routed_experts_changed() {
    if !have(
        "the_r1t_distance_map_against_v3_shows_exactly_the_routed_experts_changed",
        &[Oracle::Ggml],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let child = chimera(dir.path());
    let json_path = dir.path().join("d.json");
    let o = run(&[
        "diff",
        child.to_str().unwrap(),
        &fixture_arg("v3-q3mix.gguf"),
        "--map",
        json_path.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let map = read_json(&json_path);
    assert_eq!(map["kind"], "distance");
    for p in map["panels"].as_array().unwrap() {
        for row in &p["cells"].as_array().unwrap()[2..] {
            for c in row.as_array().unwrap() {
                // R1's experts (IQ2_XXS) against V3's (Q3_K): other weights entirely.
                let d = c["distance"].as_f64().unwrap();
                assert!(d > 1.3, "{}: {d}", p["name"]);
            }
        }
    }
    for row in map["strip"]["cells"].as_array().unwrap() {
        for c in row.as_array().unwrap() {
            assert!(c.is_null() || c["distance"] == 0.0, "{c}");
        }
    }
    assert!(map["scale_max"].as_f64().unwrap() > 1.3);
    for ext in ["svg", "png"] {
        let p = dir.path().join(format!("d.{ext}"));
        let o = run(&[
            "diff",
            child.to_str().unwrap(),
            &fixture_arg("v3-q3mix.gguf"),
            "--values",
            "--map",
            p.to_str().unwrap(),
        ]);
        assert_ok(&o);
        if ext == "svg" {
            check_svg(&p, "_exps expert", 2 * 3 * 4);
        } else {
            check_png(&p);
        }
    }
}

/// A PNG's width and height, from its header.
fn png_size(p: &Path) -> (u32, u32) {
    let bytes = std::fs::read(p).unwrap();
    let at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (at(16), at(20))
}

#[test]
fn a_map_says_where_it_went_is_sized_for_a_screen_and_keys_every_color() {
    let dir = tempfile::tempdir().unwrap();
    let child = chimera(dir.path());
    let png = dir.path().join("map.png");
    let o = verify(&child, &["--map", png.to_str().unwrap()]);
    assert_ok(&o);
    let (w, h) = png_size(&png);
    assert!(
        stderr(&o).contains(&format!(
            "wrote the map to {} (PNG, {w} x {h} pixels, scale 2)",
            png.display()
        )),
        "{}",
        stderr(&o)
    );
    // Scaled for a screen by default; --map-scale chooses.
    assert!(w >= 1600, "{w}");
    let one = dir.path().join("one.png");
    assert_ok(&verify(
        &child,
        &["--map", one.to_str().unwrap(), "--map-scale", "1"],
    ));
    assert_eq!(png_size(&one), (w / 2, h / 2));
    check_png(&one);
    assert_exit(&verify(&child, &["--map", "x.png", "--map-scale", "9"]), 2);

    // The key: the blank cells (no experts in the dense block 0) are explained, and the
    // strip's note names only its own columns (routed experts are the panels).
    let svg = dir.path().join("map.svg");
    let o = verify(&child, &["--map", svg.to_str().unwrap()]);
    assert!(stderr(&o).contains("(SVG)"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    assert!(texts.iter().any(|t| t.starts_with("blank: ")), "{texts:?}");
    let note = texts
        .iter()
        .find(|t| t.contains("other tensors: "))
        .unwrap();
    assert!(!note.contains("exp "), "{note}");
    assert!(note.contains("shx shared experts"), "{note}");
}
