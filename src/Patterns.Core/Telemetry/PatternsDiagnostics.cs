namespace Patterns.Telemetry;

/// <summary>Names to subscribe to when collecting Patterns telemetry with OpenTelemetry.</summary>
/// <remarks>
/// Tracing: <c>AddSource(PatternsDiagnostics.ActivitySourceName)</c>; metrics: <c>AddMeter(PatternsDiagnostics.MeterName)</c>.
/// Spans and instruments follow the OpenTelemetry messaging semantic conventions. Nothing is recorded,
/// and nothing allocated, while nobody listens.
/// </remarks>
public static class PatternsDiagnostics
{
    /// <summary>The name of the <see cref="System.Diagnostics.ActivitySource"/>.</summary>
    public const string ActivitySourceName = "Patterns";

    /// <summary>The name of the <see cref="System.Diagnostics.Metrics.Meter"/>.</summary>
    public const string MeterName = "Patterns";
}
