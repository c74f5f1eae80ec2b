using System.Globalization;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using Microsoft.Extensions.DependencyInjection;
using Patterns.EventSourcing;
using Patterns.Serialization;
using Patterns.Storage;

namespace Patterns.Benchmarks;

/// <summary>
/// An async projection catching up over 100,000 events (<see cref="Events"/>) into documents, on SQLite and on PostgreSQL
/// (<see cref="Store"/>): a fold of deposits into one <see cref="AccountBalance"/> document per account
/// (<see cref="Accounts"/> accounts). One operation is one event projected: <c>OperationsPerInvoke</c> = 100,000.
/// </summary>
/// <remarks>
/// <para>
/// The events are appended once per benchmark, in <c>[GlobalSetup]</c>, into the benchmark's own database (a SQLite
/// file in a fresh temporary directory, or a PostgreSQL schema of its own, dropped at the end): appends of
/// <see cref="EventsPerAppend"/> deposits to one account stream, the accounts taken round-robin, 16 appends at a time,
/// so the log interleaves the accounts and a page of 256 events touches about 26 accounts.
/// </para>
/// <para>
/// <see cref="CommitPerEvent"/> (the baseline) reproduces what async projections did before they committed per page:
/// read the log with <see cref="IEventStorage.ReadAllAsync"/> in pages of 256; for each event deserialize it, read the
/// account's document (<see cref="IDocumentStorage.GetAsync"/>), fold, and write it back with
/// <see cref="IDocumentStorage.UpsertAsync"/> (its own transaction, so one commit per event); save the checkpoint with
/// <see cref="ICheckpointStore.SaveAsync"/> every 100 events and at the end. (The old processor also ran each handler
/// through its retry pipeline and looked the event type up in the registry; those cost nanoseconds next to a commit.)
/// Before each iteration the collection is cleared and the checkpoint set to 0.
/// </para>
/// <para>
/// <see cref="Patterns"/> is the same fold registered with <c>AddDocumentProjection</c> (default options written out:
/// pages of 256, checkpoint at the end of each page; the read-model writes commit with the checkpoint in one unit of work).
/// Before each iteration (<c>[IterationSetup]</c>, not timed) the projection is stopped and rebuilt with
/// <see cref="IEventSubscriptions.RebuildAsync"/> (collection cleared, checkpoint 0); the measured part starts the hosted
/// services (the projection takes its lease and starts from 0) and awaits
/// <see cref="IEventSubscriptions.WaitForPositionAsync"/> of the head. Both methods therefore do the same work on every
/// invocation; <c>[IterationCleanup]</c> checks the resulting documents and checkpoint.
/// </para>
/// <para>
/// Targets: <see cref="Patterns"/> ≥ 10× faster than <see cref="CommitPerEvent"/>, and ≥ 50,000 events/s on SQLite
/// (≤ 20 µs per event). One invocation of the baseline takes minutes (one durable commit per event), so the job is
/// 1 warm-up and 5 measured iterations of one invocation each (<see cref="RunStrategy.Monitoring"/>; see
/// <see cref="ProjectionBenchmarkConfig"/>), unless a job is chosen on the command line (<c>--job dry</c>).
/// </para>
/// <para>
/// For a quick validation only, the environment variable <c>PATTERNS_BENCH_PROJECTION_EVENTS</c> (a multiple of 10)
/// shrinks the number of events appended and projected. <c>OperationsPerInvoke</c> stays 100,000, so the per-event
/// figures of such a run are wrong; real runs must leave it unset.
/// </para>
/// </remarks>
[Config(typeof(ProjectionBenchmarkConfig))]
public class ProjectionBenchmarks
{
    /// <summary>Events projected per invocation (the documented size).</summary>
    public const int Events = 100_000;

    /// <summary>Accounts, so documents.</summary>
    public const int Accounts = 1_000;

    /// <summary>Events per append when the log is written.</summary>
    public const int EventsPerAppend = 10;

    /// <summary>Appends in flight at once when the log is written.</summary>
    public const int ConcurrentAppends = 16;

    /// <summary>Events per read of the log (the processor's default <c>BatchSize</c>).</summary>
    public const int PageSize = 256;

    /// <summary>Events between checkpoints of the baseline (the processors' <c>CheckpointInterval</c> before per-page commits).</summary>
    public const int CheckpointInterval = 100;

    /// <summary>Events between checkpoints of the projection (a projection's default <c>CheckpointInterval</c>: one commit per page).</summary>
    public const int ProjectionCheckpointInterval = 256;

    /// <summary>The environment variable that shrinks <see cref="Events"/> for a dry validation.</summary>
    public const string EventsVariable = "PATTERNS_BENCH_PROJECTION_EVENTS";

