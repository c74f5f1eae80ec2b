using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Patterns.Orchestration.History;
using Patterns.EventSourcing;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// kill -9 at random points while child processes (Patterns.Orchestration.CrashHost) run 5-activity workflows on SQLite and
/// PostgreSQL. Each child resumes the unfinished instances, then starts one more; it is killed after a random number of
/// activities. Afterwards every instance completed exactly once, ran every step, and the kills caused at most one extra
/// activity execution each. <c>PATTERNS_KILL_ITERATIONS</c> sets the kills per store (default 20), <c>PATTERNS_KILL_SEED</c> replays a run.
/// </summary>
public sealed class WorkflowProcessKillTests : IAsyncLifetime
{
    private static readonly TimeSpan ChildTimeout = TimeSpan.FromSeconds(60);
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "wf-kill-" + Guid.NewGuid().ToString("N"));
    private string? _schema;

    private static int Iterations =>
        int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_ITERATIONS"), CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 20;

    public ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        if (_schema is not null)
        {
            await Postgres.DropAsync(_schema);
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(StoreKind.Sqlite)]
    [InlineData(StoreKind.Postgres)]
    public async Task Kill_FiveActivityWorkflowsAtRandomPoints_NoCompletionLostOrDuplicatedAndAtMostOneExtraActivityPerKill(StoreKind store)
    {
        string target;
        if (store == StoreKind.Postgres)
        {
            target = _schema = await Postgres.NewSchemaAsync();
        }
        else
        {
            target = Path.Combine(_directory, "kill.db");
        }

        var log = Path.Combine(_directory, "activities.log");
        var seed = int.TryParse(Environment.GetEnvironmentVariable("PATTERNS_KILL_SEED"), CultureInfo.InvariantCulture, out var s) ? s : Random.Shared.Next();
        var random = new Random(seed);
        var kills = 0;
        var instances = new List<string>();
        for (var i = 0; i < Iterations; i++)
        {
            // A child killed while it still resumes an earlier instance never starts its own: only a start that
            // became durable (the child printed STARTED) names an instance that must complete.
            var killAfter = random.Next(1, 8);
            if (await RunChildAsync(store, target, log, $"k{i}", killAfter, seed, instances))
            {
                kills++;
            }
        }

        kills.Should().BePositive($"children are killed mid-way (seed {seed})");
        instances.Should().HaveCountGreaterThan(1, $"children live long enough to start their instance (seed {seed})");
        (await RunChildAsync(store, target, log, "final", killAfter: int.MaxValue, seed, instances)).Should().BeFalse($"the last child runs to the end (seed {seed})");

        using var verifier = await OpenAsync(store, target);
        var client = verifier.Services.GetRequiredService<IWorkflowClient>();
        var executions = File.ReadAllLines(log).GroupBy(l => l).ToDictionary(g => g.Key, g => g.Count());
        // A child killed while it still resumed earlier instances never started its own, so the store says which exist.
        var started = await client.ListAsync().ToListAsync();
        started.Select(i => i.InstanceId).Should().Contain("final").And.BeSubsetOf(instances);
        started.Should().OnlyContain(i => i.Status == WorkflowStatus.Completed, $"no instance is left unfinished (seed {seed})");
        executions.Keys.Select(k => k.Split('|')[0]).Distinct().Should().BeSubsetOf(started.Select(i => i.InstanceId), "no activity ran for an instance that was never started");
        var extra = 0;
        foreach (var id in started.Select(i => i.InstanceId))
        {
            (await client.GetResultAsync<int>(id)).Should().Be(15);
            var history = (await client.GetHistoryAsync(id)).Events;
            history.Count(e => e.Kind == HistoryEventKind.Completed).Should().Be(1, $"instance {id} completes once (seed {seed})");
            history.Where(e => e.Kind == HistoryEventKind.ActivityScheduled).Select(e => e.Seq).Should().Equal([1, 2, 3, 4, 5], $"seed {seed}");
            history.Where(e => e.Kind == HistoryEventKind.ActivityCompleted).Select(e => e.Seq).Should().Equal([1, 2, 3, 4, 5], $"seed {seed}");
            for (var step = 1; step <= 5; step++)
            {
                var count = executions.GetValueOrDefault($"{id}|{step}");
                count.Should().BeGreaterThanOrEqualTo(1, $"step {step} of {id} ran (seed {seed})");
                extra += count - 1;
            }
        }

        extra.Should().BeLessThanOrEqualTo(kills, $"each of the {kills} kills re-runs at most the one activity in flight (seed {seed})");
    }

    /// <summary>Runs a child until it prints DONE (returns false) or until <paramref name="killAfter"/> activities, then kills it (true); adds its instance to <paramref name="started"/> once its start is durable.</summary>
    private static async Task<bool> RunChildAsync(StoreKind store, string target, string log, string instanceId, int killAfter, int seed, List<string> started)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Patterns.Orchestration.CrashHost.dll"));
        start.ArgumentList.Add(store == StoreKind.Sqlite ? "sqlite" : "postgres");
        start.ArgumentList.Add(target);
        start.ArgumentList.Add(log);
        start.ArgumentList.Add(instanceId);
        start.Environment["PATTERNS_POSTGRES"] = Postgres.ConnectionString;
        using var child = Process.Start(start)!;
        var errors = child.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(ChildTimeout);
        var steps = 0;
        try
        {
            while (await child.StandardOutput.ReadLineAsync(timeout.Token) is { } line)
            {
                if (line == "STARTED")
                {
                    started.Add(instanceId);
                }

                if (line == "DONE")
                {
                    await child.WaitForExitAsync(timeout.Token);
                    return false;
                }

                if (line == "STEP" && ++steps >= killAfter)
                {
                    child.Kill();
                    await child.WaitForExitAsync(timeout.Token);
                    return true;
                }
            }
        }
        catch (OperationCanceledException)
        {
            child.Kill();
            throw new TimeoutException($"Child for {instanceId} made no progress within {ChildTimeout} (seed {seed}): {await errors}");
        }

        await child.WaitForExitAsync(timeout.Token);
        throw new InvalidOperationException($"Child for {instanceId} exited with {child.ExitCode} before DONE (seed {seed}): {await errors}");
    }

    private static async Task<IHost> OpenAsync(StoreKind store, string target)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.AddEventSourcing(es =>
        {
            if (store == StoreKind.Sqlite)
            {
                es.UseSqlite($"Data Source={target}");
            }
            else
            {
                es.UsePostgres(o =>
                {
                    o.ConnectionString = Postgres.ConnectionString;
                    o.Schema = target;
                });
            }
        });
        builder.AddOrchestration(o =>
        {
            o.Options.RecoverOnStart = false;
            o.Options.RunActivityWorkers = false;
            o.AddWorkflow<SequenceWorkflow>("FiveSteps");
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }
}
