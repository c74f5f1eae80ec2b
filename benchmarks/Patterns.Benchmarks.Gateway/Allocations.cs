using System.Globalization;
using Microsoft.AspNetCore.Builder;

namespace Patterns.Benchmarks.Gateway;

/// <summary>
/// Bytes allocated per proxied request, in one process: the backend, plain YARP and the Patterns gateway (each variant) on
/// loopback Kestrel, driven by an in-process client. <see cref="GC.GetTotalAllocatedBytes(bool)"/> (precise) around a run of
/// requests counts every thread (the client's, Kestrel's, the gateway's continuations); the direct run (client and backend
/// only) is subtracted, so what is left is the gateway's own share, comparable between YARP and Patterns. Deterministic enough
/// to compare variants to within a few bytes, unlike requests/s on a shared machine.
/// </summary>
internal static class Allocations
{
    public static async Task RunAsync(int requests, int concurrency, int rounds, IReadOnlyList<string> configurations)
    {
        var backendPort = FreePort();
        var backend = Servers.BuildBackend(backendPort, 0);
        await backend.StartAsync();
        var backendUrl = $"http://127.0.0.1:{backendPort}";
        using var client = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = concurrency, UseProxy = false, UseCookies = false });
        Console.WriteLine($"{requests:N0} requests per round, {concurrency} at once, best and median of {rounds} rounds; bytes per request (gateway = total - direct)");
        var direct = await MeasureAsync(client, backendUrl + "/", requests, concurrency, rounds);
        Console.WriteLine($"{"direct",-18} total {direct.Best,8:N0} B (median {direct.Median:N0}); CPU {direct.Cpu,6:N1} µs (whole process, best round)");
        foreach (var configuration in configurations)
        {
            var parts = configuration.Split(':');
            var port = FreePort();
            var gateway = Servers.BuildGateway(port, parts[0], [backendUrl, backendUrl], masking: false, parts.Length > 1 ? parts[1] : "all");
            await gateway.StartAsync();
            var result = await MeasureAsync(client, $"http://127.0.0.1:{port}/", requests, concurrency, rounds);
            Console.WriteLine($"{configuration,-18} total {result.Best,8:N0} B (median {result.Median:N0}); gateway {result.Best - direct.Best,6:N0} B (median {result.Median - direct.Median:N0}); CPU {result.Cpu,6:N1} µs, gateway {result.Cpu - direct.Cpu,5:N1} µs");
            await gateway.StopAsync();
            await gateway.DisposeAsync();
        }

        await backend.StopAsync();
    }

    private static async Task<(double Best, double Median, double Cpu)> MeasureAsync(HttpClient client, string url, int requests, int concurrency, int rounds)
    {
        await SendAsync(client, url, Math.Max(2_000, requests / 5), concurrency);
        var results = new List<double>();
        var cpu = new List<double>();
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        for (var round = 0; round < rounds; round++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            self.Refresh();
            var cpuBefore = self.TotalProcessorTime;
            var before = GC.GetTotalAllocatedBytes(precise: true);
            await SendAsync(client, url, requests, concurrency);
            var after = GC.GetTotalAllocatedBytes(precise: true);
            self.Refresh();
            cpu.Add((self.TotalProcessorTime - cpuBefore).TotalMicroseconds / requests);
            results.Add((after - before) / (double)requests);
        }

        results.Sort();
        cpu.Sort();
        return (results[0], results[results.Count / 2], cpu[0]);
    }

    private static async Task SendAsync(HttpClient client, string url, int requests, int concurrency)
    {
        var remaining = requests;
        var workers = Enumerable.Range(0, concurrency).Select(_ => Task.Run(async () =>
        {
            var buffer = new byte[4096];
            while (Interlocked.Decrement(ref remaining) >= 0)
            {
                using var response = await client.GetAsync(url, HttpCompletionOption.ResponseHeadersRead);
                if (!response.IsSuccessStatusCode)
                {
                    throw new InvalidOperationException($"{url} answered {(int)response.StatusCode}.");
                }

                await using var body = await response.Content.ReadAsStreamAsync();
                while (await body.ReadAsync(buffer) > 0)
                {
                }
            }
        }));
        await Task.WhenAll(workers);
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    public static Task RunAsync(string[] args)
    {
        int Option(string name, int fallback) =>
            args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() is { } value ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;
        var configurations = args.Skip(1).TakeWhile(a => !a.StartsWith("--", StringComparison.Ordinal)).ToList();
        if (configurations.Count == 0)
        {
            configurations = ["yarp", "patterns:bare", "patterns:weighted", "patterns:outlier", "patterns"];
        }

        // The defaults are the setup docs/gateway.md reports: 20,000 requests per round, 16 at once, 5 rounds.
        return RunAsync(Option("--requests", 20_000), Option("--concurrency", 16), Option("--rounds", 5), configurations);
    }
}
