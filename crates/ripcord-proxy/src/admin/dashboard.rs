//! The dashboard's static files, embedded in the binary: no build step and
//! nothing loaded from elsewhere.

/// The page (`/`).
pub(super) const INDEX_HTML: &str = include_str!("../dashboard/index.html");
/// Its script (`/dashboard.js`).
pub(super) const SCRIPT: &str = include_str!("../dashboard/dashboard.js");
/// Its stylesheet (`/dashboard.css`).
pub(super) const STYLE: &str = include_str!("../dashboard/dashboard.css");
/// Its icon (`/favicon.svg`).
pub(super) const ICON: &str = include_str!("../dashboard/favicon.svg");
