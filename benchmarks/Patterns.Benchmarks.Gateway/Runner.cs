using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Patterns.Benchmarks.Gateway;

/// <summary>Starts servers as child processes, loads them with wrk (a second process), and writes the markdown reports.</summary>
internal sealed partial class Runner(int seconds, string output, int rounds = 5)
{
    private const int Connections = 32;
    private readonly List<Process> _children = [];
    private int _nextPort = 18_000 + (Environment.ProcessId % 1000) * 10;

    public async Task RunAsync(string filter)
    {
        Directory.CreateDirectory(output);
        try
        {
            if (Matches(filter, "GatewayOverhead"))
            {
                await OverheadAsync();
            }

            if (Matches(filter, "GatewayFailureMasking"))
            {
                await FailureMaskingAsync();
            }

            if (Matches(filter, "GatewayToRequestResponse"))
            {
                await RequestResponseAsync();
            }

            if (Matches(filter, "PushFanout"))
            {
                await PushFanoutAsync();
            }
        }
        finally
        {
            StopAll();
        }
    }

    private static bool Matches(string filter, string name) => filter == "*" || name.Contains(filter.Trim('*'), StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Direct, Yarp and Patterns side by side: all three servers run for the whole measurement, each gets the same warm-up,
    /// then <c>rounds</c> rounds of <c>seconds</c> each load every row once, Yarp and Patterns taking turns at going first, so
    /// a drift of the shared machine falls on both alike. Each row reports the median of its rounds with the min-max; the
    /// Patterns / Yarp ratios are the ratios of the medians, with the spread of the per-round ratios (paired in the round).
    /// </summary>
    private async Task OverheadAsync()
    {
        var backendPort = Port();
        var backend = await StartAsync(backendPort, "backend", backendPort.ToString(CultureInfo.InvariantCulture));
        var backendUrl = $"http://127.0.0.1:{backendPort}";
        var yarpPort = Port();
        var yarp = await StartAsync(yarpPort, "gateway", yarpPort.ToString(CultureInfo.InvariantCulture), "yarp", $"{backendUrl},{backendUrl}");
        var patternsPort = Port();
        var patterns = await StartAsync(patternsPort, "gateway", patternsPort.ToString(CultureInfo.InvariantCulture), "patterns", $"{backendUrl},{backendUrl}");
        (string Name, string Url, Process Process)[] targets =
        [
            ("Direct", backendUrl + "/", backend),
            ("Yarp", $"http://127.0.0.1:{yarpPort}/", yarp),
            ("Patterns", $"http://127.0.0.1:{patternsPort}/", patterns),
        ];
        foreach (var target in targets)
        {
            await WrkAsync(target.Url, Math.Min(3, seconds), script: null);
        }

        var results = targets.ToDictionary(t => t.Name, _ => new List<LoadResult>());
        for (var round = 0; round < rounds; round++)
        {
            // Direct first in every round; Yarp and Patterns alternate which of them goes next (Y P, P Y, ...).
            int[] order = round % 2 == 0 ? [0, 1, 2] : [0, 2, 1];
            foreach (var i in order)
            {
                Console.Write($"round {round + 1}/{rounds} ");
                results[targets[i].Name].Add(await LoadAsync(targets[i].Url, [targets[i].Process], warmup: false));
            }
        }

        Stop(patterns);
        Stop(yarp);
        var rows = targets.Select(t => t.Name).ToList();
        var nginx = await NginxAsync(backendPort);
        if (nginx is not null)
        {
            results["nginx"] = nginx;
            rows.Add("nginx");
        }

        Stop(backend);
        var direct = Median(results["Direct"], r => r.RequestsPerSecond);
        var report = new StringBuilder();
        report.AppendLine("# GatewayOverhead");
        report.AppendLine();
        Header(report, "the gateway process (Direct: the backend process)", warmup: $"a {Math.Min(3, seconds)} s warm-up of each row");
        report.AppendLine($"Interleaved: the backend and both gateways run throughout; {rounds} rounds of {seconds} s, each loading Direct, then Yarp and Patterns " +
            "taking turns at going first. Each cell is the median of the rounds, min-max below it; nginx (when installed) runs after the rounds, " +
            $"{Math.Min(3, rounds)} times. Per-round ratios pair Patterns with the Yarp run of the same round.");
        report.AppendLine();
        report.AppendLine("| Method | Requests/s | Ratio to Direct | p50 ms | p90 ms | p99 ms | CPU µs/request | Non-2xx |");
        report.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var name in rows)
        {
            var runs = results[name];
            report.AppendLine($"| {name} | {Spread(runs, r => r.RequestsPerSecond, "N0")} | {Median(runs, r => r.RequestsPerSecond) / direct:F2} " +
                $"| {Spread(runs, r => r.P50, "F2")} | {Spread(runs, r => r.P90, "F2")} | {Spread(runs, r => r.P99, "F2")} " +
                $"| {Spread(runs, r => r.CpuMicrosPerRequest, "F1")} | {runs.Sum(r => r.NonSuccess)} |");
        }

        var throughput = RatioOfMedians(results["Patterns"], results["Yarp"], r => r.RequestsPerSecond);
        var cpu = RatioOfMedians(results["Patterns"], results["Yarp"], r => r.CpuMicrosPerRequest);
        report.AppendLine();
        report.AppendLine("| Patterns / Yarp | Ratio of medians | Per-round ratios (min-max) | Spread | Target | Met |");
        report.AppendLine("|---|---:|---:|---|---|---|");
        report.AppendLine($"| Requests/s | {throughput.Ratio:P1} | {throughput.Min:P1}-{throughput.Max:P1} | {Stability(throughput, rounds)} | ≥ 95% | {Met(throughput, throughput.Ratio >= 0.95)} |");
        report.AppendLine($"| CPU per request | {cpu.Ratio:F2}× | {cpu.Min:F2}×-{cpu.Max:F2}× | {Stability(cpu, rounds)} | ≤ 1.10× | {Met(cpu, cpu.Ratio <= 1.10)} |");
        report.AppendLine();
        report.AppendLine("A ratio is marked unstable when a per-round ratio lies more than ±10% from the ratio of the medians; its verdict then says so.");
        await WriteAsync("GatewayOverhead-report-github.md", report.ToString());
    }

