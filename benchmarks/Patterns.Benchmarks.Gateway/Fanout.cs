using System.Diagnostics;
using System.Globalization;

namespace Patterns.Benchmarks.Gateway;

internal sealed record FanoutResult(double DeliveredPerSecond, double DeliveredShare, double P50, double P99, double PeakRssMb, double ServerCpuSeconds);

/// <summary>Many SSE clients reading one topic; latency is receive time minus the publish timestamp (one monotonic clock for both processes).</summary>
internal static class Fanout
{
    private const int BucketMicros = 100;
    private const int Buckets = 100_000;

    public static async Task<FanoutResult> RunAsync(string baseUrl, int clients, int rate, int seconds, Process server)
    {
        using var handler = new SocketsHttpHandler { MaxConnectionsPerServer = int.MaxValue, UseProxy = false };
        using var client = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        var histogram = new long[Buckets];
        long delivered = 0;
        using var stop = new CancellationTokenSource();
        var connected = 0;
        var readers = new List<Task>();
        for (var i = 0; i < clients; i++)
        {
            readers.Add(Task.Run(async () =>
            {
                using var response = await client.GetAsync(baseUrl + "/sse", HttpCompletionOption.ResponseHeadersRead, stop.Token);
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(stop.Token));
                Interlocked.Increment(ref connected);
                try
                {
                    while (await reader.ReadLineAsync(stop.Token) is { } line)
                    {
                        if (!line.StartsWith("data: ", StringComparison.Ordinal))
                        {
                            continue;
                        }

                        var sentAt = line.IndexOf("\"sent\":", StringComparison.Ordinal) + 7;
                        var end = line.IndexOf(',', sentAt);
                        var sent = long.Parse(line.AsSpan(sentAt, end - sentAt), CultureInfo.InvariantCulture);
                        var micros = (Stopwatch.GetTimestamp() - sent) * 1_000_000 / Stopwatch.Frequency;
                        Interlocked.Increment(ref histogram[Math.Clamp(micros / BucketMicros, 0, Buckets - 1)]);
                        Interlocked.Increment(ref delivered);
                    }
                }
                catch (OperationCanceledException)
                {
                }
            }));
        }

        while (Volatile.Read(ref connected) < clients)
        {
            await Task.Delay(50);
        }

        server.Refresh();
        var cpuBefore = server.TotalProcessorTime;
        var started = Stopwatch.GetTimestamp();
        (await client.PostAsync(baseUrl + "/start", null)).EnsureSuccessStatusCode();
        var expected = (long)clients * rate * seconds;
        var deadline = Stopwatch.GetTimestamp() + (seconds + 10) * Stopwatch.Frequency;
        while (Interlocked.Read(ref delivered) < expected && Stopwatch.GetTimestamp() < deadline)
        {
            await Task.Delay(100);
        }

        var elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds;
        server.Refresh();
        var cpu = (server.TotalProcessorTime - cpuBefore).TotalSeconds;
        var peak = PeakRssMb(server.Id);
        await stop.CancelAsync();
        try
        {
            await Task.WhenAll(readers);
        }
        catch (Exception ex) when (ex is OperationCanceledException or HttpRequestException or IOException)
        {
        }

        var total = Interlocked.Read(ref delivered);
        return new FanoutResult(total / Math.Max(elapsed, seconds), (double)total / expected, Percentile(histogram, total, 0.50), Percentile(histogram, total, 0.99), peak, cpu);
    }

    private static double Percentile(long[] histogram, long total, double q)
    {
        var target = (long)Math.Ceiling(total * q);
        long seen = 0;
        for (var i = 0; i < histogram.Length; i++)
        {
            seen += histogram[i];
            if (seen >= target)
            {
                return (i + 1) * BucketMicros / 1000.0;
            }
        }

        return double.NaN;
    }

    private static double PeakRssMb(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
            }
        }

        return double.NaN;
    }
}
