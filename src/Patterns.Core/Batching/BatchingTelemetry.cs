using System.Diagnostics.Metrics;
using Patterns.Telemetry;

namespace Patterns.Batching;

/// <summary>Instruments of batching, on the package's one <see cref="Meter"/>.</summary>
internal static class BatchingTelemetry
{
    public const string InProcessSystem = "patterns.batcher";

    public static readonly Histogram<int> BatchSize = PatternsTelemetry.Meter.CreateHistogram<int>(
        "patterns.batch.size", "{item}", "Items in each batch handed to a batch handler.");
}
