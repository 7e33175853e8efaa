//! The admin listener: `/metrics`, the admin API and the live dashboard.