    private const string Projection = "balances";
    private const string Collection = "balances";

    private static readonly TimeSpan CatchUpTimeout = TimeSpan.FromMinutes(30);

    private BenchmarkDatabase? _database;
    private ServiceProvider? _services;
    private IEventStorage? _storage;
    private IDocumentStorage? _documents;
    private ICheckpointStore? _checkpoints;
    private IMessageSerializer? _serializer;
    private IEventSubscriptions? _subscriptions;
    private int _events = Events;
    private long _head;

    /// <summary>Gets or sets the store the events, documents and checkpoints live in.</summary>
    [Params(StoreKind.Sqlite, StoreKind.Postgres)]
    public StoreKind Store { get; set; }

    [GlobalSetup(Target = nameof(CommitPerEvent))]
    public Task SetupCommitPerEvent() => SetupAsync(registerProjection: false);

    [GlobalSetup(Target = nameof(Patterns))]
    public Task SetupPatterns() => SetupAsync(registerProjection: true);

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await Hosting.StopAndDisposeAsync(_services);
        if (_database is not null)
        {
            await _database.DropAsync();
        }
    }

    [IterationSetup(Target = nameof(CommitPerEvent))]
    public void ResetCommitPerEvent() => Run(async () =>
    {
        await _documents!.ClearAsync(Collection);
        await _checkpoints!.SaveAsync(Projection, 0);
    });

    [IterationCleanup(Target = nameof(CommitPerEvent))]
    public void CheckCommitPerEvent() => Run(VerifyAsync);

    [IterationSetup(Target = nameof(Patterns))]
    public void ResetPatterns() => Run(() => _subscriptions!.RebuildAsync(Projection));

    [IterationCleanup(Target = nameof(Patterns))]
    public void CheckPatterns() => Run(async () =>
    {
        await Hosting.StopAsync(_services!);
        await VerifyAsync();
    });

    /// <summary>The old way: per event, read the document, fold, upsert it in its own transaction; checkpoint every 100 events.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Events)]
    public async Task<long> CommitPerEvent()
    {
        var storage = _storage!;
        var documents = _documents!;
        var checkpoints = _checkpoints!;
        var serializer = _serializer!;
        var cursor = await checkpoints.LoadAsync(Projection) ?? 0;
        var sinceCheckpoint = 0;
        while (true)
        {
            var read = 0;
            await foreach (var stored in storage.ReadAllAsync(cursor, null, PageSize))
            {
                read++;
                var deposited = (AccountDeposited)serializer.Deserialize(stored.Data, typeof(AccountDeposited));
                var bytes = await documents.GetAsync(Collection, stored.StreamId);
                var current = bytes is null ? null : (AccountBalance)serializer.Deserialize(bytes, typeof(AccountBalance));
                var next = AccountBalance.Apply(current, deposited);
                await documents.UpsertAsync(Collection, stored.StreamId, Serialize(serializer, next));
                cursor = stored.Position;
                if (++sinceCheckpoint >= CheckpointInterval)
                {
                    await checkpoints.SaveAsync(Projection, cursor);
                    sinceCheckpoint = 0;
                }
            }

            if (read < PageSize)
            {
                break;
            }
        }

        if (sinceCheckpoint > 0)
        {
            await checkpoints.SaveAsync(Projection, cursor);
        }

        return cursor;
    }

    /// <summary>The registered async document projection catching up from 0 to the head (writes and checkpoint commit together).</summary>
    [Benchmark(OperationsPerInvoke = Events)]
    public async Task Patterns()
    {
        await Hosting.StartAsync(_services!);
        await _subscriptions!.WaitForPositionAsync(Projection, _head).WaitAsync(CatchUpTimeout);
    }

    private static void Run(Func<Task> action) => action().GetAwaiter().GetResult();

    private static ReadOnlyMemory<byte> Serialize(IMessageSerializer serializer, AccountBalance balance)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(128);
        serializer.Serialize(buffer, balance, typeof(AccountBalance));
        return buffer.WrittenMemory;
    }

    private static string StreamOf(int account) => "account-" + account.ToString("D4", CultureInfo.InvariantCulture);

    private static int EventCount()
    {
        if (Environment.GetEnvironmentVariable(EventsVariable) is not { Length: > 0 } configured)
        {
            return Events;
        }

        if (!int.TryParse(configured, NumberStyles.None, CultureInfo.InvariantCulture, out var count) || count <= 0 || count % EventsPerAppend != 0)
        {
            throw new InvalidOperationException($"{EventsVariable} must be a positive multiple of {EventsPerAppend} (was '{configured}').");
        }

        Console.WriteLine($"// {EventsVariable}={count}: projecting {count} events instead of {Events}; OperationsPerInvoke is still {Events}, so the per-event figures of this run are not valid.");
        return count;
    }

    private async Task SetupAsync(bool registerProjection)
    {
        _events = EventCount();
        var database = _database = BenchmarkDatabase.Create(Store);
        var services = new ServiceCollection();
        services.AddEventSourcing(es =>
        {
            database.Use(es).AddEvent<AccountDeposited>();
            if (registerProjection)
            {
                es.AddDocumentProjection<AccountBalance>(
                    Projection,
                    Collection,
                    e => e.StreamId,
                    (current, e) => e.Data is AccountDeposited deposited ? AccountBalance.Apply(current, deposited) : current,
                    o =>
                    {
                        o.BatchSize = PageSize;
                        o.CheckpointInterval = ProjectionCheckpointInterval;
                    });
            }
        });

        // The hosted services are not started here: the projection starts in the measured part of each invocation.
        _services = services.BuildServiceProvider();
        _storage = _services.GetRequiredService<IEventStorage>();
        _documents = _services.GetRequiredService<IDocumentStorage>();
        _checkpoints = _services.GetRequiredService<ICheckpointStore>();
        _serializer = _services.GetRequiredService<IMessageSerializer>();
        _subscriptions = _services.GetRequiredService<IEventSubscriptions>();

        var store = _services.GetRequiredService<IEventStore>();
        var appends = _events / EventsPerAppend;
        await Parallel.ForEachAsync(
            Enumerable.Range(0, appends),
            new ParallelOptions { MaxDegreeOfParallelism = ConcurrentAppends },
            async (i, cancellationToken) =>
            {
                var account = i % Accounts;
                var events = new EventData[EventsPerAppend];
                for (var e = 0; e < events.Length; e++)
                {
                    events[e] = new EventData(new AccountDeposited(account, 1 + ((i + e) % 100)));
                }

                await store.AppendAsync(StreamOf(account), ExpectedVersion.Any, events, cancellationToken);
            });

        _head = await _storage.GetHeadPositionAsync();
        if (_head != _events)
        {
            throw new InvalidOperationException($"The log holds {_head} events after the setup; expected {_events}.");
        }
    }

    /// <summary>Checks that the invocation folded every event once: account 0's deposit count, and the checkpoint at the head.</summary>
    private async Task VerifyAsync()
    {
        var appendsToFirst = ((_events / EventsPerAppend) + Accounts - 1) / Accounts;
        var expected = appendsToFirst * EventsPerAppend;
        var bytes = await _documents!.GetAsync(Collection, StreamOf(0));
        var balance = bytes is null ? null : (AccountBalance)_serializer!.Deserialize(bytes, typeof(AccountBalance));
        if (balance?.Deposits != expected)
        {
            throw new InvalidOperationException($"Account 0 has {balance?.Deposits.ToString(CultureInfo.InvariantCulture) ?? "no document"} deposits after the catch-up; expected {expected}.");
        }

        var checkpoint = await _checkpoints!.LoadAsync(Projection);
        if (checkpoint != _head)
        {
            throw new InvalidOperationException($"The checkpoint is {checkpoint} after the catch-up; expected the head, {_head}.");
        }
    }
}

