using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;

namespace Patterns.Orchestration.Tests;

/// <summary>
/// Two processes on one SQLite file, which has no notifications: the child (Patterns.Orchestration.CrashHost in serve
/// mode) owns every partition and polls only every hour, and this process's clock never moves. A workflow started here
/// is handed to the child and its result comes back only because each side's store checks the file's version
/// (<c>PRAGMA data_version</c>) and wakes its watch loop when the other committed.
/// </summary>
public sealed class SqliteCrossProcessWakeUpTests : IAsyncLifetime
{
    private static readonly TimeSpan ChildTimeout = TimeSpan.FromSeconds(60);
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "wf-wake-" + Guid.NewGuid().ToString("N"));

    public ValueTask InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
        return ValueTask.CompletedTask;
    }

    [Fact]
    public async Task AWorkflowStartedInOneProcess_IsRunByTheOwnerInAnother_AndItsResultComesBack_WithoutAnyPollInterval()
    {
        var file = Path.Combine(_directory, "wake.db");
        var log = Path.Combine(_directory, "activities.log");
        using var child = StartServingChild(file, log);
        var errors = child.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        try
        {
            using (var ready = new CancellationTokenSource(ChildTimeout))
            {
                while (await child.StandardOutput.ReadLineAsync(ready.Token) is var line && line != "READY")
                {
                    line.Should().NotBeNull($"the child serves before it exits: {await errors}");
                }
            }

            // The fake clock starts at the real time (the child's leases are measured on its real clock) and never moves:
            // this process's poll and hand-off intervals never elapse.
            var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
            await using var here = await TestHost.StartAsync(o => o.AddWorkflow<SequenceWorkflow>("FiveSteps"), StoreKind.Sqlite, file, time);
            here.Runtime.OwnedPartitions.Should().BeEmpty("the child holds every partition");
            var started = time.GetUtcNow();

            await here.Client.StartAsync("FiveSteps", "handed", 5);

            (await here.ResultAsync<int>("handed")).Should().Be(15, "the child ran FiveSteps (1 + 2 + 3 + 4 + 5)");
            here.CommittedEvents.Should().Be(0, "the instance ran in the child only");
            (await File.ReadAllLinesAsync(log, TestContext.Current.CancellationToken)).Should().Equal(
                Enumerable.Range(1, 5).Select(step => $"handed|Step-{step}|1"), "each step ran once, in the child");
            time.GetUtcNow().Should().Be(started, "no interval elapsed here: every wake-up came from the file's version check");
        }
        finally
        {
            child.StandardInput.Close(); // the child stops when its input closes
            using var exit = new CancellationTokenSource(ChildTimeout);
            try
            {
                await child.WaitForExitAsync(exit.Token);
            }
            catch (OperationCanceledException)
            {
                child.Kill();
            }
        }
    }

    private static Process StartServingChild(string file, string log)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Patterns.Orchestration.CrashHost.dll"));
        foreach (var argument in new[] { "sqlite", file, log, "unused", "serve" })
        {
            start.ArgumentList.Add(argument);
        }

        return Process.Start(start)!;
    }
}
