using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using Patterns.Messaging;
using Patterns.PeerLinks;
using Patterns.Transport;

namespace Patterns.Benchmarks.PeerLinks;

/// <summary>
/// The receiving node in a process of its own (the two-process cases): this benchmark assembly started again with
/// <c>--node</c>. It consumes <see cref="ThroughputQueue"/> (acknowledging every message, and telling the sender on
/// <see cref="DoneQueue"/> each time it has handled <see cref="PeerLinkThroughputBenchmarks.Messages"/>) and echoes
/// <see cref="EchoQueue"/> to each message's reply-to. It runs until its standard input closes (the parent ended).
/// </summary>
internal sealed class ChildNode : IAsyncDisposable
{
    public const string ThroughputQueue = "bench.throughput";
    public const string DoneQueue = "bench.done";
    public const string EchoQueue = "bench.echo";

    private readonly Process _process;

    private ChildNode(Process process) => _process = process;

    /// <summary>Starts the child node listening on <paramref name="listenPort"/> and linked to <paramref name="peerPort"/>; returns once it is up and subscribed.</summary>
    public static async Task<ChildNode> StartAsync(int listenPort, int peerPort)
    {
        var assembly = typeof(ChildNode).Assembly.Location;
        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add("--runtimeconfig");
        start.ArgumentList.Add(RuntimeConfig(assembly));
        start.ArgumentList.Add(assembly);
        start.ArgumentList.Add("--node");
        start.ArgumentList.Add(listenPort.ToString(System.Globalization.CultureInfo.InvariantCulture));
        start.ArgumentList.Add(peerPort.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var process = Process.Start(start) ?? throw new InvalidOperationException("The child node did not start.");
        var child = new ChildNode(process);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await process.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
        {
            if (line == "ready")
            {
                return child;
            }
        }

        await child.DisposeAsync();
        throw new InvalidOperationException($"The child node exited (code {(process.HasExited ? process.ExitCode : -1)}) before it was ready.");
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            _process.StandardInput.Close();
            await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception ex) when (ex is TimeoutException or InvalidOperationException or IOException)
        {
            _process.Kill(entireProcessTree: true);
        }

        _process.Dispose();
    }

    /// <summary>The child's body (<c>--node listenPort peerPort</c>).</summary>
    public static async Task RunAsync(int listenPort, int peerPort)
    {
        await using var node = await PeerLinksTransport.StartAsync(Pair.Options(1, [peerPort, listenPort], mutualTls: false));
        var handled = 0;
        await node.SubscribeAsync(
            new SubscriptionRequest { Address = TransportAddress.Queue(ThroughputQueue), ConsumerGroup = ThroughputQueue, Concurrency = 256 },
            async (_, cancellationToken) =>
            {
                if (Interlocked.Increment(ref handled) % PeerLinkThroughputBenchmarks.Messages == 0)
                {
                    await node.SendAsync(DoneQueue, new Envelope { MessageId = Guid.NewGuid(), MessageType = "done", Payload = new byte[1] }, cancellationToken);
                }

                return Settlement.Ack;
            });
        await PeerLinkLatencyBenchmarks.SubscribeEchoAsync(node);
        await node.Membership.WaitForAllUpAsync();
        Console.WriteLine("ready");
        await Console.In.ReadToEndAsync();
    }

    private static string DotnetHost()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host))
        {
            return host;
        }

        if (Environment.ProcessPath is { } path && Path.GetFileNameWithoutExtension(path) == "dotnet")
        {
            return path;
        }

        // <root>/shared/Microsoft.NETCore.App/<version>/ -> <root>/dotnet
        var root = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", ".."));
        return Path.Combine(root, OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet");
    }

    /// <summary>This assembly's runtime configuration, or the entry assembly's (BenchmarkDotNet runs a generated host next to it).</summary>
    private static string RuntimeConfig(string assembly)
    {
        var own = Path.ChangeExtension(assembly, ".runtimeconfig.json");
        if (File.Exists(own))
        {
            return own;
        }

        var entry = Path.Combine(AppContext.BaseDirectory, $"{Assembly.GetEntryAssembly()?.GetName().Name}.runtimeconfig.json");
        if (File.Exists(entry))
        {
            return entry;
        }

        return Directory.EnumerateFiles(AppContext.BaseDirectory, "*.runtimeconfig.json").FirstOrDefault()
            ?? throw new FileNotFoundException("No runtime configuration for the child node next to the benchmark assembly.", own);
    }
}