    private static double Median(List<LoadResult> runs, Func<LoadResult, double> value)
    {
        var sorted = runs.Select(value).Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string Spread(List<LoadResult> runs, Func<LoadResult, double> value, string format)
    {
        var median = Median(runs, value).ToString(format, CultureInfo.InvariantCulture);
        return runs.Count == 1
            ? median
            : $"{median}<br>({runs.Min(value).ToString(format, CultureInfo.InvariantCulture)}-{runs.Max(value).ToString(format, CultureInfo.InvariantCulture)})";
    }

    /// <summary>The ratio of the medians of <paramref name="a"/> and <paramref name="b"/>, and the range of the per-round ratios (round i of one over round i of the other).</summary>
    private static (double Ratio, double Min, double Max) RatioOfMedians(List<LoadResult> a, List<LoadResult> b, Func<LoadResult, double> value)
    {
        var paired = a.Zip(b, (x, y) => value(x) / value(y)).ToArray();
        return (Median(a, value) / Median(b, value), paired.Min(), paired.Max());
    }

    private static bool Unstable((double Ratio, double Min, double Max) r) => r.Min < r.Ratio * 0.9 || r.Max > r.Ratio * 1.1;

    private static string Stability((double Ratio, double Min, double Max) r, int rounds) =>
        rounds < 2 ? "one round: no spread to judge" : Unstable(r) ? "**unstable** (beyond ±10%)" : "within ±10%";

    private static string Met((double Ratio, double Min, double Max) r, bool met) => (met ? "yes" : "no") + (Unstable(r) ? " (unstable)" : string.Empty);

    private async Task FailureMaskingAsync()
    {
        var report = new StringBuilder();
        report.AppendLine("# GatewayFailureMasking");
        report.AppendLine();
        Header(report, "the gateway process");
        report.AppendLine("Three destinations; one answers 503 to 30% of its requests.");
        report.AppendLine();
        report.AppendLine("| Method | Requests/s | Client success | Upstream attempts / request | p99 ms | CPU µs/request |");
        report.AppendLine("|---|---:|---:|---:|---:|---:|");
        foreach (var mode in new[] { "yarp", "patterns" })
        {
            var ports = new[] { Port(), Port(), Port() };
            var backends = new List<Process>();
            for (var i = 0; i < 3; i++)
            {
                backends.Add(await StartAsync(ports[i], "backend", ports[i].ToString(CultureInfo.InvariantCulture), i == 2 ? "0.3" : "0"));
            }

            var gatewayPort = Port();
            var destinations = string.Join(',', ports.Select(p => $"http://127.0.0.1:{p}"));
            var gateway = await StartAsync(gatewayPort, "gateway", gatewayPort.ToString(CultureInfo.InvariantCulture), mode, destinations, "masking");
            var before = await HitsAsync(ports);
            var result = await LoadAsync($"http://127.0.0.1:{gatewayPort}/", [gateway], warmup: false);
            var attempts = await HitsAsync(ports) - before;
            Stop(gateway);
            foreach (var b in backends)
            {
                Stop(b);
            }

            var success = 1 - (double)result.NonSuccess / result.Requests;
            report.AppendLine($"| {(mode == "yarp" ? "Yarp" : "Patterns")} | {result.RequestsPerSecond:N0} | {success:P3} | {(double)attempts / result.Requests:F3} | {result.P99:F2} | {result.CpuMicrosPerRequest:F1} |");
        }

        report.AppendLine();
        report.AppendLine("Targets for Patterns: client success ≥ 99.9% with ≤ 1.2 upstream attempts per request.");
        await WriteAsync("GatewayFailureMasking-report-github.md", report.ToString());
    }

    private async Task RequestResponseAsync()
    {
        var port = Port();
        var server = await StartAsync(port, "rr", port.ToString(CultureInfo.InvariantCulture));
        var script = Path.Combine(Path.GetTempPath(), $"gateway-bench-{Environment.ProcessId}.lua");
        await File.WriteAllTextAsync(script, "wrk.method = \"POST\"\nwrk.body = '{\"symbol\":\"ACME\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n");
        var minimal = await LoadAsync($"http://127.0.0.1:{port}/minimal/quote", [server], script: script);
        var gateway = await LoadAsync($"http://127.0.0.1:{port}/gateway/quote", [server], script: script);
        Stop(server);
        var report = new StringBuilder();
        report.AppendLine("# GatewayToRequestResponse");
        report.AppendLine();
        Header(report, "the server process");
        report.AppendLine("POST of a JSON request to an in-process handler: a minimal-API endpoint calling the code directly (baseline) against the gateway's `MapRequest` route calling the handler registered with `AddRequestResponse`.");
        report.AppendLine();
        report.AppendLine("| Method | Requests/s | Ratio | p50 ms | p90 ms | p99 ms | CPU µs/request | Non-2xx |");
        report.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        report.AppendLine("| " + string.Join(" | ", Row("MinimalApi", minimal, minimal)) + " |");
        report.AppendLine("| " + string.Join(" | ", Row("GatewayMapRequest", gateway, minimal)) + " |");
        report.AppendLine();
        report.AppendLine($"Gateway / minimal API: {gateway.RequestsPerSecond / minimal.RequestsPerSecond:P1} of the requests/s (target ≥ 80%).");
        await WriteAsync("GatewayToRequestResponse-report-github.md", report.ToString());
    }

    private async Task PushFanoutAsync()
    {
        const int clients = 1000, rate = 1000;
        var port = Port();
        var server = await StartAsync(port, "push", port.ToString(CultureInfo.InvariantCulture), rate.ToString(CultureInfo.InvariantCulture), seconds.ToString(CultureInfo.InvariantCulture));
        var result = await Fanout.RunAsync($"http://127.0.0.1:{port}", clients, rate, seconds, server);
        Stop(server);
        var report = new StringBuilder();
        report.AppendLine("# PushFanout");
        report.AppendLine();
        Header(report, "the server process");
        report.AppendLine($"{clients} Server-Sent Events clients (in the runner process) on one topic; the server publishes {rate} messages/s for {seconds} s.");
        report.AppendLine();
        report.AppendLine("| Clients | Published msg/s | Delivered msg/s | Delivered / expected | p50 latency ms | p99 latency ms | Server RSS peak MB | Server CPU s |");
        report.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|");
        report.AppendLine($"| {clients} | {rate} | {result.DeliveredPerSecond:N0} | {result.DeliveredShare:P1} | {result.P50:F1} | {result.P99:F1} | {result.PeakRssMb:F0} | {result.ServerCpuSeconds:F1} |");
        await WriteAsync("PushFanout-report-github.md", report.ToString());
    }

    private void Header(StringBuilder report, string cpuOf, string warmup = "a 3 s warm-up")
    {
        report.AppendLine($"Load: wrk 4.1 (a second process), 1 thread, {Connections} connections, {seconds} s after {warmup}, HTTP/1.1 keep-alive on 127.0.0.1. " +
            $"Backend: a minimal Kestrel endpoint returning 1 KB. Machine: {Environment.ProcessorCount} cores shared with the load generator; .NET {Environment.Version}. " +
            $"CPU per request is the user+system time of {cpuOf} divided by the requests completed. Measured {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC.");
        report.AppendLine();
    }

    private static string[] Row(string name, LoadResult result, LoadResult baseline) =>
    [
        name,
        result.RequestsPerSecond.ToString("N0", CultureInfo.InvariantCulture),
        (result.RequestsPerSecond / baseline.RequestsPerSecond).ToString("F2", CultureInfo.InvariantCulture),
        result.P50.ToString("F2", CultureInfo.InvariantCulture),
        result.P90.ToString("F2", CultureInfo.InvariantCulture),
        result.P99.ToString("F2", CultureInfo.InvariantCulture),
        result.CpuMicrosPerRequest.ToString("F1", CultureInfo.InvariantCulture),
        result.NonSuccess.ToString(CultureInfo.InvariantCulture),
    ];

    private async Task<List<LoadResult>?> NginxAsync(int backendPort)
    {
        if (!File.Exists("/usr/sbin/nginx"))
        {
            Console.WriteLine("nginx is not installed (apt-get install -y nginx); its row is left out.");
            return null;
        }

        var port = Port();
        var dir = Directory.CreateTempSubdirectory("gateway-nginx-").FullName;
        var conf = Path.Combine(dir, "nginx.conf");
        await File.WriteAllTextAsync(conf, $$"""
            user root;
            daemon off;
            worker_processes {{Environment.ProcessorCount}};
            pid {{dir}}/nginx.pid;
            error_log {{dir}}/error.log;
            events { worker_connections 4096; }
            http {
              access_log off;
              client_body_temp_path {{dir}}/body;
              proxy_temp_path {{dir}}/proxy;
              fastcgi_temp_path {{dir}}/fastcgi;
              uwsgi_temp_path {{dir}}/uwsgi;
              scgi_temp_path {{dir}}/scgi;
              upstream backend { server 127.0.0.1:{{backendPort}}; keepalive 64; }
              server {
                listen 127.0.0.1:{{port}};
                location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; }
              }
            }
            """);
        var master = Process.Start(new ProcessStartInfo("/usr/sbin/nginx", ["-c", conf, "-p", dir]) { UseShellExecute = false })!;
        _children.Add(master);
        await WaitForPortAsync(port);
        var results = new List<LoadResult>();
        for (var i = 0; i < Math.Min(3, rounds); i++)
        {
            results.Add(await LoadAsync($"http://127.0.0.1:{port}/", [master], warmup: i == 0, includeChildren: true));
        }

        Stop(master);
        return results;
    }

    private async Task<LoadResult> LoadAsync(string url, IReadOnlyList<Process> measured, bool warmup = true, string? script = null, bool includeChildren = false)
    {
        if (warmup)
        {
            await WrkAsync(url, Math.Min(3, seconds), script);
        }

        var before = Cpu(measured, includeChildren);
        var text = await WrkAsync(url, seconds, script);
        var cpu = Cpu(measured, includeChildren) - before;
        var result = Parse(text);
        result = result with { CpuMicrosPerRequest = cpu.TotalMicroseconds / Math.Max(1, result.Requests) };
        Console.WriteLine($"{url}: {result.RequestsPerSecond:N0} req/s, p99 {result.P99:F2} ms, {result.CpuMicrosPerRequest:F1} µs CPU/request, non-2xx {result.NonSuccess}");
        return result;
    }

    /// <summary>
    /// User+system CPU time of <paramref name="processes"/> and, with <paramref name="includeChildren"/>, of all their
    /// descendants (nginx's workers, which do its work while the master only waits). A process's own figure does not include
    /// children that are still running, and the workers were not found by process name (nginx rewrites its process title to
    /// "nginx: worker process"), which left the nginx row at 0.0: the descendants are found by parent pid in /proc instead.
    /// </summary>
    private static TimeSpan Cpu(IReadOnlyList<Process> processes, bool includeChildren)
    {
        var total = TimeSpan.Zero;
        foreach (var process in processes)
        {
            process.Refresh();
            total += process.TotalProcessorTime;
            if (includeChildren)
            {
                foreach (var pid in Descendants(process.Id))
                {
                    total += CpuOf(pid);
                }
            }
        }

        return total;
    }

    /// <summary>The pids of every process below <paramref name="root"/>, from the parent pid in each /proc/&lt;pid&gt;/stat (none where there is no /proc).</summary>
    private static List<int> Descendants(int root)
    {
        var children = new Dictionary<int, List<int>>();
        if (!Directory.Exists("/proc"))
        {
            return [];
        }

        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && ParentOf(pid) is { } parent)
            {
                (children.TryGetValue(parent, out var list) ? list : children[parent] = []).Add(pid);
            }
        }

