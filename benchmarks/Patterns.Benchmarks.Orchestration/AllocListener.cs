using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

namespace Patterns.Benchmarks.Orchestration;

/// <summary>Samples allocations by type (the runtime's AllocationTick, about one per 100 KB) for a stopwatch run.</summary>
internal sealed class AllocListener : EventListener
{
    public readonly ConcurrentDictionary<string, long> Bytes = new();

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName == "GCAllocationTick_V4" || e.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) == true)
        {
            var name = e.Payload![e.PayloadNames!.IndexOf("TypeName")] as string ?? "?";
            var amount = Convert.ToInt64(e.Payload![e.PayloadNames!.IndexOf("AllocationAmount64")]);
            Bytes.AddOrUpdate(name, amount, (_, v) => v + amount);
        }
    }

    public void Print(int top)
    {
        var total = Bytes.Values.Sum();
        foreach (var (name, bytes) in Bytes.OrderByDescending(p => p.Value).Take(top))
        {
            Console.WriteLine($"{bytes * 100.0 / total,6:N1}%  {name}");
        }
    }
}
