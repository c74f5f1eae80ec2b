using System.Diagnostics.Tracing;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>
/// Records each garbage collection's pause (the runtime's suspend-begin to restart-end events) and generation, so a
/// lateness or throughput figure can be set against what the collector stopped.
/// </summary>
internal sealed class GcPauseListener : EventListener
{
    private readonly Lock _lock = new();
    private readonly List<(DateTime At, double Milliseconds, int Generation)> _pauses = [];
    private DateTime _suspended;
    private DateTime _suspendedEnd;
    private int _generation = -1;
    private double _suspending;

    /// <summary>Gets the time spent stopping the threads (suspend-begin to suspend-end) summed over every pause.</summary>
    public double SuspendingMilliseconds
    {
        get
        {
            lock (_lock)
            {
                return _suspending;
            }
        }
    }

    /// <summary>Gets the time spent stopping the threads in the pauses that began at or after <paramref name="from"/>.</summary>
    public double SuspendingSince(DateTime from)
    {
        lock (_lock)
        {
            return _suspendingAfter.Where(p => p.At >= from).Sum(p => p.Milliseconds);
        }
    }

    private readonly List<(DateTime At, double Milliseconds)> _suspendingAfter = [];
    private readonly List<(DateTime At, long SurvivedGen0, long SurvivedGen1)> _survivals = [];

    /// <summary>
    /// Gets the bytes that survived generation 0 (moved into generation 1) and generation 1 (moved into generation 2),
    /// summed over the collections that ended between <paramref name="from"/> and <paramref name="to"/> (the runtime's
    /// GCHeapStats event, TotalPromotedSize0 and TotalPromotedSize1).
    /// </summary>
    public (long SurvivedGen0, long SurvivedGen1) Survived(DateTime from, DateTime to)
    {
        lock (_lock)
        {
            var window = _survivals.Where(s => s.At >= from && s.At <= to).ToList();
            return (window.Sum(s => s.SurvivedGen0), window.Sum(s => s.SurvivedGen1));
        }
    }

    public IReadOnlyList<(DateTime At, double Milliseconds, int Generation)> Pauses
    {
        get
        {
            lock (_lock)
            {
                return [.. _pauses];
            }
        }
    }

    public string Summary(DateTime from, DateTime to)
    {
        var pauses = Pauses.Where(p => p.At >= from && p.At <= to).ToList();
        if (pauses.Count == 0)
        {
            return "no GC pauses";
        }

        return FormattableString.Invariant(
            $"{pauses.Count} GC pauses (gen0 {pauses.Count(p => p.Generation == 0)}, gen1 {pauses.Count(p => p.Generation == 1)}, gen2 {pauses.Count(p => p.Generation == 2)}), {pauses.Sum(p => p.Milliseconds):N0} ms in all, longest {pauses.Max(p => p.Milliseconds):N1} ms (gen{pauses.MaxBy(p => p.Milliseconds).Generation})");
    }

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, EventLevel.Informational, (EventKeywords)0x1);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        switch (e.EventName)
        {
            case { } name when name.StartsWith("GCSuspendEEBegin", StringComparison.Ordinal):
                _suspended = e.TimeStamp;
                break;
            case { } name when name.StartsWith("GCSuspendEEEnd", StringComparison.Ordinal) && _suspended != default:
                _suspendedEnd = e.TimeStamp;
                lock (_lock)
                {
                    var ms = (_suspendedEnd - _suspended).TotalMilliseconds;
                    _suspending += ms;
                    _suspendingAfter.Add((_suspended, ms));
                }

                break;
            case { } name when name.StartsWith("GCHeapStats", StringComparison.Ordinal):
                lock (_lock)
                {
                    _survivals.Add((
                        e.TimeStamp,
                        Convert.ToInt64(e.Payload![e.PayloadNames!.IndexOf("TotalPromotedSize0")], System.Globalization.CultureInfo.InvariantCulture),
                        Convert.ToInt64(e.Payload![e.PayloadNames!.IndexOf("TotalPromotedSize1")], System.Globalization.CultureInfo.InvariantCulture)));
                }

                break;
            case { } name when name.StartsWith("GCStart", StringComparison.Ordinal):
                _generation = Convert.ToInt32(e.Payload![e.PayloadNames!.IndexOf("Depth")], System.Globalization.CultureInfo.InvariantCulture);
                break;
            case { } name when name.StartsWith("GCRestartEEEnd", StringComparison.Ordinal) && _suspended != default:
                lock (_lock)
                {
                    _pauses.Add((e.TimeStamp, (e.TimeStamp - _suspended).TotalMilliseconds, _generation));
                }

                _suspended = default;
                break;
        }
    }
}
