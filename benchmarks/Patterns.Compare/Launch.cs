using System.Diagnostics;
using System.Text.Json;

namespace Patterns.Compare;

/// <summary>What one launch of one row measured.</summary>
public sealed record LaunchResult(
    string Row,
    int Messages,
    double Seconds,
    double CpuSeconds,
    long AllocatedBytes,
    long PeakWorkingSetBytes,
    double P50Microseconds,
    double P99Microseconds,
    int LatencySamples)
{
    /// <summary>Gets the messages per second.</summary>
    public double Throughput => Messages / Seconds;

    /// <summary>Gets the CPU time of the whole process per message, in microseconds.</summary>
    public double CpuMicrosecondsPerMessage => CpuSeconds * 1e6 / Messages;

    /// <summary>Gets the bytes allocated by the whole process per message.</summary>
    public double BytesPerMessage => (double)AllocatedBytes / Messages;
}

/// <summary>Runs one row once, in this process (the child side of a launch), and prints its result as one JSON line.</summary>
public static class Launch
{
    /// <summary>The prefix of the line that carries the result.</summary>
    public const string ResultMarker = "@@RESULT ";

    /// <summary>Sequences between the warm-up and the measured run, so their orders (and windows) never meet.</summary>
    private const int Gap = 10_000;

    /// <summary>Runs <paramref name="row"/> with <paramref name="messages"/> measured orders after a warm-up; returns the exit code.</summary>
    public static async Task<int> RunAsync(Row row, int messages, TimeSpan timeout)
    {
        using var cancellation = new CancellationTokenSource(timeout);
        var warmUp = Math.Clamp(messages / 10, 100, 5_000);
        var scenario = row.Create();
        var context = new RunContext(2 * (messages + warmUp));
        try
        {
            await scenario.StartAsync(context, cancellation.Token);
            await scenario.PrepareAsync(0, warmUp, cancellation.Token);
            await scenario.RunAsync(0, warmUp, cancellation.Token);
            await scenario.PrepareAsync(warmUp + Gap, messages, cancellation.Token);
            context.Deliveries.Reset();
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();

            using var process = Process.GetCurrentProcess();
            var cpu = process.TotalProcessorTime;
            var allocated = GC.GetTotalAllocatedBytes(precise: true);
            var started = Stopwatch.GetTimestamp();
            await scenario.RunAsync(warmUp + Gap, messages, cancellation.Token);
            var elapsed = Stopwatch.GetElapsedTime(started);
            allocated = GC.GetTotalAllocatedBytes(precise: true) - allocated;
            process.Refresh();
            var cpuUsed = process.TotalProcessorTime - cpu;
            var latencies = context.Deliveries.SortedMicroseconds(scenario.SparseLatencies);
            var result = new LaunchResult(
                row.Id,
                messages,
                elapsed.TotalSeconds,
                cpuUsed.TotalSeconds,
                allocated,
                process.PeakWorkingSet64,
                Percentile(latencies, 0.50),
                Percentile(latencies, 0.99),
                latencies.Length);
            Console.WriteLine(ResultMarker + JsonSerializer.Serialize(result));
            return 0;
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            await Console.Error.WriteLineAsync($"{row.Id}: no result within {timeout.TotalSeconds:0} s ({context.Deliveries.Count} deliveries recorded)");
            return 2;
        }
        finally
        {
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await scenario.DisposeAsync().AsTask().WaitAsync(stop.Token);
        }
    }

    /// <summary>The nearest-rank percentile of sorted values (0 when there are none).</summary>
    public static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
}
