using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace Patterns.Benchmarks.Gateway;

/// <summary>Starts servers as child processes, loads them with wrk (a second process), and writes the markdown reports.</summary>
internal sealed partial class Runner(int seconds, string output)
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

    private async Task OverheadAsync()
    {
        var backendPort = Port();
        var backend = await StartAsync(backendPort, "backend", backendPort.ToString(CultureInfo.InvariantCulture));
        var backendUrl = $"http://127.0.0.1:{backendPort}";
        var rows = new List<string[]>();
        var direct = await LoadAsync(backendUrl + "/", [backend]);
        rows.Add(Row("Direct", direct, direct));

        var yarpPort = Port();
        var yarp = await StartAsync(yarpPort, "gateway", yarpPort.ToString(CultureInfo.InvariantCulture), "yarp", $"{backendUrl},{backendUrl}");
        var yarpResult = await LoadAsync($"http://127.0.0.1:{yarpPort}/", [yarp]);
        Stop(yarp);
        rows.Add(Row("Yarp", yarpResult, direct));

        var patternsPort = Port();
        var patterns = await StartAsync(patternsPort, "gateway", patternsPort.ToString(CultureInfo.InvariantCulture), "patterns", $"{backendUrl},{backendUrl}");
        var patternsResult = await LoadAsync($"http://127.0.0.1:{patternsPort}/", [patterns]);
        Stop(patterns);
        rows.Add(Row("Patterns", patternsResult, direct));

        var nginx = await NginxAsync(backendPort);
        if (nginx is not null)
        {
            rows.Add(Row("nginx", nginx, direct));
        }

        Stop(backend);
        var report = new StringBuilder();
        report.AppendLine("# GatewayOverhead");
        report.AppendLine();
        Header(report, "the gateway process (Direct: the backend process)");
        report.AppendLine("| Method | Requests/s | Ratio | p50 ms | p90 ms | p99 ms | CPU µs/request | Non-2xx |");
        report.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var row in rows)
        {
            report.AppendLine("| " + string.Join(" | ", row) + " |");
        }

        report.AppendLine();
        report.AppendLine($"Patterns / Yarp: {patternsResult.RequestsPerSecond / yarpResult.RequestsPerSecond:P1} of the requests/s (target ≥ 95%), " +
            $"{patternsResult.CpuMicrosPerRequest / yarpResult.CpuMicrosPerRequest:F2}× the CPU per request (target ≤ 1.10×).");
        await WriteAsync("GatewayOverhead-report-github.md", report.ToString());
    }

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

    private void Header(StringBuilder report, string cpuOf)
    {
        report.AppendLine($"Load: wrk 4.1 (a second process), 1 thread, {Connections} connections, {seconds} s after a 3 s warm-up, HTTP/1.1 keep-alive on 127.0.0.1. " +
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

    private async Task<LoadResult?> NginxAsync(int backendPort)
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
        var result = await LoadAsync($"http://127.0.0.1:{port}/", [master], includeChildren: true);
        Stop(master);
        return result;
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

    private static TimeSpan Cpu(IReadOnlyList<Process> processes, bool includeChildren)
    {
        var total = TimeSpan.Zero;
        foreach (var process in processes)
        {
            process.Refresh();
            total += process.TotalProcessorTime;
            if (includeChildren)
            {
                foreach (var child in Process.GetProcessesByName(process.ProcessName))
                {
                    if (child.Id != process.Id && ParentOf(child.Id) == process.Id)
                    {
                        total += child.TotalProcessorTime;
                    }
                }
            }
        }

        return total;
    }

    private static int ParentOf(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return int.Parse(fields[1], CultureInfo.InvariantCulture);
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