        var found = new List<int>();
        var pending = new Queue<int>([root]);
        while (pending.TryDequeue(out var pid))
        {
            foreach (var child in children.GetValueOrDefault(pid) ?? [])
            {
                found.Add(child);
                pending.Enqueue(child);
            }
        }

        return found;
    }

    /// <summary>The parent pid of <paramref name="pid"/>, or null when it has exited meanwhile.</summary>
    private static int? ParentOf(int pid)
    {
        try
        {
            // Fields after the command name, which is in parentheses and may hold spaces: state, then the parent pid.
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(fields[1], CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static TimeSpan CpuOf(int pid)
    {
        try
        {
            using var process = Process.GetProcessById(pid);
            return process.TotalProcessorTime;
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or IOException)
        {
            // Exited between the scan and the read: its time is lost, as for any process that ends during a measurement.
            return TimeSpan.Zero;
        }
    }

    private static async Task<string> WrkAsync(string url, int duration, string? script)
    {
        var arguments = new List<string> { "-t1", $"-c{Connections}", $"-d{duration}s", "--latency", "--timeout", "5s" };
        if (script is not null)
        {
            arguments.AddRange(["-s", script]);
        }

        arguments.Add(url);
        using var wrk = Process.Start(new ProcessStartInfo("wrk", arguments) { RedirectStandardOutput = true, UseShellExecute = false })!;
        var text = await wrk.StandardOutput.ReadToEndAsync();
        await wrk.WaitForExitAsync();
        return text;
    }

    private static LoadResult Parse(string text)
    {
        double Latency(string percentile)
        {
            var match = Regex.Match(text, $@"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", RegexOptions.Multiline);
            if (!match.Success)
            {
                return double.NaN;
            }

            var value = double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
            return match.Groups[2].Value switch { "us" => value / 1000, "s" => value * 1000, _ => value };
        }

        var requests = long.Parse(RequestsRegex().Match(text).Groups[1].Value, CultureInfo.InvariantCulture);
        var rps = double.Parse(RpsRegex().Match(text).Groups[1].Value, CultureInfo.InvariantCulture);
        var non2xx = NonSuccessRegex().Match(text) is { Success: true } m ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
        var errors = SocketErrorsRegex().Match(text) is { Success: true } e
            ? e.Groups.Values.Skip(1).Sum(g => long.Parse(g.Value, CultureInfo.InvariantCulture))
            : 0;
        return new LoadResult(rps, requests, Latency("50"), Latency("90"), Latency("99"), non2xx + errors, 0);
    }

    private async Task<long> HitsAsync(int[] ports)
    {
        using var client = new HttpClient();
        long total = 0;
        foreach (var port in ports)
        {
            total += long.Parse(await client.GetStringAsync($"http://127.0.0.1:{port}/stats"), CultureInfo.InvariantCulture);
        }

        return total;
    }

    private async Task<Process> StartAsync(int port, params string[] arguments)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!, arguments) { UseShellExecute = false };
        start.Environment["DOTNET_gcServer"] = "1";
        var process = Process.Start(start)!;
        _children.Add(process);
        await WaitForPortAsync(port);
        return process;
    }

    private static async Task WaitForPortAsync(int port)
    {
        for (var i = 0; i < 300; i++)
        {
            try
            {
                using var client = new TcpClient();
                await client.ConnectAsync("127.0.0.1", port);
                return;
            }
            catch (SocketException)
            {
                await Task.Delay(100);
            }
        }

        throw new TimeoutException($"Nothing listens on port {port} after 30 s.");
    }

    private int Port() => _nextPort++;

    private void Stop(Process process)
    {
        if (!process.HasExited)
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }

        _children.Remove(process);
    }

    private void StopAll()
    {
        foreach (var process in _children.ToArray())
        {
            Stop(process);
        }
    }

    private async Task WriteAsync(string name, string text)
    {
        var path = Path.Combine(output, name);
        await File.WriteAllTextAsync(path, text);
        Console.WriteLine(text);
    }

    [GeneratedRegex(@"(\d+) requests in")]
    private static partial Regex RequestsRegex();

    [GeneratedRegex(@"Requests/sec:\s+([\d.]+)")]
    private static partial Regex RpsRegex();

    [GeneratedRegex(@"Non-2xx or 3xx responses: (\d+)")]
    private static partial Regex NonSuccessRegex();

    [GeneratedRegex(@"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")]
    private static partial Regex SocketErrorsRegex();
}

internal sealed record LoadResult(double RequestsPerSecond, long Requests, double P50, double P90, double P99, long NonSuccess, double CpuMicrosPerRequest);
