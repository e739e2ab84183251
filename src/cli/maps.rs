//! `--map FILE` and `--grid` of `diff` and `verify`: where a map is written (format by
//! extension, through a temporary file renamed into place) and the terminal grid.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::CliError;
use gguf_splice::compare::VerifyReport;
use gguf_splice::render::{self, map::Map};
use gguf_splice::roles::cut::is_stacked_experts;

/// Where to draw a map, and in which format (by the file's extension).
#[derive(Clone, Debug)]
pub(crate) struct MapPath {
    /// The file to write.
    pub(crate) path: PathBuf,
    /// Its format, from its extension.
    format: MapFormat,
}

/// `--map-scale N`: 1 to [`render::map::MAX_PNG_SCALE`].
pub(crate) fn parse_map_scale(s: &str) -> Result<u32, String> {
    let max = render::map::MAX_PNG_SCALE;
    match s.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{s}': a whole number from 1 to {max}")),
    }
}

/// The formats a map is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapFormat {
    /// A picture to view in a browser (hover shows each cell's numbers).
    Svg,
    /// A picture to view anywhere.
    Png,
    /// The numbers behind the picture.
    Json,
}

/// `--map FILE`: the format by the file's extension.
pub(crate) fn parse_map_path(s: &str) -> Result<MapPath, String> {
    let path = PathBuf::from(s);
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let format = match ext.as_deref() {
        Some("svg") => MapFormat::Svg,
        Some("png") => MapFormat::Png,
        Some("json") => MapFormat::Json,
        _ => {
            return Err(format!(
                "'{s}': a map is written as .svg, .png or .json (for the terminal, use --grid)"
            ));
        }
    };
    Ok(MapPath { path, format })
}

/// Write a map to its file (a PNG at `scale`, see [`render::map::map_png`]): to a temporary
/// file beside it, then renamed into place; then say where it went.
pub(crate) fn write_map(to: &MapPath, map: &Map, scale: Option<u32>) -> Result<(), CliError> {
    let err = |source| CliError::Map {
        path: to.path.clone(),
        source,
    };
    let (bytes, what) = match to.format {
        MapFormat::Svg => (render::map::map_svg(map).into_bytes(), "SVG".to_string()),
        MapFormat::Png => {
            let png = render::map::map_png(map, scale).map_err(err)?;
            let what = format!(
                "PNG, {} x {} pixels, scale {}",
                png.width, png.height, png.scale
            );
            (png.bytes, what)
        }
        MapFormat::Json => {
            let mut t =
                serde_json::to_string_pretty(&map.to_json()).expect("JSON values serialise");
            t.push('\n');
            (t.into_bytes(), "JSON".to_string())
        }
    };
    let dir = match to.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".gguf-splice-map")
        // A new file's usual mode (0666 & ~umask), not a temporary file's 0600.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(err)?;
    use std::io::Write;
    tmp.write_all(&bytes).map_err(err)?;
    tmp.persist(&to.path).map_err(|e| err(e.error))?;
    super::say(format_args!(
        "wrote the map to {} ({what})",
        to.path.display()
    ));
    Ok(())
}

/// The terminal grid of a map, sized to the terminal (or `COLUMNS`, else 160 columns).
pub(crate) fn grid(map: &Map) -> String {
    let tty = std::io::stdout().is_terminal();
    let width = terminal_width()
        .filter(|_| tty)
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .unwrap_or(160);
    let color = tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    render::map::map_term(map, &render::map::TermOptions { width, color })
}

/// The width of the terminal on stdout.
fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points to
    // one; on failure (not a terminal) it writes nothing and returns -1.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// The most experts one tensor of a map may have: DeepSeek has 256, and no picture shows
/// more than a few thousand columns.
pub(crate) const MAX_MAP_EXPERTS: u64 = 1 << 16;

/// Refuse to draw a child whose stacked expert tensors claim more experts than
/// [`MAX_MAP_EXPERTS`]: the map would hold a cell for each.
pub(crate) fn check_drawable(r: &VerifyReport) -> Result<(), CliError> {
    let too_many = r.tensors.iter().find(|t| {
        is_stacked_experts(&t.name) && t.dims.last().is_some_and(|&n| n > MAX_MAP_EXPERTS)
    });
    match too_many {
        Some(t) => Err(CliError::Usage(format!(
            "tensor '{}' has {} experts; a map draws at most {MAX_MAP_EXPERTS} per tensor (the report is complete without --map and --grid)",
            t.name,
            t.dims.last().copied().unwrap_or(0)
        ))),
        None => Ok(()),
    }
}
