using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace Patterns.Etl.Tests;

public sealed class EtlJobsTests
{
    [Fact]
    public async Task IntervalJob_RunsEachTimeTheIntervalPasses_OnVirtualTime()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var runs = new SignalSink();
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton<TimeProvider>(time);
        builder.AddEtl(etl => etl.AddJob("hourly", _ => Etl.From(new[] { 1, 2, 3 }).To(runs), o => o.Interval = TimeSpan.FromHours(1)));
        using var host = builder.Build();
        var jobs = host.Services.GetRequiredService<EtlJobs>();
        var waiting = jobs.NextWaitAsync();
        await host.StartAsync();

        for (var expected = 1; expected <= 3; expected++)
        {
            var next = runs.Next();
            await WaitUntilDelayedAsync(host, waiting);
            waiting = jobs.NextWaitAsync();
            time.Advance(TimeSpan.FromHours(1));
            await next.WaitAsync(TimeSpan.FromSeconds(30));
            runs.Completed.Should().Be(expected);
        }

        host.Services.GetRequiredService<IEtlJobs>().LastResult("hourly")!.RowsLoaded.Should().Be(3);
        await host.StopAsync();
    }

    [Fact]
    public async Task CronJob_RunsAtTheNextOccurrence()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var runs = new SignalSink();
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton<TimeProvider>(time);
        builder.AddEtl(etl => etl.AddJob("nightly", _ => Etl.From(new[] { 1 }).To(runs), o => o.Cron = "30 2 * * *"));
        using var host = builder.Build();
        var waiting = host.Services.GetRequiredService<EtlJobs>().NextWaitAsync();
        await host.StartAsync();
        var next = runs.Next();

        await WaitUntilDelayedAsync(host, waiting);
        time.Advance(TimeSpan.FromHours(2));
        runs.Completed.Should().Be(0);
        time.Advance(TimeSpan.FromMinutes(30));
        await next.WaitAsync(TimeSpan.FromSeconds(30));

        runs.Completed.Should().Be(1);
        await host.StopAsync();
    }

    [Fact]
    public async Task OnDemand_AndFromTheCommandLine_RunTheJobOnce()
    {
        var runs = new SignalSink();
        var builder = Host.CreateApplicationBuilder();
        builder.AddEtl(etl => etl.AddJob("manual", _ => Etl.From(new[] { 1, 2 }).To(runs)));
        using var host = builder.Build();

        var result = await host.RunEtlFromCommandLineAsync(["--etl-run", "manual", "--etl-partition", "p1"]);
        var none = await host.RunEtlFromCommandLineAsync(["--other"]);
        var again = await host.Services.GetRequiredService<IEtlJobs>().RunAsync("manual");

        result!.Partition.Should().Be("p1");
        result.RowsLoaded.Should().Be(2);
        none.Should().BeNull();
        again.RowsLoaded.Should().Be(2);
        var unknown = () => host.Services.GetRequiredService<IEtlJobs>().RunAsync("nope");
        (await unknown.Should().ThrowAsync<KeyNotFoundException>()).Which.Message.Should().Be("No ETL job is named 'nope'; the jobs are 'manual'.");
    }

    [Fact]
    public async Task RunAsync_LeavesTheCallersOptionsAndTheJobsOwnUnchanged()
    {
        // The host's clock, logging and classifiers go into a copy. Before, they were written into the caller's options
        // (and, for a run without options, into the job's own).
        EtlRunOptions? jobOptions = null;
        var builder = Host.CreateApplicationBuilder();
        builder.AddEtl(etl => etl.AddJob("manual", _ => Etl.From(new[] { 1, 2 }).To(new ListSink<int>()), o => jobOptions = o.RunOptions));
        using var host = builder.Build();
        var jobs = host.Services.GetRequiredService<IEtlJobs>();
        var mine = new EtlRunOptions { BatchSize = 1 };

        (await jobs.RunAsync("manual", mine)).RowsLoaded.Should().Be(2);
        (await jobs.RunAsync("manual")).RowsLoaded.Should().Be(2);

        foreach (var options in new[] { mine, jobOptions! })
        {
            options.TimeProvider.Should().BeNull();
            options.LoggerFactory.Should().BeNull();
            options.StorageErrorClassifiers.Should().BeNull();
        }

        mine.BatchSize.Should().Be(1);
    }

    [Fact]
    public void AddJob_InvalidSchedule_ListsEveryProblem()
    {
        var services = new ServiceCollection();
        var act = () => services.AddEtl(etl => etl.AddJob("bad", _ => null!, o =>
        {
            o.Cron = "not cron";
            o.Interval = TimeSpan.Zero;
        }));

        act.Should().Throw<ArgumentException>().WithMessage("*Interval must be positive*set Interval or Cron, not both*Cron 'not cron' is not a cron expression*");
    }

    private static Task WaitUntilDelayedAsync(IHost host, Task waiting) => waiting.WaitAsync(TimeSpan.FromSeconds(30));

    private sealed class SignalSink : EtlSink<int>
    {
        private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Completed;

        public override string Name => "signal";

        public Task Next()
        {
            _next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _next.Task;
        }

        public override ValueTask<EtlSinkWriter<int>> OpenAsync(EtlSinkContext context, CancellationToken cancellationToken) => new(new Writer(this));

        private sealed class Writer(SignalSink sink) : EtlSinkWriter<int>
        {
            public override ValueTask<EtlLoadCounts> WriteAsync(ReadOnlyMemory<int> rows, EtlCommit commit, CancellationToken cancellationToken) => new(new EtlLoadCounts(rows.Length, 0, 0));

            public override ValueTask<EtlLoadCounts> CompleteAsync(EtlCommit commit, CancellationToken cancellationToken)
            {
                Interlocked.Increment(ref sink.Completed);
                sink._next.TrySetResult();
                return default;
            }
        }
    }
}
