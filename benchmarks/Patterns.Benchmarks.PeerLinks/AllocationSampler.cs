using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Patterns.Benchmarks.PeerLinks;

/// <summary>
/// Samples the runtime's allocation ticks (one event about every 100 KB allocated, with the type that crossed it) and
/// prints the types that took the most, for <c>--rough-pair</c> with <c>PEERLINKS_ALLOCATIONS=1</c> (a diagnostic, not a report).
/// </summary>
internal sealed class AllocationSampler : EventListener
{
    private readonly ConcurrentDictionary<string, long> _bytes = new(StringComparer.Ordinal);
    private volatile bool _on;

    public void Start() => _on = true;

    public void Stop() => _on = false;

    protected override void OnEventSourceCreated(EventSource eventSource)
    {
        if (eventSource.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(eventSource, EventLevel.Verbose, (EventKeywords)0x1);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs eventData)
    {
        if (!_on || eventData.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) != true || eventData.Payload is null)
        {
            return;
        }

        var names = eventData.PayloadNames!;
        var type = names.IndexOf("TypeName") is var t and >= 0 ? eventData.Payload[t] as string ?? "?" : "?";
        var amount = names.IndexOf("AllocationAmount64") is var a and >= 0 ? Convert.ToInt64(eventData.Payload[a], System.Globalization.CultureInfo.InvariantCulture) : 100_000;
        _bytes.AddOrUpdate(type, amount, (_, n) => n + amount);
    }

    public void Print(long messages)
    {
        Console.WriteLine($"sampled allocations by type (bytes per message, about):");
        foreach (var (type, bytes) in _bytes.OrderByDescending(p => p.Value).Take(30))
        {
            Console.WriteLine($"  {bytes / (double)messages,8:N1}  {type}");
        }
    }
}
