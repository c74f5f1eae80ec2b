using BenchmarkDotNet.Attributes;
using JasperFx.Events.Daemon;
using JasperFx.Events.Projections;
using Marten;
using Marten.Events.Aggregation;

namespace Patterns.Benchmarks;

/// <summary>
/// An async projection catching up over 100,000 events on PostgreSQL: Patterns' document projection (exactly
/// <see cref="ProjectionBenchmarks.Patterns"/> with <c>Store = Postgres</c>) against Marten 9.62.0's async daemon
/// rebuilding a single-stream projection of the same fold over the same log shape (100,000 deposits over 1,000 account
/// streams, written 10 events per append, the accounts round-robin, 16 appends in flight). One operation is one event
/// projected.
/// </summary>
/// <remarks>
/// Marten: quick append mode, string stream keys, <c>SingleStreamProjection</c> registered
/// <c>ProjectionLifecycle.Async</c>, and one invocation is <c>IProjectionDaemon.RebuildProjectionAsync</c> (Marten's way
/// to run a projection from the start: it clears the documents and the progress, then catches up to the high-water
/// mark). Patterns: the projection is rebuilt (not timed) and the timed part starts it and waits for the head. Both
/// commit documents and progress together per page; both run on the same server with its default durability.
/// </remarks>
[Config(typeof(ProjectionBenchmarkConfig))]
public class PostgresCatchUpBenchmarks
{
    private readonly ProjectionBenchmarks _patterns = new() { Store = StoreKind.Postgres };
    private string _schema = "";
    private DocumentStore? _marten;
    private IProjectionDaemon? _daemon;

    [GlobalSetup(Target = nameof(MartenAsyncDaemon))]
    public async Task SetupMarten()
    {
        var connectionString = Environment.GetEnvironmentVariable("PATTERNS_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=postgres;Password=postgres;Database=patterns_tests";
        _schema = "bench_marten_" + Guid.NewGuid().ToString("N")[..8];
        _marten = MartenBench.CreateStore(connectionString, _schema, o => o.Projections.Add<MartenBalanceProjection>(ProjectionLifecycle.Async));
        await _marten.Storage.ApplyAllConfiguredChangesToDatabaseAsync();

        var appends = ProjectionBenchmarks.Events / ProjectionBenchmarks.EventsPerAppend;
        await Parallel.ForEachAsync(
            Enumerable.Range(0, appends),
            new ParallelOptions { MaxDegreeOfParallelism = ProjectionBenchmarks.ConcurrentAppends },
            async (i, cancellationToken) =>
            {
                var account = i % ProjectionBenchmarks.Accounts;
                var events = new object[ProjectionBenchmarks.EventsPerAppend];
                for (var e = 0; e < events.Length; e++)
                {
                    events[e] = new MartenDeposited(account, 1 + ((i + e) % 100));
                }

                await using var session = _marten.LightweightSession();
                session.Events.Append(StreamOf(account), events);
                await session.SaveChangesAsync(cancellationToken);
            });
        _daemon = await _marten.BuildProjectionDaemonAsync();
    }

    [GlobalCleanup(Target = nameof(MartenAsyncDaemon))]
    public async Task CleanupMarten()
    {
        if (_daemon is not null)
        {
            await _daemon.StopAllAsync();
        }

        if (_marten is not null)
        {
            await using (var connection = _marten.Storage.Database.CreateConnection())
            {
                await connection.OpenAsync();
                await using var drop = connection.CreateCommand();
                drop.CommandText = $"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE";
                await drop.ExecuteNonQueryAsync();
            }

            _marten.Dispose();
        }
    }

    [IterationCleanup(Target = nameof(MartenAsyncDaemon))]
    public void CheckMarten()
    {
        using var session = _marten!.QuerySession();
        var balance = session.LoadAsync<MartenBalance>(StreamOf(0)).GetAwaiter().GetResult();
        var expected = ProjectionBenchmarks.Events / ProjectionBenchmarks.Accounts;
        if (balance?.Deposits != expected)
        {
            throw new InvalidOperationException($"Marten's account 0 has {balance?.Deposits} deposits after the rebuild; expected {expected}.");
        }
    }

    [GlobalSetup(Target = nameof(Patterns))]
    public Task SetupPatterns() => _patterns.SetupPatterns();

    [GlobalCleanup(Target = nameof(Patterns))]
    public Task CleanupPatterns() => _patterns.Cleanup();

    [IterationSetup(Target = nameof(Patterns))]
    public void ResetPatterns() => _patterns.ResetPatterns();

    [IterationCleanup(Target = nameof(Patterns))]
    public void CheckPatterns() => _patterns.CheckPatterns();

    /// <summary>The baseline: Marten's async daemon rebuilding the projection over the whole log.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = ProjectionBenchmarks.Events)]
    public Task MartenAsyncDaemon() => _daemon!.RebuildProjectionAsync<MartenBalanceProjection>(CancellationToken.None);

    /// <summary>Patterns' async document projection catching up from 0 to the head.</summary>
    [Benchmark(OperationsPerInvoke = ProjectionBenchmarks.Events)]
    public Task Patterns() => _patterns.Patterns();

    private static string StreamOf(int account) => "account-" + account.ToString("D4", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>The event Marten's projection folds: a deposit.</summary>
public sealed record MartenDeposited(int Account, long Amount);

/// <summary>Marten's read model: one document per account stream.</summary>
public sealed class MartenBalance
{
    public string Id { get; set; } = string.Empty;

    public long Total { get; set; }

    public int Deposits { get; set; }
}

/// <summary>The same fold as <see cref="AccountBalance.Apply"/>, as a Marten single-stream projection.</summary>
public sealed class MartenBalanceProjection : SingleStreamProjection<MartenBalance, string>
{
    public static MartenBalance Create(MartenDeposited deposited) => new() { Total = deposited.Amount, Deposits = 1 };

    public static void Apply(MartenDeposited deposited, MartenBalance current)
    {
        current.Total += deposited.Amount;
        current.Deposits++;
    }
}
