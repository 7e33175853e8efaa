//! Errors of this crate.

/// Metrics could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A configuration value is out of range.
    #[error("invalid `{field}` = {value}: expected {expected}")]
    Config {
        /// The setting.
        field: &'static str,
        /// The value given, as written by `Debug`.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// `Metrics::export_to` (feature `opentelemetry`) was called a second
    /// time: the instruments are registered once per [`Metrics`](crate::Metrics).
    #[error("these metrics are already exported to an OpenTelemetry meter")]
    AlreadyExported,
}

impl MetricsError {
    pub(crate) fn config(
        field: &'static str,
        value: impl std::fmt::Debug,
        expected: &'static str,
    ) -> Self {
        MetricsError::Config {
            field,
            value: format!("{value:?}"),
            expected,
        }
    }
}
