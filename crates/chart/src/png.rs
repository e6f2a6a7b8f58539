//! SVG → PNG with resvg, the text set in a system sans-serif font.

use std::sync::OnceLock;

use resvg::{tiny_skia, usvg};

use crate::ChartError;

/// Families tried for the charts' `sans-serif` text, in order (then any font found).
const PREFERRED: [&str; 4] = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "FreeSans"];

/// The system's fonts, loaded once per process, with `sans-serif` mapped to a family that
/// exists; `None` when the system has no font (the PNG would have no text).
fn fonts() -> Option<&'static std::sync::Arc<usvg::fontdb::Database>> {
    static FONTS: OnceLock<Option<std::sync::Arc<usvg::fontdb::Database>>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            let families: Vec<String> = db
                .faces()
                .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
                .collect();
            let family = PREFERRED
                .iter()
                .map(|p| p.to_string())
                .find(|p| families.contains(p))
                .or_else(|| families.first().cloned())?;
            db.set_sans_serif_family(family);
            Some(std::sync::Arc::new(db))
        })
        .as_ref()
}

/// The PNG of `svg`, or `None` when no font is available.
pub(crate) fn render(svg: &str) -> Result<Option<Vec<u8>>, ChartError> {
    let Some(fonts) = fonts() else {
        return Ok(None);
    };
    let options = usvg::Options {
        fontdb: fonts.clone(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| ChartError::Png(e.to_string()))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| ChartError::Png(format!("an empty canvas ({size:?})")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map(Some)
        .map_err(|e| ChartError::Png(e.to_string()))
}