/// <summary>
/// The settings of <see cref="BenchmarkConfig"/> with the job <see cref="ProjectionBenchmarks"/> needs (an invocation takes seconds to
/// minutes): <see cref="RunStrategy.Monitoring"/>, 1 launch, 1 warm-up and 5 measured iterations of one invocation each.
/// </summary>
/// <remarks>
/// A job given on the command line (<c>--job dry</c>, <c>--job short</c>) replaces it. A <c>[SimpleJob]</c> attribute
/// would be run in addition to the command line's job, so that <c>--job dry</c> would still run the 6 long iterations.
/// </remarks>
public sealed class ProjectionBenchmarkConfig : ManualConfig
{
    public ProjectionBenchmarkConfig()
    {
        // What BenchmarkConfig sets.
        AddDiagnoser(MemoryDiagnoser.Default);
        AddColumn(RankColumn.Arabic);
        SummaryStyle = SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend);
        if (!Environment.GetCommandLineArgs().Any(static a => a is "--job" or "-j" || a.StartsWith("--job=", StringComparison.Ordinal)))
        {
            AddJob(BenchmarkDotNet.Jobs.Job.Default
                .WithStrategy(RunStrategy.Monitoring)
                .WithLaunchCount(1)
                .WithWarmupCount(1)
                .WithIterationCount(5)
                .WithInvocationCount(1)
                .WithUnrollFactor(1));
        }
    }
}
