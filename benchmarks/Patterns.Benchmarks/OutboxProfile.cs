using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Outbox;
using Patterns.PubSub;
using Patterns.Storage;

namespace Patterns.Benchmarks;

/// <summary>
/// Where <see cref="OutboxBenchmarks"/>' time goes: the same operations (16 concurrent writers, 8 operations each per
/// round), measured for wall time, this process's CPU time and the database server's CPU time per operation, in three
/// variants: the append-then-publish baseline, the outbox's commits alone (the relay not started, nothing delivered),
/// and the outbox with its relay delivering every message. Run with
/// <c>dotnet run -c Release --project benchmarks/Patterns.Benchmarks -- outbox-profile [--rounds N]</c>; it writes
/// <c>benchmarks/results/outbox-profile.md</c>. The server's CPU time is read from <c>/proc</c> (every process named
/// <c>postgres</c>), so it needs Linux and a local server; on SQLite the store runs inside this process.
/// </summary>
internal static class OutboxProfile
{
    private const int Handlers = OutboxBenchmarks.Handlers;
    private const int OperationsPerHandler = OutboxBenchmarks.OperationsPerHandler;
    private const int Operations = OutboxBenchmarks.Operations;
    private const string Topic = OutboxBenchmarks.Topic;

    private enum Variant
    {
        AppendThenPublish,
        OutboxCommitsOnly,
        OutboxWithRelay,
    }

    public static async Task<int> RunAsync(string[] args)
    {
        var rounds = args.SkipWhile(a => a != "--rounds").Skip(1).Select(a => int.Parse(a, CultureInfo.InvariantCulture)).FirstOrDefault(100);
        var report = new StringBuilder();
        report.AppendLine("# Outbox profile: where the outbox's time goes").AppendLine()
            .AppendLine(CultureInfo.InvariantCulture, $"Run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} cores, {rounds} rounds of {Operations} operations ({Handlers} writers x {OperationsPerHandler}) per variant after 5 warm-up rounds.")
            .AppendLine("Per operation: wall time, CPU time of this process (the client: Patterns, the driver, the in-memory transport and subscriber), and CPU time of the PostgreSQL server processes.").AppendLine()
            .AppendLine("| Store | Variant | Wall / op | Client CPU / op | Server CPU / op | Client + server CPU / op |")
            .AppendLine("| --- | --- | ---: | ---: | ---: | ---: |");
        foreach (var store in new[] { StoreKind.Sqlite, StoreKind.Postgres })
        {
            foreach (var variant in Enum.GetValues<Variant>())
            {
                var (wall, client, server) = await MeasureAsync(store, variant, rounds);
                var line = string.Create(
                    CultureInfo.InvariantCulture,
                    $"| {store} | {variant} | {wall:F1} µs | {client:F1} µs | {(store == StoreKind.Postgres ? $"{server:F1} µs" : "(in process)")} | {client + server:F1} µs |");
                Console.WriteLine(line);
                report.AppendLine(line);
            }
        }

        var path = Path.Combine(FindResults(), "outbox-profile.md");
        await File.WriteAllTextAsync(path, report.ToString());
        Console.WriteLine($"wrote {path}");
        return 0;
    }

    private static async Task<(double Wall, double Client, double Server)> MeasureAsync(StoreKind kind, Variant variant, int rounds)
    {
        var database = BenchmarkDatabase.Create(kind);
        var arrived = new BatchSignal();
        // For the commits alone, the relay does not run: nothing reads or removes the outbox.
        var services = OutboxBenchmarks.Services(
            database, arrived, variant == Variant.AppendThenPublish ? null : o => o.RunRelay = variant == Variant.OutboxWithRelay);
        var provider = services.BuildServiceProvider();
        try
        {
            await Hosting.StartAsync(provider);
            var store = provider.GetRequiredService<IEventStore>();
            var publisher = provider.GetRequiredService<IPublisher>();
            await provider.GetRequiredService<IEventStorage>().GetHeadPositionAsync();

            async Task RoundAsync()
            {
                var done = variant == Variant.OutboxCommitsOnly ? Task.CompletedTask : arrived.Reset(Operations);
                var handlers = new Task[Handlers];
                for (var h = 0; h < Handlers; h++)
                {
                    var account = h;
                    handlers[h] = Task.Run(async () =>
                    {
                        var stream = OutboxBenchmarks.StreamOf(account);
                        for (var i = 0; i < OperationsPerHandler; i++)
                        {
                            await (variant == Variant.AppendThenPublish
                                ? OutboxBenchmarks.AppendThenPublishOnceAsync(store, publisher, stream, account)
                                : OutboxBenchmarks.OutboxOnceAsync(provider, stream, account));
                        }
                    });
                }

                await Task.WhenAll(handlers);
                await done.WaitAsync(TimeSpan.FromMinutes(2));
            }

            for (var w = 0; w < 5; w++)
            {
                await RoundAsync();
            }

            using var process = Process.GetCurrentProcess();
            var client = process.TotalProcessorTime;
            var server = ServerTicks();
            var clock = Stopwatch.StartNew();
            for (var r = 0; r < rounds; r++)
            {
                await RoundAsync();
            }

            clock.Stop();
            process.Refresh();
            double operations = (double)rounds * Operations;
            return (
                clock.Elapsed.TotalMicroseconds / operations,
                (process.TotalProcessorTime - client).TotalMicroseconds / operations,
                (ServerTicks() - server) * (1_000_000.0 / 100) / operations);
        }
        finally
        {
            await Hosting.StopAndDisposeAsync(provider);
            await database.DropAsync();
        }
    }

    /// <summary>CPU time (user + system, in clock ticks of 1/100 s) of every live process named postgres.</summary>
    private static long ServerTicks()
    {
        long ticks = 0;
        foreach (var directory in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(directory, "comm")).Trim() != "postgres")
                {
                    continue;
                }

                var stat = File.ReadAllText(Path.Combine(directory, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                ticks += long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
            }
            catch (IOException)
            {
                // The process ended while it was read.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return ticks;
    }

    private static string FindResults()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            var results = Path.Combine(directory.FullName, "benchmarks", "results");
            if (Directory.Exists(results))
            {
                return results;
            }
        }

        return Directory.GetCurrentDirectory();
    }
}
