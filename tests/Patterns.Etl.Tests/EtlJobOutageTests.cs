using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Patterns.EventSourcing;
using Patterns.InMemory;
using Patterns.Messaging;
using Patterns.Queues;

namespace Patterns.Etl.Tests;

/// <summary>
/// A job whose runs keep failing on an outage no message caused (a dimension that is down) is degraded, and, past its
/// <see cref="EtlJobOptions.MaxOutageDuration"/>, stops with a logged error and an unhealthy health check instead of
/// trying for ever.
/// </summary>
public sealed class EtlJobOutageTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task OnDemandRuns_FailingOnAnOutagePastMaxOutageDuration_StopTheJobUnhealthy_UntilARunSucceeds()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var start = time.GetUtcNow();
        var dimension = new Dimension();
        var logs = new LogCapture();
        using var host = Build(time, logs, o => o.MaxOutageDuration = TimeSpan.FromMinutes(10), dimension);
        var jobs = host.Services.GetRequiredService<IEtlJobs>();
        var health = host.Services.GetRequiredService<EtlJobsHealthCheck>();

        (await CheckAsync(health)).Status.Should().Be(HealthStatus.Healthy);
        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>();
        var degraded = await CheckAsync(health);
        degraded.Status.Should().Be(HealthStatus.Degraded, "the job fails on an outage, within its limit");
        degraded.Description.Should().Contain("ETL job 'enrich' failing on an outage no message caused since 2026-01-01T00:00:00").And.Contain("TimeoutException: the dimension did not answer");

        time.Advance(TimeSpan.FromMinutes(9));
        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>("9 minutes are within the limit");
        (await CheckAsync(health)).Status.Should().Be(HealthStatus.Degraded);

        time.Advance(TimeSpan.FromMinutes(1));
        var stopped = (await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<EtlOutageLimitExceededException>()).Which;
        stopped.Job.Should().Be("enrich");
        stopped.Since.Should().Be(start);
        stopped.InnerException.Should().BeOfType<TimeoutException>();
        stopped.Message.Should().Be("ETL job 'enrich' stopped: its runs have failed on an outage no message caused since 2026-01-01T00:00:00.0000000+00:00, longer than MaxOutageDuration (00:10:00); the next run reads its source again from its last committed bookmark. Last error: TimeoutException: the dimension did not answer");
        var unhealthy = await CheckAsync(health);
        unhealthy.Status.Should().Be(HealthStatus.Unhealthy);
        unhealthy.Description.Should().Be(stopped.Message);
        unhealthy.Data["enrich"].Should().Be("Unhealthy: " + stopped.Message);
        logs.Records.Should().ContainSingle(r => r.Level == LogLevel.Error && r.EventId == 12)
            .Which.Message.Should().Contain("ETL job 'enrich' stopped").And.Contain("the next run reads its source again from its last committed bookmark").And.NotContain("queue", "the job reads an in-memory list, not a queue");
        logs.Records.Count(r => r.Level == LogLevel.Warning && r.EventId == 11).Should().Be(2, "each outage run before the limit is logged as a warning");

        // The dimension is back: a run on demand succeeds, and the job is healthy again.
        dimension.Up = true;
        (await jobs.RunAsync("enrich")).RowsLoaded.Should().Be(3);
        (await CheckAsync(health)).Status.Should().Be(HealthStatus.Healthy);
    }

    [Fact]
    public async Task AnOutageRun_IsLoggedOnceAsAWarning_NotAsAnError_UntilTheLimitStopsTheJob()
    {
        // Each run failing on the outage is one warning (the job's, event 11); the pipeline notes it as information (event
        // 13), so an alert on errors fires only when the job stops (event 12). Before, the pipeline also logged each such
        // run as an error (event 3): the alert fired every interval. A failure of the run's own is still an error.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var logs = new LogCapture();
        using var host = Build(time, logs, o => o.MaxOutageDuration = TimeSpan.FromMinutes(10), new Dimension());
        var jobs = host.Services.GetRequiredService<IEtlJobs>();

        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>();
        time.Advance(TimeSpan.FromMinutes(5));
        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>();

        logs.Records.Where(r => r.Level >= LogLevel.Error).Should().BeEmpty("an outage within the limit is no error");
        logs.Records.Where(r => r.Level == LogLevel.Warning).Select(r => r.EventId).Should().Equal([11, 11], "one warning per outage run");
        logs.Records.Count(r => r.Level == LogLevel.Information && r.EventId == 13).Should().Be(2);

        time.Advance(TimeSpan.FromMinutes(5));
        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<EtlOutageLimitExceededException>();
        logs.Records.Where(r => r.Level >= LogLevel.Error).Select(r => r.EventId).Should().Equal([12], "the stop is the one error");
        logs.Records.Count(r => r.Level == LogLevel.Warning).Should().Be(2, "the stopping run is logged as the stop, not also as a warning");

        var failing = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        var failingLogs = new LogCapture();
        failing.Logging.AddProvider(failingLogs);
        failing.AddEtl(etl => etl.AddJob("broken", _ => Etl.From(new[] { 1, 2, 3 })
            .Select<int>(k => k == 2 ? throw new InvalidOperationException("row 2 is broken") : k)
            .To(new DiscardSink())));
        using var failingHost = failing.Build();
        await FluentActions.Awaiting(() => failingHost.Services.GetRequiredService<IEtlJobs>().RunAsync("broken")).Should().ThrowAsync<InvalidOperationException>();
        failingLogs.Records.Should().ContainSingle(r => r.Level == LogLevel.Error && r.EventId == 3, "a run's own failure is an error");
        failingLogs.Records.Should().NotContain(r => r.EventId == 11 || r.EventId == 13);
    }

    [Fact]
    public async Task AQueueJobsOutage_SaysItsMessagesStayOnTheQueue()
    {
        // The job's messages are worded by its source: a queue's stay on the queue (the other tests' list source is read
        // again from its bookmark). MaxOutageDuration of one tick: the second outage run passes it (system clock).
        var queue = "outage-words-" + Guid.NewGuid().ToString("N");
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        var logs = new LogCapture();
        builder.Logging.AddProvider(logs);
        builder.AddPatterns(p => p.UseInMemory());
        builder.AddMessageQueue(q => q.AddQueue(queue));
        var dimension = new Dimension();
        builder.AddEtl(etl => etl.AddJob(
            "enrich-queue",
            sp => EtlTransport.FromQueue<TransportSourceTests.Reading>(sp, queue, maxDeliveries: 1)
                .Lookup(EtlLookup.Uncached<int, int>(dimension.FindAsync), r => r.Id, (r, v) => r with { Value = v })
                .To(new ListSink<TransportSourceTests.Reading>(), "enrich-queue"),
            o => o.MaxOutageDuration = TimeSpan.FromTicks(1)));
        using var host = builder.Build();
        await host.StartAsync();
        await host.Services.GetRequiredService<IQueueSender>().SendAsync(queue, new TransportSourceTests.Reading(1, 0));
        var jobs = host.Services.GetRequiredService<IEtlJobs>();

        await FluentActions.Awaiting(() => jobs.RunAsync("enrich-queue").WaitAsync(Wait)).Should().ThrowAsync<TimeoutException>();
        var stopped = (await FluentActions.Awaiting(() => jobs.RunAsync("enrich-queue").WaitAsync(Wait)).Should().ThrowAsync<EtlOutageLimitExceededException>()).Which;

        logs.Records.Should().ContainSingle(r => r.EventId == 11).Which.Message.Should().Contain("its messages stay on the queue (none counts a delivery or is dead-lettered)");
        stopped.Message.Should().Contain("its messages stay on the queue").And.NotContain("bookmark");
        logs.Records.Should().ContainSingle(r => r.EventId == 12).Which.Message.Should().Contain("its messages stay on the queue");
        (await host.Services.GetRequiredService<IDeadLetterQueue>().PeekAsync(queue)).Should().BeEmpty();
        await host.StopAsync();
    }

    [Fact]
    public async Task ARunThatEndsWithoutAnOutage_EndsTheSeries_SoTheLimitCountsFromTheNextOutage()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var dimension = new Dimension();
        using var host = Build(time, new LogCapture(), o => o.MaxOutageDuration = TimeSpan.FromMinutes(10), dimension);
        var jobs = host.Services.GetRequiredService<IEtlJobs>();

        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>();
        time.Advance(TimeSpan.FromMinutes(8));
        dimension.Up = true;
        await jobs.RunAsync("enrich");
        dimension.Up = false;
        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>();
        time.Advance(TimeSpan.FromMinutes(8));

        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>("the outage began again 8 minutes ago, not 16");
        (await CheckAsync(host.Services.GetRequiredService<EtlJobsHealthCheck>())).Status.Should().Be(HealthStatus.Degraded);
    }

    [Fact]
    public async Task AScheduledJob_StoppedByItsOutageLimit_RunsNoMoreUntilARunOnDemandSucceeds_ThenItsScheduleResumes()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var dimension = new Dimension();
        var logs = new LogCapture();
        using var host = Build(time, logs, o =>
        {
            o.Interval = TimeSpan.FromMinutes(1);
            o.RunOnStart = true;
            o.MaxOutageDuration = TimeSpan.FromMinutes(2);
        }, dimension);
        var jobs = host.Services.GetRequiredService<EtlJobs>();
        var waiting = jobs.NextWaitAsync();
        await host.StartAsync();

        // Runs at 0 and 1 minute fail on the outage, each followed by the wait for the next; the run at 2 minutes stops the job.
        for (var minute = 0; minute < 2; minute++)
        {
            await waiting.WaitAsync(Wait);
            waiting = jobs.NextWaitAsync();
            time.Advance(TimeSpan.FromMinutes(1));
        }

        await logs.Stopped.WaitAsync(Wait);
        (await CheckAsync(host.Services.GetRequiredService<EtlJobsHealthCheck>())).Status.Should().Be(HealthStatus.Unhealthy);
        dimension.Finds.Should().Be(3);

        // Stopped: the schedule waits for its next time as ever; when it comes, the job does not run.
        await waiting.WaitAsync(Wait);
        var parked = jobs.NextParkAsync();
        time.Advance(TimeSpan.FromMinutes(30));
        await parked.WaitAsync(Wait);
        dimension.Finds.Should().Be(3, "a stopped job's schedule waits");

        // The dimension is back; an operator runs the job once. The schedule resumes: the next run comes an interval later.
        dimension.Up = true;
        waiting = jobs.NextWaitAsync();
        await host.Services.GetRequiredService<IEtlJobs>().RunAsync("enrich");
        await waiting.WaitAsync(Wait);
        var loads = dimension.Finds;
        time.Advance(TimeSpan.FromMinutes(1));
        await dimension.FoundAfterAsync(loads).WaitAsync(Wait);
        (await CheckAsync(host.Services.GetRequiredService<EtlJobsHealthCheck>())).Status.Should().Be(HealthStatus.Healthy);
        await host.StopAsync();
    }

    [Fact]
    public async Task AScheduledJob_StoppedByARunOnDemand_RunsNoMoreOnItsSchedule_UntilARunOnDemandSucceeds()
    {
        // The limit is passed by runs on demand while the schedule waits for its next time: the job is stopped all the
        // same, so when that time comes the schedule does not run it. Before, the schedule ran it once more.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var dimension = new Dimension();
        using var host = Build(time, new LogCapture(), o =>
        {
            o.Interval = TimeSpan.FromMinutes(60);
            o.MaxOutageDuration = TimeSpan.FromMinutes(2);
        }, dimension);
        var jobs = host.Services.GetRequiredService<EtlJobs>();
        var waiting = jobs.NextWaitAsync();
        await host.StartAsync();
        await waiting.WaitAsync(Wait);

        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<TimeoutException>();
        time.Advance(TimeSpan.FromMinutes(2));
        await FluentActions.Awaiting(() => jobs.RunAsync("enrich")).Should().ThrowAsync<EtlOutageLimitExceededException>();
        var finds = dimension.Finds;

        // The schedule's time comes while the job is stopped: it does not run, but waits for a run on demand to succeed.
        var parked = jobs.NextParkAsync();
        time.Advance(TimeSpan.FromMinutes(60));
        await parked.WaitAsync(Wait);
        dimension.Finds.Should().Be(finds, "a stopped job's schedule waits");

        // A run on demand succeeds: the schedule resumes an interval later.
        dimension.Up = true;
        waiting = jobs.NextWaitAsync();
        await jobs.RunAsync("enrich");
        await waiting.WaitAsync(Wait);
        var loads = dimension.Finds;
        time.Advance(TimeSpan.FromMinutes(60));
        await dimension.FoundAfterAsync(loads).WaitAsync(Wait);
        await host.StopAsync();
    }

    [Fact]
    public async Task ALockedSqliteDimension_IsAnOutage_WithTheSqliteStoresClassifier_AndWithoutIt()
    {
        // UseSqlite registers SQLite's error classifier; an AddEtl job hands it to its runs, so SQLITE_BUSY from the
        // dimension is an outage (the job is degraded). Without the store, the lookup's fallback still knows SQLite's
        // busy code: the same failure is an outage there too.
        using var dir = new TempDir();
        var dimension = SqliteDimension.Create(dir);
        foreach (var withStore in new[] { true, false })
        {
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
            if (withStore)
            {
                builder.AddEventSourcing(es => es.UseSqlite(dir.Sqlite("events.db")));
            }

            builder.AddEtl(etl => etl.AddJob("enrich", _ => Etl.From(new[] { 1, 2, 3 })
                .Lookup(SqliteDimension.Lookup("none", dimension), k => k, (k, v) => k + (int)v)
                .To(new DiscardSink())));
            using var host = builder.Build();
            using (SqliteDimension.Lock(dimension))
            {
                await FluentActions.Awaiting(() => host.Services.GetRequiredService<IEtlJobs>().RunAsync("enrich")).Should().ThrowAsync<SqliteException>();
            }

            (await CheckAsync(host.Services.GetRequiredService<EtlJobsHealthCheck>())).Status.Should().Be(HealthStatus.Degraded, withStore ? "the store's classifier knows SQLITE_BUSY" : "the fallback knows SQLITE_BUSY");
        }
    }

    [Fact]
    public void MaxOutageDuration_MustBePositive()
    {
        var act = () => new ServiceCollection().AddEtl(etl => etl.AddJob("bad", _ => null!, o => o.MaxOutageDuration = TimeSpan.Zero));

        act.Should().Throw<ArgumentException>().WithMessage("*ETL job 'bad': MaxOutageDuration must be positive (was 00:00:00).*");
    }

    private static IHost Build(FakeTimeProvider time, LogCapture logs, Action<EtlJobOptions> configure, Dimension dimension)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = "Testing" });
        builder.Services.AddSingleton<TimeProvider>(time);
        builder.Logging.AddProvider(logs);
        builder.AddEtl(etl => etl.AddJob("enrich", _ => Etl.From(new[] { 1, 2, 3 })
            .Lookup(EtlLookup.Uncached<int, int>(dimension.FindAsync), k => k, (k, v) => k + v)
            .To(new DiscardSink()), configure));
        return builder.Build();
    }

    private static Task<HealthCheckResult> CheckAsync(EtlJobsHealthCheck check) => check.CheckHealthAsync(new HealthCheckContext());

    /// <summary>A dimension that times out (an outage) until it is up, and counts the keys it was asked.</summary>
    private sealed class Dimension
    {
        private readonly Lock _gate = new();
        private int _finds;
        private TaskCompletionSource _found = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool Up { get; set; }

        public int Finds => Volatile.Read(ref _finds);

        public ValueTask<int> FindAsync(int key, CancellationToken cancellationToken)
        {
            TaskCompletionSource found;
            lock (_gate)
            {
                _finds++;
                found = _found;
                _found = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }

            found.TrySetResult();
            return Up ? new(key * 100) : throw new TimeoutException("the dimension did not answer");
        }

        /// <summary>Completes once the dimension has been asked more than <paramref name="count"/> times.</summary>
        public Task FoundAfterAsync(int count)
        {
            lock (_gate)
            {
                return _finds > count ? Task.CompletedTask : _found.Task;
            }
        }
    }

    private sealed class DiscardSink : EtlSink<int>
    {
        public override string Name => "discard";

        public override ValueTask<EtlSinkWriter<int>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer());

        private sealed class Writer : EtlSinkWriter<int>
        {
            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<int> rows, EtlCommit commit, CancellationToken cancellationToken) => new(new EtlLoadCounts(rows.Length, 0, 0));

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken) => default;
        }
    }

    /// <summary>Keeps what the Patterns.Etl logger writes; <see cref="Stopped"/> completes at the job-stopped error.</summary>
    private sealed class LogCapture : ILoggerProvider, ILogger
    {
        private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly List<(LogLevel Level, int EventId, string Message)> _records = [];

        public Task Stopped => _stopped.Task;

        public IReadOnlyList<(LogLevel Level, int EventId, string Message)> Records
        {
            get
            {
                lock (_records)
                {
                    return [.. _records];
                }
            }
        }

        // The job's logger (Patterns.Etl) and each pipeline's (Patterns.Etl.<job>).
        public ILogger CreateLogger(string categoryName) => categoryName.StartsWith("Patterns.Etl", StringComparison.Ordinal) ? this : Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            lock (_records)
            {
                _records.Add((logLevel, eventId.Id, formatter(state, exception)));
            }

            if (eventId.Id == 12)
            {
                _stopped.TrySetResult();
            }
        }

        public void Dispose()
        {
        }
    }
}
